"""abcgen download: a local HTTP server in a thread serves fixture files and injects faults."""

import functools
import hashlib
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from abcgen import download as dl
from abcgen.cli import cli
from abcgen.errors import AbcgenError

TUNES = {
    "reels.abc": b"X:1\nT:Fixture Reel\nM:4/4\nL:1/8\nK:D\n|:defg abag|fdec d4:|\n",
    "jigs.abc": b"X:1\nT:Fixture Jig\nM:6/8\nL:1/8\nK:G\n|:GAB cBA|G3 G3:|\n",
    "waltzes.abc": b"X:1\nT:Fixture Waltz\nM:3/4\nL:1/4\nK:A\n|:A B c|e2 d:|\n",
}
FAULTY = "jigs.abc"  # the file each fault test breaks
FAST = {"timeout": (2, 0.4), "backoff": 0.0}  # keeps the retry and stall tests quick


def fixture_corpus(base_url="http://unused.invalid/"):
    files = tuple(dl.RemoteFile(name, len(body), hashlib.sha256(body).hexdigest()) for name, body in TUNES.items())
    return dl.RemoteCorpus("fixture", base_url, files)


# ---- the local server -------------------------------------------------------------------


def serve(body):
    def route(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return route


def status(code):
    return lambda handler: handler.send_error(code)


def short_body(body, announce_length=True):
    """Sends half the body and closes the connection, after promising all of it (or not)."""

    def route(handler):
        handler.send_response(200)
        if announce_length:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2])

    return route


def stall(body, before_headers):
    """Accepts the request, then goes quiet for longer than the client's read timeout."""

    def route(handler):
        if before_headers:
            time.sleep(1.5)
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:10])
        handler.wfile.flush()
        time.sleep(1.5)
        handler.wfile.write(body[10:])

    return route


def in_turn(*routes):
    """The first request gets routes[0], the next routes[1], ...; the last one repeats."""
    pending = list(routes)
    return lambda handler: (pending.pop(0) if len(pending) > 1 else pending[0])(handler)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        name = self.path.lstrip("/")
        self.server.hits[name] += 1
        self.server.routes.get(name, status(404))(self)

    def log_message(self, *args):
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A stalled handler wakes up to a closed socket, maybe during a later test's
        # CliRunner call, whose captured stderr must not get the traceback.
        pass


@pytest.fixture
def server():
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    httpd.routes = {name: serve(body) for name, body in TUNES.items()}
    httpd.hits = Counter()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def unused_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def cli_fixture(monkeypatch):
    """The CLI sees the fixture corpus in the registry and uses the fast timeouts."""
    monkeypatch.setitem(dl.REGISTRY, "fixture", fixture_corpus())
    monkeypatch.setattr(dl, "fetch", functools.partial(dl.fetch, **FAST))
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)
    return CliRunner()


def leftovers(dest):
    return sorted(path.name for path in dest.iterdir()) if dest.exists() else []


# ---- success, skipping, --force, mirrors ------------------------------------------------


def test_downloads_and_verifies_every_file(server, tmp_path):
    paths = dl.download(fixture_corpus(), tmp_path / "d", base_url=server.url, progress=False)
    assert [path.name for path in paths] == list(TUNES)
    assert all(path.read_bytes() == TUNES[path.name] for path in paths)
    assert leftovers(tmp_path / "d") == sorted(TUNES)


def test_second_run_fetches_nothing_and_force_fetches_again(server, tmp_path):
    dl.download(fixture_corpus(), tmp_path, base_url=server.url, progress=False)
    again = dl.fetch(fixture_corpus(), tmp_path, base_url=server.url, progress=False)
    assert again.downloaded == [] and len(again.already_present) == len(TUNES)
    assert sum(server.hits.values()) == len(TUNES)

    forced = dl.fetch(fixture_corpus(), tmp_path, base_url=server.url, force=True, progress=False)
    assert len(forced.downloaded) == len(TUNES)
    assert sum(server.hits.values()) == 2 * len(TUNES)


