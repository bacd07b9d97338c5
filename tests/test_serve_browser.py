"""abcgen serve end to end in a real browser: Debian's chromium driven by Playwright.

Open the page, write a tune, see the staff, play it (the sound is rendered and not silent),
change a note in the text and see the notation change, vary a bar, save the tune, reload,
find it in the library. Skips, saying why, without playwright or chromium (.ci/run installs
both). ABCGEN_SCREENSHOT=PATH saves a screenshot of the page (the README's picture).
"""

import os
import shutil
import socket
import threading
import time

import pytest

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
CHROMIUM = next(
    (
        path
        for path in (os.environ.get("ABCGEN_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"))
        if path
    ),
    None,
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on the PATH (apt-get install chromium)")
XSS_TITLE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    import uvicorn

    from abcgen.sample import load_model
    from abcgen.serve.app import create_app
    from abcgen.serve.library import Library

    library = Library(tmp_path_factory.mktemp("library") / "tunes.sqlite3")
    app = create_app(model=load_model(), library=library, model_name="shipped model")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--mute-audio"])
        yield launched
        launched.close()


def wait_for(page, expression, timeout=90):
    """Poll a JavaScript expression until it is truthy (the page's CSP forbids the eval that
    Playwright's wait_for_function uses)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {expression}")


def note_position(bar: str) -> int:
    """Where the first note letter of a bar is (outside chord symbols and decorations)."""
    quoted = False
    for position, ch in enumerate(bar):
        if ch in '"!':
            quoted = not quoted
        elif not quoted and ch in "ABCDEFGabcdefg":
            return position
    raise AssertionError(f"no note in {bar!r}")


def test_write_hear_edit_vary_keep_in_a_browser(server_url, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems, dialogs = [], []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    outside = []
    page.on(
        "request",
        lambda request: (
            outside.append(request.url) if not request.url.startswith((server_url, "data:", "blob:")) else None
        ),
    )
    page.goto(server_url)
    page.wait_for_selector("body[data-state=ready]")
    abcjs = page.evaluate("typeof window.ABCJS !== 'undefined'")

    # Write: the tune streams into the page, then is engraved
    page.select_option("#meter", "6/8")
    page.fill("#seed", "7")
    page.click("#write")
    wait_for(page, "window.abcgenTimes.playable !== undefined")
    times = page.evaluate("window.abcgenTimes")
    assert times["firstNotes"] < times["finished"]
    abc = page.input_value("#abc")
    assert abc.startswith("X:1") and "M:6/8" in abc
    if not abcjs:  # without npm: server-side engraving only
        wait_for(page, "document.querySelectorAll('#notation img').length > 0")
        pytest.skip("abcjs is not installed (npm ci in abcgen/serve/static): only the server-engraved page was tested")
    assert page.locator("#notation svg .abcjs-staff").count() > 0
    assert page.locator("#notation svg .abcjs-note").count() > 10

    # Hear: the rendered sound has a length and is not silent; the playing note is marked
    page.click("#play")
    audio = wait_for(page, "window.abcgenAudio")
    assert audio["seconds"] > 2 and audio["rms"] > 0.005 and audio["peak"] > 0.05
    wait_for(page, "document.querySelectorAll('#notation .abcjs-note_playing').length > 0", timeout=20)
    page.click("#stop-play")

    # Edit: change a note in the text, and the notation follows
    before = page.inner_html("#notation")
    bars = page.evaluate("page.bars")
    third = bars[2]
    bar_text = abc[third["start"] : third["end"]]
    note = note_position(bar_text)
    changed = bar_text[:note] + ("c" if bar_text[note] != "c" else "d") + bar_text[note + 1 :]
    page.fill("#abc", abc[: third["start"]] + changed + abc[third["end"] :])
    wait_for(page, f"document.querySelector('#notation').innerHTML !== {before!r}", timeout=20)
    assert page.inner_html("#notation") != before

    # Vary: select a bar by clicking a note in it, take the first alternative
    page.locator("#notation svg .abcjs-note").nth(8).click(force=True)
    assert "selected" in page.inner_text("#selection")
    edited = page.input_value("#abc")
    page.click("#vary-bar")
    wait_for(page, "document.querySelectorAll('#candidates .use-candidate').length > 0", timeout=60)
    if os.environ.get("ABCGEN_SCREENSHOT"):
        page.screenshot(path=os.environ["ABCGEN_SCREENSHOT"], full_page=True)
    page.locator("#candidates .use-candidate").first.click()
    assert page.input_value("#abc") != edited
    wait_for(page, "document.querySelector('#check').className === 'ok'", timeout=20)

    # Keep: a title that is markup stays text, the tune survives a reload
    varied = page.input_value("#abc").replace("\nT:", f"\nT:{XSS_TITLE}\nT:", 1)
    page.fill("#abc", varied)
    page.fill("#notes", "keep this one")
    page.click("#save")
    page.wait_for_selector("#library li .title")
    page.reload()
    page.wait_for_selector("body[data-state=ready]")
    titles = page.locator("#library li .title").all_inner_texts()
    assert titles[0] == XSS_TITLE
    page.locator("#library li button", has_text="Open").first.click()
    wait_for(page, "document.querySelector('#abc').value.length > 0")
    assert page.input_value("#abc") == varied.strip() or page.input_value("#abc") == varied
    assert page.input_value("#notes") == "keep this one"
    assert dialogs == [] and problems == []
    assert outside == [], "the page fetched something from outside this server"
    page.close()


def test_the_page_says_what_is_missing_without_abcjs(server_url, browser):
    page = browser.new_page()
    page.route("**/vendor/abcjs.js", lambda route: route.fulfill(status=404, body="not installed"))
    page.goto(server_url)
    page.wait_for_selector("body[data-state=ready]")
    assert "abcjs is not installed" in page.inner_text("#notice")
    page.fill("#abc", "X:1\nT:Plain\nM:4/4\nL:1/8\nK:D\n|:ABcd efga|g2f2 e2d2:|\n")
    page.dispatch_event("#abc", "input")
    wait_for(page, "document.querySelectorAll('#notation img').length > 0", timeout=60)
    assert page.locator("#play").is_disabled()
    page.close()
