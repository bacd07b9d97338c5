"""abcgen serve: the API through Starlette's TestClient, the tune library, the page's safety
rules, and the CLI commands (serve, library export). The shipped model writes the tunes,
with max_chars kept small so that each generation takes a fraction of a second."""

import json
import threading
import time

import pytest
from click.testing import CliRunner

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from abcgen.abc import check_tune  # noqa: E402
from abcgen.cli import cli  # noqa: E402
from abcgen.serve.app import MAX_BODY, create_app  # noqa: E402
from abcgen.serve.library import Library  # noqa: E402
from abcgen.serve.music import bar_layout  # noqa: E402

TUNE = """X:1
T:Test Reel
M:4/4
L:1/8
K:D
|:"D"FAdA FAdA|"G"BdBG "D"FAdA|"A"cBAG FEDF|"Em"EFGA "A7"BAGE|
"D"FAdA FAdA|"G"BdBG "D"FAdA|"A"cBAG FEDC|"D"D2F2 D4:|
|:"D"fefg afdf|"G"gfga bgeg|"D"fefg afdf|"A"edcB A4|
"D"fefg afdf|"G"gfga bgeg|"A"agfe dcBA|"D"d2f2 d4:|"""
QUICK = {"seed": 5, "max_chars": 220, "structure": "none", "meter": "6/8", "key": "G"}


@pytest.fixture(scope="module")
def model():
    from abcgen.sample import load_model

    return load_model()


@pytest.fixture
def library(tmp_path):
    return Library(tmp_path / "library.sqlite3")


@pytest.fixture
def client(model, library):
    with TestClient(create_app(model=model, library=library, model_name="shipped")) as test_client:
        yield test_client


def write_lines(client, **settings):
    with client.stream("POST", "/api/write", json=settings) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line) for line in response.iter_lines() if line.strip()]


# ---------------------------------------------------------------- writing


def test_write_streams_the_tune_as_it_is_written_then_the_finished_tune(client, monkeypatch):
    import abcgen.serve.app

    # a line every millisecond: the tune arrives in pieces however fast or loaded the machine
    monkeypatch.setattr(abcgen.serve.app, "STREAM_INTERVAL", 0.001)
    lines = write_lines(client, **dict(QUICK, max_chars=600))
    kinds = [line["type"] for line in lines]
    assert kinds[0] == "start" and kinds[-1] == "done"
    progress = [line["texts"][0] for line in lines if line["type"] == "progress"]
    assert len(progress) >= 2, "the tune should arrive in pieces, not all at once"
    assert "X:1\n".startswith(progress[0][:4]) and len(progress[-1]) > len(progress[0])
    done = lines[-1]
    tune = done["tunes"][0]
    assert "M:6/8" in tune and "K:G" in tune
    assert done["settings"]["seed"] == 5 and done["settings"]["model"] == "shipped"
    assert done["checks"][0]["ok"] == check_tune(tune).ok


def test_the_same_seed_writes_the_same_tune_and_no_seed_gets_one_chosen(client):
    first = write_lines(client, **QUICK)[-1]["tunes"][0]
    again = write_lines(client, **QUICK)[-1]["tunes"][0]
    assert first == again
    chosen = write_lines(client, **dict(QUICK, seed=None))[-1]["settings"]["seed"]
    assert isinstance(chosen, int) and chosen >= 0


def test_generate_reports_progress_and_stops_when_the_callback_raises(model):
    seen = []

    def progress(texts):
        seen.append(texts[0])
        if len(seen) == 40:
            raise KeyboardInterrupt  # what the server's cancel raises instead: any exception stops it

    with pytest.raises(KeyboardInterrupt):
        model.generate(seed=1, max_chars=300, structure="none", progress=progress)
    assert len(seen) == 40 and seen[0].startswith("X") and seen[-1].startswith(seen[10])


def test_a_generation_can_be_cancelled(client):
    with client.stream("POST", "/api/write", json={"max_chars": 4000, "structure": "none"}) as response:
        lines = response.iter_lines()
        start = json.loads(next(lines))
        assert client.post(f"/api/jobs/{start['job']}/cancel", json={}).json() == {"cancelled": True}
        kinds = [json.loads(line)["type"] for line in lines if line.strip()]
    assert kinds[-1] == "cancelled"
    assert client.post(f"/api/jobs/{start['job']}/cancel", json={}).status_code == 404


def test_two_writers_at_once_are_both_served(client):
    results = {}

    def writer(seed):
        with client.stream("POST", "/api/write", json=dict(QUICK, seed=seed)) as response:
            started, last = None, None
            for line in response.iter_lines():
                last = json.loads(line)
                if last["type"] == "progress" and started is None:
                    started = time.perf_counter()  # its first characters are written
        results[seed] = dict(last, started=started, ended=time.perf_counter())

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [1, 2]
    assert all(result["type"] == "done" for result in results.values())
    # both were being written at once: each started before the other ended
    assert max(r["started"] for r in results.values()) < min(r["ended"] for r in results.values())


