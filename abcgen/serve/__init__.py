"""`abcgen serve`: a local web page to write, hear, read, vary and keep tunes.

    from abcgen.serve import create_app, run
    run(host="127.0.0.1", port=8000)              # what `abcgen serve` does

The page's notation and playback use abcjs, installed from npm into abcgen/serve/static
(`npm ci` there; `abcgen serve` runs it on first start when npm is present) and served from
node_modules: nothing is fetched from the internet while the page runs. Without abcjs the
page shows verovio's engraving from the server and offers the MIDI file instead of playback.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import threading
import webbrowser
from collections.abc import Callable
from pathlib import Path

from abcgen.errors import AbcgenError
from abcgen.serve.app import ABCJS, STATIC, create_app
from abcgen.serve.library import Library, default_library_path

__all__ = ["create_app", "run", "Library", "default_library_path", "install_page_packages"]

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def install_page_packages(log: Callable[[str], None] = print) -> bool:
    """Install the page's JavaScript packages (package.json in abcgen/serve/static) with npm
    when they are missing; True when abcjs is there afterwards."""
    if ABCJS.exists():
        return True
    npm = shutil.which("npm")
    if npm is None:
        log(
            "abcjs is not installed and npm is not on the PATH: the page will show notation "
            "engraved by the server and offer MIDI instead of playing the tune "
            "(install Node.js and npm, then run `npm ci` in abcgen/serve/static)"
        )
        return False
    log("installing the page's JavaScript (abcjs) with npm, once...")
    command = [
        npm,
        "ci" if (STATIC / "package-lock.json").exists() else "install",
        "--no-audit",
        "--no-fund",
        "--quiet",
    ]
    try:
        subprocess.run(command, cwd=STATIC, check=True, timeout=300, capture_output=True)
    except (OSError, subprocess.SubprocessError) as error:
        log(
            f"npm could not install abcjs ({type(error).__name__}); the page will work without it "
            "(server-side notation, MIDI download)"
        )
    return ABCJS.exists()


def shown_path(path: str | os.PathLike[str]) -> str:
    """A path as the musician would type it: relative to here, or from ~, when it can be."""
    path = Path(path).resolve()
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            return prefix + str(path.relative_to(base))
        except ValueError:
            continue
    return str(path)


def check_port(host: str, port: int) -> None:
    """One clear line, before the model loads, when the address cannot be listened on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise AbcgenError(f"cannot listen on {host}: {error.strerror or error}; check --host") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            reason = "it is in use (another abcgen serve?)" if error.errno == errno.EADDRINUSE else error.strerror
            raise AbcgenError(f"cannot listen on {host} port {port}: {reason}; choose another with --port") from None


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    model_path: str | Path | None = None,
    library_path: str | os.PathLike[str] | None = None,
    open_browser: bool = False,
    log: Callable[[str], None] | None = None,
    workers: int = 4,
) -> None:
    """Load the model and the library, then serve the page until Ctrl-C."""
    # Here, not at the top: the page's app and library load without the sampler and uvicorn.
    import uvicorn

    from abcgen.sample import default_model_path, load_model

    log = log or (lambda message: print(message, file=sys.stderr))
    check_port(host, port)
    if host not in LOOPBACK:
        log(
            f"Warning: serving on {host}: anyone who can reach this machine on port {port} can use the "
            "page, write tunes with its CPU and change its tune library. Use --host 127.0.0.1 to keep it local."
        )
    install_page_packages(log)
    model = load_model(model_path, log=log)
    if model.exported is None:  # the torch engine: one thread for every request at once (see inference.one_cpu_thread)
        import torch

        torch.set_num_threads(1)
    library = Library(library_path)
    name = shown_path(model_path or default_model_path())
    allowed = None if host not in LOOPBACK else sorted(LOOPBACK | {"[::1]"})
    app = create_app(model=model, library=library, model_name=name, allowed_hosts=allowed, workers=workers)
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{port}/"
    log(f"abcgen serve: {address} (model {name}, library {shown_path(library.path)}); Ctrl-C stops it")
    if open_browser:
        threading.Timer(1.0, webbrowser.open, [address]).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")
