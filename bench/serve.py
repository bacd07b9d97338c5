"""Benchmarks for `abcgen serve`: the page in a real browser, and several writers at once.

    .venv/bin/python -m bench.serve [--runs 5] [--writers 4] [--port 8765]

Starts `abcgen serve` in its own process (the shipped model, a library in a temporary
folder), then:

1. Page load: from navigation until the page is ready (its scripts run, the model's meters
   and keys and the library listed), in Debian's chromium through Playwright; median of --runs.
2. Write: from the click on Write to the first notes of the tune body on screen, to the
   finished tune (its text), and to the playable tune (engraved by abcjs and checked);
   median and worst of --runs tunes with seeds 1..runs. Targets: first notes under 1 s,
   the playable tune under 3 s.
3. Concurrent writers: --writers clients post /api/write at once (seeds 1..writers) and read
   their streams; for each, the time to its first progress line with notes and to its tune.
4. Vary: /api/vary on writer 1's tune, for its middle bar and for its last part (--runs
   seeds each): the time to the ranked candidates, and how many were shown.

The browser parts need playwright and chromium (as tests/test_serve_browser.py does) and are
left out, with a line that says so, when either is missing.
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_server(port: int, library: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "abcgen", "serve", "--port", str(port), "--library", str(library)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/api/info")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    sys.exit(f"abcgen serve did not start: {process.stderr.read()}")


def browser_figures(url: str, runs: int) -> dict | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("page load and write-to-notes: left out (pip install playwright)")
        return None
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("page load and write-to-notes: left out (apt-get install chromium)")
        return None
    loads, first, finished, playable = [], [], [], []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--mute-audio"])
        for run in range(1, runs + 1):
            page = browser.new_page()
            start = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("body[data-state=ready]")
            loads.append(time.perf_counter() - start)
            page.fill("#seed", str(run))
            page.click("#write")
            deadline = time.time() + 120
            while not page.evaluate("window.abcgenTimes.playable !== undefined") and time.time() < deadline:
                time.sleep(0.02)
            times = page.evaluate("window.abcgenTimes")
            first.append(times["firstNotes"] / 1000)
            finished.append(times["finished"] / 1000)
            playable.append(times["playable"] / 1000)
            page.close()
        browser.close()
    return {
        "page load": loads,
        "click to first notes": first,
        "click to finished text": finished,
        "click to playable tune": playable,
    }


def one_writer(port: int, seed: int, results: dict, start_at: float) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while time.perf_counter() < start_at:
        time.sleep(0.001)
    start = time.perf_counter()
    body = json.dumps({"seed": seed})
    connection.request("POST", "/api/write", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    first = None
    for raw in response:
        message = json.loads(raw)
        if (
            message["type"] == "progress"
            and first is None
            and "\nK:" in message["texts"][0]
            and any(ch.isalpha() for ch in message["texts"][0].split("\nK:", 1)[1].partition("\n")[2])
        ):
            first = time.perf_counter() - start
        if message["type"] in ("done", "error", "cancelled"):
            results[seed] = (message["type"], first, time.perf_counter() - start)
            results.setdefault("tunes", {})[seed] = (message.get("tunes") or [None])[0]
            return


def post(port: int, path: str, body: dict) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    return json.loads(connection.getresponse().read())


def vary_times(port: int, tune: str, runs: int) -> dict:
    """Seconds to vary one bar in the middle and a whole part, median of runs."""
    bars = post(port, "/api/check", {"abc": tune})["bars"]
    middle = bars[len(bars) // 2]["index"]
    part = [bar["index"] for bar in bars if bar["part"] == bars[-1]["part"]]
    figures = {}
    for name, (first, last) in (("vary one bar", (middle, middle)), ("vary a part", (part[0], part[-1]))):
        times, found = [], []
        for seed in range(runs):
            start = time.perf_counter()
            result = post(port, "/api/vary", {"abc": tune, "first": first, "last": last, "seed": seed})
            times.append(time.perf_counter() - start)
            found.append(len(result.get("candidates", [])))
        figures[name] = (times, found, last - first + 1)
    return figures


def concurrent_writers(port: int, writers: int) -> dict:
    results: dict = {}
    start_at = time.perf_counter() + 0.2
    threads = [
        threading.Thread(target=one_writer, args=(port, seed, results, start_at)) for seed in range(1, writers + 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(args.port, Path(folder) / "library.sqlite3")
        try:
            print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
            figures = browser_figures(f"http://127.0.0.1:{args.port}/", args.runs)
            if figures:
                for name, values in figures.items():
                    print(
                        f"{name:26s} median {statistics.median(values):6.2f} s   worst {max(values):6.2f} s   "
                        f"({len(values)} runs)"
                    )
            results = concurrent_writers(args.port, args.writers)
            tunes = results.pop("tunes", {})
            served = sum(1 for kind, _, _ in results.values() if kind == "done")
            print(f"{args.writers} concurrent writers: {served} served")
            for seed, (kind, first, total) in sorted(results.items()):
                shown = f"{first:6.2f} s" if first is not None else "   n/a"
                print(f"  writer {seed}: first notes {shown}, tune {total:6.2f} s ({kind})")
            if tunes.get(1):
                for name, (times, found, bars) in vary_times(args.port, tunes[1], args.runs).items():
                    print(
                        f"{name:26s} median {statistics.median(times):6.2f} s   worst {max(times):6.2f} s   "
                        f"({bars} bars; candidates shown per run: {found})"
                    )
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