@pytest.mark.parametrize(
    "settings, status, words",
    [
        ({"n": 0}, 400, "n must be a whole number from 1 to 8"),
        ({"n": 100}, 400, "n must be"),
        ({"temperature": 50}, 400, "temperature must be a number"),
        ({"temperature": "hot"}, 400, "temperature must be a number"),
        ({"seed": -1}, 400, "seed must be a whole number"),
        ({"seed": 1.5}, 400, "seed must be a whole number"),
        ({"max_chars": 10}, 400, "max_chars must be"),
        ({"max_chars": 10**7}, 400, "max_chars must be"),
        ({"prime": "A" * 3000}, 400, "prime is 3000 characters long"),
        ({"prime": "@/etc/passwd"}, 400, "a file name is not accepted"),
        ({"meter": "7/x"}, 400, "not an ABC meter"),
        ({"key": "Q#"}, 400, "not an ABC key"),
        ({"structure": "ABAB?"}, 400, "structure"),
        ({"title": "one\ntwo"}, 400, "one line"),
        ({"title": ["a list"]}, 400, "title must be text"),
        ({"prime": "|:\u00e9\u00e9:|"}, 400, "not in the model's vocabulary"),
    ],
)
def test_bad_write_values_are_a_clear_4xx(client, settings, status, words):
    response = client.post("/api/write", json=settings)
    assert response.status_code == status
    assert words in response.json()["error"]
    assert "Traceback" not in response.text


def test_too_many_generations_at_once_are_refused(client):
    from abcgen.serve.app import MAX_JOBS

    jobs = client.app.state.server.jobs
    jobs.update({f"busy-{i}": threading.Event() for i in range(MAX_JOBS)})
    response = client.post("/api/write", json=QUICK)
    assert response.status_code == 429 and "wait for one to finish" in response.json()["error"]
    jobs.clear()


def test_bodies_must_be_json_objects_of_bounded_size(client):
    assert (
        client.post("/api/check", content=b"not json", headers={"Content-Type": "application/json"}).status_code == 400
    )
    assert "JSON object" in client.post("/api/check", json=[1, 2]).json()["error"]
    huge = client.post("/api/check", json={"abc": "A" * (MAX_BODY + 10)})
    assert huge.status_code == 413 and "kB" in huge.json()["error"]
    assert client.post("/api/check", json={"abc": "A" * 30000}).status_code == 400


# ---------------------------------------------------------------- reading, checking, varying


def test_bar_layout_finds_every_bar_and_part():
    bars = bar_layout(TUNE)
    assert len(bars) == 16
    assert TUNE[bars[0].start : bars[0].end] == '"D"FAdA FAdA'
    assert TUNE[bars[15].start : bars[15].end] == '"D"d2f2 d4'
    assert [bar.part for bar in bars] == [0] * 8 + [1] * 8
    assert check_tune(TUNE).n_bars == len(bars)


def test_the_check_points_at_the_bar_it_names(client):
    broken = TUNE.replace('"A"cBAG FEDC|', '"A"cBAG FED|')  # bar 7 a note short
    result = client.post("/api/check", json={"abc": broken}).json()
    assert not result["ok"] and result["rule"] == "bar length"
    assert result["bar"]["number"] == 7
    assert broken[result["bar"]["start"] : result["bar"]["end"]] == '"A"cBAG FED'
    assert client.post("/api/check", json={"abc": TUNE}).json()["ok"]


def test_vary_rewrites_only_the_selected_bar_and_ranks_the_candidates(model):
    from abcgen.serve.music import vary

    bars = bar_layout(TUNE)
    result = vary(model, TUNE, 5, 5, count=3, seed=2)
    before, after = TUNE[: bars[5].start], TUNE[bars[5].end :]
    assert 1 <= len(result["candidates"]) <= 3
    scores = [candidate["score"] for candidate in result["candidates"]]
    assert scores == sorted(scores, reverse=True)
    for candidate in result["candidates"]:
        assert candidate["abc"] == before + candidate["stretch"] + after
        assert candidate["stretch"] != result["original"]
        assert check_tune(candidate["abc"]).ok
        assert len(bar_layout(candidate["abc"])) == len(bars)


def test_vary_a_part_through_the_api(client):
    response = client.post("/api/vary", json={"abc": TUNE, "first": 8, "last": 15, "seed": 1})
    assert response.status_code == 200
    result = response.json()
    assert result["candidates"]
    for candidate in result["candidates"]:
        assert candidate["abc"].startswith(TUNE[: bar_layout(TUNE)[8].start])
        assert candidate["abc"].endswith(candidate["stretch"] + ":|")
        assert len(bar_layout(candidate["abc"])) == 16 and check_tune(candidate["abc"]).ok