def test_a_damaged_file_is_fetched_again(server, tmp_path):
    dl.download(fixture_corpus(), tmp_path, base_url=server.url, progress=False)
    (tmp_path / FAULTY).write_bytes(b"X:1\nT:edited by hand\n")
    result = dl.fetch(fixture_corpus(), tmp_path, base_url=server.url, progress=False)
    assert [path.name for path in result.downloaded] == [FAULTY]
    assert (tmp_path / FAULTY).read_bytes() == TUNES[FAULTY]


def test_mirror_from_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv(dl.MIRROR_ENV, server.url)
    dl.download(fixture_corpus(), tmp_path, progress=False)
    assert leftovers(tmp_path) == sorted(TUNES)


def test_default_destination_is_corpora_name(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = dl.download(fixture_corpus(), base_url=server.url, progress=False)
    assert paths[0].parent == dl.Path("corpora/fixture")


def test_retries_a_500_then_succeeds(server, tmp_path):
    server.routes[FAULTY] = in_turn(status(500), serve(TUNES[FAULTY]))
    dl.download(fixture_corpus(), tmp_path, base_url=server.url, progress=False, **FAST)
    assert server.hits[FAULTY] == 2
    assert (tmp_path / FAULTY).read_bytes() == TUNES[FAULTY]


def test_unknown_corpus_name():
    with pytest.raises(AbcgenError, match="unknown corpus 'nope'; known corpora: nottingham"):
        dl.download("nope")


# ---- each fault: one line naming the file and the cause, nothing left under a final name --

FAULTS = {
    "404": (lambda: status(404), "HTTP 404"),
    "500": (lambda: status(500), "HTTP 500"),
    "short body": (lambda: short_body(TUNES[FAULTY]), "connection closed before all"),
    "short body, no length": (lambda: short_body(TUNES[FAULTY], announce_length=False), "connection closed before all"),
    "wrong bytes": (lambda: serve(TUNES[FAULTY].replace(b"G", b"A")), "sha256"),
    "too many bytes": (lambda: serve(TUNES[FAULTY] + b"extra"), "more than the expected"),
    "stall before headers": (lambda: stall(TUNES[FAULTY], before_headers=True), "stopped sending"),
    "stall mid-body": (lambda: stall(TUNES[FAULTY], before_headers=False), "stopped sending"),
}


def assert_failed_cleanly(message, dest, cause):
    assert "\n" not in message.strip() and "Traceback" not in message
    assert FAULTY in message and cause in message
    assert FAULTY not in leftovers(dest) and not any(name.endswith(".part") for name in leftovers(dest))


@pytest.mark.parametrize("fault", FAULTS)
def test_server_fault_through_library(fault, server, tmp_path):
    route, cause = FAULTS[fault]
    server.routes[FAULTY] = route()
    with pytest.raises(AbcgenError) as raised:
        dl.download(fixture_corpus(), tmp_path, base_url=server.url, progress=False, **FAST)
    assert_failed_cleanly(str(raised.value), tmp_path, cause)


@pytest.mark.parametrize("fault", ["404", "500", "short body", "wrong bytes", "stall mid-body"])
def test_server_fault_through_cli(fault, server, tmp_path, cli_fixture):
    route, cause = FAULTS[fault]
    server.routes[FAULTY] = route()
    result = cli_fixture.invoke(cli, ["download", "fixture", "--dest", str(tmp_path), "--base-url", server.url])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: cannot download jigs.abc")
    assert_failed_cleanly(result.stderr, tmp_path, cause)


def test_transient_faults_are_retried_and_the_rest_are_not(server, tmp_path):
    for fault, expected_hits in [("500", 3), ("short body", 3), ("404", 1), ("wrong bytes", 1)]:
        server.hits.clear()
        server.routes[FAULTY] = FAULTS[fault][0]()
        with pytest.raises(AbcgenError):
            dl.download(fixture_corpus(), tmp_path, base_url=server.url, progress=False, force=True, **FAST)
        assert server.hits[FAULTY] == expected_hits, fault


NETWORK_FAULTS = {
    "no such host": (lambda: "http://abcgen-mirror.invalid/", "cannot resolve host abcgen-mirror.invalid"),
    "connection refused": (lambda: f"http://127.0.0.1:{unused_port()}/", "connection refused"),
}


@pytest.mark.parametrize("fault", NETWORK_FAULTS)
def test_network_fault_through_library(fault, tmp_path):
    base_url, cause = NETWORK_FAULTS[fault][0](), NETWORK_FAULTS[fault][1]
    with pytest.raises(AbcgenError) as raised:
        dl.download(fixture_corpus(), tmp_path, base_url=base_url, progress=False, **FAST)
    message = str(raised.value)
    assert message.startswith("cannot download reels.abc") and cause in message and "after 3 tries" in message
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fault", NETWORK_FAULTS)
def test_network_fault_through_cli(fault, tmp_path, cli_fixture):
    base_url, cause = NETWORK_FAULTS[fault][0](), NETWORK_FAULTS[fault][1]
    result = cli_fixture.invoke(cli, ["download", "fixture", "--dest", str(tmp_path / "d"), "--base-url", base_url])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert result.stderr.startswith("Error: cannot download reels.abc") and cause in result.stderr
    assert leftovers(tmp_path / "d") == []


def test_not_an_http_address(tmp_path):
    with pytest.raises(AbcgenError, match="not a valid http"):
        dl.download(fixture_corpus(), tmp_path, base_url="mirror/folder", progress=False)


def test_destination_that_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(AbcgenError, match="cannot create folder"):
        dl.download(fixture_corpus(), tmp_path / "taken" / "d", progress=False)


# ---- the CLI on success -----------------------------------------------------------------


def test_cli_summary_on_stderr_and_nothing_on_stdout(server, tmp_path, cli_fixture):
    args = ["download", "fixture", "--dest", str(tmp_path), "--base-url", server.url]
    first = cli_fixture.invoke(cli, args)
    assert first.exit_code == 0 and first.stdout == ""
    assert first.stderr == f"fixture: 3 files in {tmp_path} (3 downloaded, 0 already present)\n"

    second = cli_fixture.invoke(cli, args)
    assert second.exit_code == 0 and "nothing downloaded" in second.stderr
    assert sum(server.hits.values()) == len(TUNES)

    quiet = cli_fixture.invoke(cli, args + ["--force", "--quiet"])
    assert quiet.exit_code == 0 and quiet.output == ""
    assert sum(server.hits.values()) == 2 * len(TUNES)


def test_cli_mirror_from_environment(server, tmp_path, cli_fixture):
    result = cli_fixture.invoke(cli, ["download", "fixture", "--dest", str(tmp_path)], env={dl.MIRROR_ENV: server.url})
    assert result.exit_code == 0, result.output
    assert leftovers(tmp_path) == sorted(TUNES)


# ---- the real corpus --------------------------------------------------------------------


def test_registry_matches_the_shared_checksums(nottingham_dir):
    sums = dict(reversed(line.split()) for line in (nottingham_dir / "SHA256SUMS").read_text().splitlines())
    registry = {remote.name: remote for remote in dl.NOTTINGHAM.files}
    assert {name: remote.sha256 for name, remote in registry.items()} == sums
    assert all(remote.size == (nottingham_dir / name).stat().st_size for name, remote in registry.items())
    assert dl.NOTTINGHAM_COMMIT in (nottingham_dir / "SOURCE.md").read_text()


def test_downloads_the_real_corpus(nottingham_dir, server, tmp_path, cli_fixture):
    server.routes = {remote.name: serve((nottingham_dir / remote.name).read_bytes()) for remote in dl.NOTTINGHAM.files}
    result = cli_fixture.invoke(cli, ["download", "--dest", str(tmp_path), "--base-url", server.url])
    assert result.exit_code == 0, result.output
    assert "nottingham: 14 files" in result.stderr
    for remote in dl.NOTTINGHAM.files:
        assert dl.sha256_of(tmp_path / remote.name) == remote.sha256