@pytest.mark.parametrize(
    "request_body, words",
    [
        ({"abc": TUNE, "first": 40}, "not in the tune"),
        ({"abc": TUNE, "first": 3, "last": 2}, "last must be"),
        ({"abc": TUNE}, "first"),
        ({"first": 1}, "abc is required"),
        ({"abc": "X:1\nK:D\n", "first": 0}, "no bars"),
    ],
)
def test_bad_vary_requests_are_a_clear_4xx(client, request_body, words):
    response = client.post("/api/vary", json=request_body)
    assert response.status_code == 400
    assert words in response.json()["error"]


# ---------------------------------------------------------------- export


def test_export_gives_each_format_through_the_export_code(client):
    expected = {"abc": b"X:1", "midi": b"MThd", "musicxml": b"<score-partwise", "svg": b"<svg"}
    for name, marker in expected.items():
        response = client.post(f"/api/export/{name}", json={"abc": TUNE})
        assert response.status_code == 200, response.text
        assert marker in response.content[:4000]
        assert "test-reel." in response.headers["content-disposition"]
    engraved = client.post("/api/engrave", json={"abc": TUNE}).json()
    assert engraved["pages"] and engraved["pages"][0].lstrip().startswith(("<?xml", "<svg"))


def test_an_svg_of_several_pages_comes_as_a_zip_of_pages(client, monkeypatch):
    import io
    import zipfile

    import abcgen.serve.app

    pages = [b"<svg>page one</svg>", b"<svg>page two</svg>"]
    monkeypatch.setattr(abcgen.serve.app, "convert", lambda abc, name, chords: (pages, "Long Reel"))
    response = client.post("/api/export/svg", json={"abc": TUNE})
    assert response.headers["content-type"] == "application/zip"
    assert 'filename="long-reel.zip"' in response.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert [archive.read(name) for name in archive.namelist()] == pages


def test_export_refuses_what_it_cannot_do_with_a_4xx(client):
    from abcgen.export import pdf_engine

    assert client.post("/api/export/exe", json={"abc": TUNE}).status_code == 404
    assert client.post("/api/export/midi", json={"abc": "no tune here"}).status_code == 400
    if pdf_engine() is None:
        response = client.post("/api/export/pdf", json={"abc": TUNE})
        assert response.status_code == 501 and "LilyPond" in response.json()["error"]


# ---------------------------------------------------------------- the library


def test_library_round_trip(client):
    saved = client.post("/api/tunes", json={"abc": TUNE, "settings": {"seed": 3}, "rating": 4, "notes": "lovely"})
    assert saved.status_code == 201
    tune = saved.json()
    assert tune["title"] == "Test Reel" and tune["settings"] == {"seed": 3} and tune["rating"] == 4
    other = client.post("/api/tunes", json={"abc": TUNE.replace("Test Reel", "Morning Jig")}).json()
    assert [t["title"] for t in client.get("/api/tunes").json()["tunes"]] == ["Morning Jig", "Test Reel"]
    assert [t["id"] for t in client.get("/api/tunes", params={"q": "REEL"}).json()["tunes"]] == [tune["id"]]
    assert client.get("/api/tunes", params={"q": "100%"}).json()["tunes"] == []
    changed = client.patch(f"/api/tunes/{tune['id']}", json={"rating": 5, "notes": "even better"}).json()
    assert (changed["rating"], changed["notes"], changed["abc"]) == (5, "even better", TUNE)
    renamed = client.patch(f"/api/tunes/{other['id']}", json={"abc": TUNE.replace("Test Reel", "Evening Jig")})
    assert renamed.json()["title"] == "Evening Jig"
    book = client.get("/api/tunebook.abc").text
    assert book.index("X:1\nT:Test Reel") < book.index("X:2\nT:Evening Jig")
    assert "N:rating 5/5\nN:even better\nK:D" in book
    assert client.delete(f"/api/tunes/{other['id']}").json() == {"deleted": True}
    assert client.get(f"/api/tunes/{other['id']}").status_code == 404
    assert client.delete(f"/api/tunes/{other['id']}").status_code == 404


@pytest.mark.parametrize(
    "body, words",
    [
        ({"abc": TUNE, "rating": 9}, "rating must be a whole number from 0 to 5"),
        ({"abc": "   "}, "abc must hold a tune"),
        ({"rating": 2}, "abc is required"),
        ({"abc": TUNE, "settings": [1]}, "settings must be a JSON object"),
        ({"abc": TUNE, "notes": "n" * 6000}, "notes is 6000 characters long"),
    ],
)
def test_bad_library_values_are_a_clear_4xx(client, body, words):
    response = client.post("/api/tunes", json=body)
    assert response.status_code == 400 and words in response.json()["error"]


def test_saved_tunes_survive_a_new_server_on_the_same_file(model, tmp_path):
    path = tmp_path / "kept.sqlite3"
    with TestClient(create_app(model=model, library=Library(path))) as first:
        first.post("/api/tunes", json={"abc": TUNE})
    with TestClient(create_app(model=model, library=Library(path))) as second:
        assert [t["title"] for t in second.get("/api/tunes").json()["tunes"]] == ["Test Reel"]


def test_a_failed_change_leaves_the_library_as_it_was(library):
    tune_id = library.add(TUNE, rating=2)
    with pytest.raises(Exception):
        library.update(tune_id, rating=7)  # the table's CHECK refuses it inside the transaction
    assert library.get(tune_id)["rating"] == 2


# ---------------------------------------------------------------- safety


def test_changes_from_another_origin_are_refused(client):
    evil = {"Origin": "http://evil.example"}
    refused = client.post("/api/tunes", json={"abc": TUNE}, headers=evil)
    assert refused.status_code == 403 and "evil.example" in refused.json()["error"]
    tune = client.post("/api/tunes", json={"abc": TUNE}, headers={"Origin": "http://testserver"}).json()
    assert client.delete(f"/api/tunes/{tune['id']}", headers=evil).status_code == 403
    assert client.patch(f"/api/tunes/{tune['id']}", json={"rating": 1}, headers=evil).status_code == 403
    assert client.post("/api/tunes", json={"abc": TUNE}, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    form = client.post("/api/tunes", content=b"abc=X", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    assert [t["id"] for t in client.get("/api/tunes").json()["tunes"]] == [tune["id"]]


def test_only_the_named_hosts_are_answered(model, library):
    app = create_app(model=model, library=library, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1") as local:
        assert local.get("/api/info").status_code == 200
    with TestClient(app, base_url="http://attacker.example") as rebound:
        assert rebound.get("/api/info").status_code == 400


def test_the_page_and_its_scripts_are_served_locally(client):
    page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert page.status_code == 200 and "default-src 'self'" in policy and "unsafe-eval" not in policy
    assert "http" not in "".join(line for line in page.text.splitlines() if "src=" in line)
    assert client.get("/page/app.js").status_code == 200
    from abcgen.serve.app import ABCJS

    vendor = client.get("/vendor/abcjs.js")
    assert vendor.status_code == (200 if ABCJS.exists() else 404)


def test_the_page_writes_tune_text_only_as_text():
    from pathlib import Path

    script = (Path(__file__).parent.parent / "abcgen" / "serve" / "static" / "page" / "app.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script


# ---------------------------------------------------------------- the commands


def test_serve_says_in_one_line_when_the_port_is_taken(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--port", str(port), "--library", str(tmp_path / "l.sqlite3")])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1 port {port}: it is in use" in result.output


def test_library_export_prints_the_tunebook(tmp_path):
    path = tmp_path / "lib.sqlite3"
    library = Library(path)
    library.add(TUNE)
    library.add(TUNE.replace("Test Reel", "Second"), notes="from the page")
    result = CliRunner().invoke(cli, ["library", "export", "--library", str(path)])
    assert result.exit_code == 0
    assert result.stdout.startswith("X:1\nT:Test Reel") and "X:2\nT:Second" in result.stdout
    assert "2 tune(s)" in result.stderr
    missing = CliRunner().invoke(cli, ["library", "export", "--library", str(tmp_path / "none.sqlite3")])
    assert missing.exit_code == 1 and "no tune library" in missing.output


def test_serve_warns_when_it_listens_beyond_this_machine(monkeypatch, tmp_path, model):
    import uvicorn

    import abcgen.sample
    import abcgen.serve

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **options: started.update(host=host, port=port))
    monkeypatch.setattr(abcgen.sample, "load_model", lambda path=None, log=None: model)
    monkeypatch.setattr(abcgen.serve, "install_page_packages", lambda say: True)
    monkeypatch.setattr("torch.set_num_threads", lambda count: None)
    monkeypatch.setattr(abcgen.serve, "check_port", lambda host, port: None)
    library = str(tmp_path / "lib.sqlite3")
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "8765", "--library", library])
    assert result.exit_code == 0, result.output
    assert started == {"host": "0.0.0.0", "port": 8765}
    assert "Warning: serving on 0.0.0.0" in result.stderr
    quiet = CliRunner().invoke(cli, ["serve", "--library", library])
    assert "Warning" not in quiet.stderr and "http://127.0.0.1:8000/" in quiet.stderr
