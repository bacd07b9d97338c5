"""The web application of `abcgen serve`: a Starlette app over the library.

    app = create_app(model=abcgen.load_model(), library=Library("tunes.sqlite3"))

Routes (JSON in and out; every value is checked and a bad one is a 4xx with one clear line):

    GET  /                         the page (static files written for abcgen, no templating)
    GET  /vendor/abcjs.js          abcjs from node_modules (npm), when installed
    GET  /api/info                 the model, the limits, what the page can use
    POST /api/write                write tunes, streamed as JSON lines while they are written
    POST /api/jobs/{job}/cancel    stop a generation
    POST /api/check                the strict ABC check and where each bar sits
    POST /api/vary                 rewrite bars first..last: up to 3 candidates, best first
    POST /api/export/{format}      abc, midi, musicxml, svg (a zip of pages when several), pdf
    POST /api/engrave              SVG pages from verovio, for a page without abcjs
    GET  /api/tunes?q=             the library, searched by title
    POST /api/tunes                keep a tune;  GET, PATCH, DELETE /api/tunes/{id}
    GET  /api/tunebook.abc         the whole library as one ABC tunebook

Generation and export run in worker threads, off the event loop: one model in memory serves
several tabs at once, and a page that goes away (or asks to cancel) stops its generation.
Requests that change anything must come from the page itself: a POST, PATCH or DELETE with
another Origin (or that a browser marks cross-site) is refused, and bodies must be JSON, which
a cross-site form cannot send.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import secrets
import threading
import zipfile
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from abcgen.errors import AbcgenError
from abcgen.options import SamplingOptions, check_header_values
from abcgen.serve.library import Library, title_of

if TYPE_CHECKING:  # types only: the page's library and static files need no torch
    from abcgen.sample import TuneModel

T = TypeVar("T")

STATIC = Path(__file__).parent / "static"
PAGE = STATIC / "page"
ABCJS = STATIC / "node_modules" / "abcjs" / "dist" / "abcjs-basic-min.js"

MAX_BODY = 256 * 1024  # bytes of a request body
MAX_N = 8  # tunes per write request
MAX_CHARS = (100, 4000)  # the range of max_chars
MAX_PRIME = 2000  # characters of a prime
MAX_TITLE = 120
MAX_ABC = 20000  # characters of a tune sent to check, vary, export or keep
MAX_NOTES = 5000
MAX_SEED = 2**31 - 1
MAX_VARY_BARS = 32
MAX_JOBS = 16  # generations running or waiting at once
STREAM_INTERVAL = 0.05  # seconds between progress lines
CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# The page runs only its own scripts, talks only to this server, and cannot be framed.
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; media-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
EXPORT_TYPES = {
    "abc": ("text/vnd.abc; charset=utf-8", "abc"),
    "midi": ("audio/midi", "mid"),
    "musicxml": ("application/vnd.recordare.musicxml+xml", "musicxml"),
    "svg": ("image/svg+xml", "svg"),
    "pdf": ("application/pdf", "pdf"),
}


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        # the library's messages name command-line options (--meter); here they are fields
        super().__init__(re.sub(r"(?<![\w-])--(?=[a-z])", "", message))
        self.status = status


class Cancelled(Exception):
    """Raised inside a generation that was asked to stop."""


# ---------------------------------------------------------------- reading requests


async def read_json(request: Request) -> dict:
    """The JSON object of a request body of at most MAX_BODY bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise BadRequest(f"the request body is over {MAX_BODY // 1024} kB", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadRequest(f"the request body is over {MAX_BODY // 1024} kB", 413)
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


@overload
def text_value(data: dict, name: str, limit: int, default: str, required: bool = False) -> str: ...
@overload
def text_value(data: dict, name: str, limit: int, default: None = None, *, required: Literal[True]) -> str: ...
@overload
def text_value(data: dict, name: str, limit: int, default: str | None = None, required: bool = False) -> str | None: ...
def text_value(data: dict, name: str, limit: int, default: str | None = None, required: bool = False) -> str | None:
    value = data.get(name, default)
    if value is None or value == "":
        if required:
            raise BadRequest(f"{name} is required")
        return default
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be text")
    if len(value) > limit:
        raise BadRequest(f"{name} is {len(value)} characters long; at most {limit} are allowed")
    return value


@overload
def int_value(data: dict, name: str, low: int, high: int, default: int) -> int: ...
@overload
def int_value(data: dict, name: str, low: int, high: int, default: int | None) -> int | None: ...
def int_value(data: dict, name: str, low: int, high: int, default: int | None) -> int | None:
    value = data.get(name, default)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    return number


def float_value(data: dict, name: str, low: float, high: float, default: float) -> float:
    value = data.get(name, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a number from {low:g} to {high:g}") from None
    if isinstance(value, bool) or not low <= number <= high:
        raise BadRequest(f"{name} must be a number from {low:g} to {high:g}, not {value!r}")
    return number


def choice_value(data: dict, name: str, default: str | None) -> str | None:
    value = text_value(data, name, 40, default)
    if value is not None and value.strip().lower() in ("", "auto", "any"):
        return None if name != "structure" else "auto"
    return value.strip() if value else value


# ---------------------------------------------------------------- the application


class Server:
    """What the routes share: the model, the library, the worker threads, running jobs."""

    def __init__(
        self, model: TuneModel | None = None, library: Library | None = None, model_name: str = "", workers: int = 4
    ):
        self.model, self.library, self.model_name = model, library, model_name
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="abcgen-write")
        self.export_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="abcgen-export")
        # checks and library reads: never queued behind a long generation
        self.quick_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="abcgen-quick")
        self.jobs: dict[str, threading.Event] = {}

    async def run(self, function: Callable[..., T], *args: Any, pool: Executor | None = None) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool or self.pool, function, *args)


def create_app(
    model: TuneModel | None = None,
    library: Library | None = None,
    model_name: str = "",
    allowed_hosts: Iterable[str] | None = None,
    workers: int = 4,
) -> Starlette:
    """The app over a loaded model (abcgen.sample.TuneModel) and a Library. allowed_hosts:
    the Host names to answer (others get 400; guards against DNS rebinding), None for any."""
    server = Server(model, library, model_name, workers)

    async def index(request: Request) -> Response:
        return FileResponse(PAGE / "index.html", headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP})

    async def abcjs(request: Request) -> Response:
        if not ABCJS.exists():
            return PlainTextResponse("abcjs is not installed: run `npm ci` in abcgen/serve/static", 404)
        return FileResponse(ABCJS, media_type="text/javascript")

    async def info(request: Request) -> Response:
        from abcgen.export import pdf_engine

        meta = server.model.meta if server.model is not None else {}
        return JSONResponse(
            {
                "model": server.model_name,
                "abcjs": ABCJS.exists(),
                "pdf": pdf_engine() is not None,
                "meters": sorted(meta.get("meters") or []),
                "keys": sorted(meta.get("keys") or []),
                "limits": {
                    "n": MAX_N,
                    "max_chars": MAX_CHARS,
                    "prime": MAX_PRIME,
                    "title": MAX_TITLE,
                    "abc": MAX_ABC,
                    "body": MAX_BODY,
                    "vary_bars": MAX_VARY_BARS,
                },
            }
        )

    def write_settings(data: dict) -> dict:
        seed = int_value(data, "seed", 0, MAX_SEED, None)
        settings: dict = {
            "n": int_value(data, "n", 1, MAX_N, 1),
            "temperature": float_value(data, "temperature", 0.05, 3.0, SamplingOptions.temperature),
            "seed": secrets.randbelow(MAX_SEED) if seed is None else seed,
            "meter": choice_value(data, "meter", None),
            "key": choice_value(data, "key", None),
            "title": (text_value(data, "title", MAX_TITLE) or "").strip() or None,
            "structure": choice_value(data, "structure", SamplingOptions.structure) or SamplingOptions.structure,
            "prime": text_value(data, "prime", MAX_PRIME),
            "max_chars": int_value(data, "max_chars", *MAX_CHARS, SamplingOptions.max_chars),
        }
        if settings["title"] and ("\n" in settings["title"] or "\r" in settings["title"]):
            raise BadRequest("title must be one line")
        return settings

    async def write(request: Request) -> Response:
        settings = write_settings(await read_json(request))
        if len(server.jobs) >= MAX_JOBS:
            raise BadRequest(f"{MAX_JOBS} tunes are being written already; wait for one to finish", 429)
        job, cancel = secrets.token_hex(8), threading.Event()
        server.jobs[job] = cancel
        latest: list = [[]]

        def progress(texts: list[str]) -> None:
            if cancel.is_set():
                raise Cancelled()
            latest[0] = texts

        def work() -> tuple[list[str], list[str]]:
            options = {k: v for k, v in settings.items()}
            messages: list[str] = []
            assert server.model is not None, "this server has no model to write with"
            tunes = server.model.generate(progress=progress, log=messages.append, **options)
            return tunes, messages

        async def lines() -> AsyncIterator[bytes]:
            from abcgen.serve.music import check_summary

            future = asyncio.get_running_loop().run_in_executor(server.pool, work)
            # a page that left before the end never reads the outcome: mark it as read
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            sent = None
            try:
                yield line({"type": "start", "job": job, "settings": settings, "model": server.model_name})
                while not future.done():
                    await asyncio.wait({future}, timeout=STREAM_INTERVAL)
                    texts = latest[0]
                    if texts and texts != sent and not future.done():
                        sent = texts
                        yield line({"type": "progress", "texts": texts})
                try:
                    tunes, messages = future.result()
                except Cancelled:
                    yield line({"type": "cancelled"})
                    return
                except AbcgenError as error:
                    yield line({"type": "error", "error": str(error)})
                    return
                checks = [await server.run(check_summary, tune, pool=server.quick_pool) for tune in tunes]
                yield line(
                    {
                        "type": "done",
                        "tunes": tunes,
                        "checks": checks,
                        "messages": messages,
                        "settings": dict(settings, model=server.model_name),
                    }
                )
            finally:
                cancel.set()  # the page went away or the work is over: stop writing
                server.jobs.pop(job, None)

        # Fail fast, before streaming, on values only generate() knows how to judge.
        try:
            await server.run(validate_generate, server.model, settings, pool=server.quick_pool)
        except AbcgenError as error:
            server.jobs.pop(job, None)
            raise BadRequest(str(error)) from None
        return StreamingResponse(
            lines(), media_type="application/x-ndjson", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    async def cancel_job(request: Request) -> Response:
        event = server.jobs.get(request.path_params["job"])
        if event is None:
            return JSONResponse({"error": "no such generation (it may have finished)"}, 404)
        event.set()
        return JSONResponse({"cancelled": True})

    async def check(request: Request) -> Response:
        from abcgen.serve.music import check_summary

        abc = text_value(await read_json(request), "abc", MAX_ABC, required=True)
        return JSONResponse(await server.run(check_summary, abc, pool=server.quick_pool))

    async def vary_route(request: Request) -> Response:
        from abcgen.serve.music import vary

        data = await read_json(request)
        abc = text_value(data, "abc", MAX_ABC, required=True)
        first = int_value(data, "first", 0, 10000, None)
        last = int_value(data, "last", 0, 10000, first)
        if first is None:
            raise BadRequest("first (the index of the first bar to vary) is required")
        assert last is not None  # its default is first
        if last < first or last - first + 1 > MAX_VARY_BARS:
            raise BadRequest(f"last must be from first to first + {MAX_VARY_BARS - 1}")
        count = int_value(data, "count", 1, 5, 3)
        temperature = float_value(data, "temperature", 0.05, 3.0, SamplingOptions.temperature)
        seed = int_value(data, "seed", 0, MAX_SEED, None)
        try:
            return JSONResponse(await server.run(vary, server.model, abc, first, last, count, temperature, seed))
        except AbcgenError as error:
            raise BadRequest(str(error)) from None

    async def export(request: Request) -> Response:
        name = request.path_params["format"]
        if name not in EXPORT_TYPES:
            raise BadRequest(f"unknown format {name!r}: choose from {', '.join(EXPORT_TYPES)}", 404)
        data = await read_json(request)
        abc = text_value(data, "abc", MAX_ABC, required=True).strip() + "\n"
        chords = bool(data.get("chords", False))
        media, extension = EXPORT_TYPES[name]
        if name == "abc":
            body = abc.encode("utf-8")
            title = _title(abc)
        else:
            converted, title = await server.run(convert, abc, name, chords, pool=server.export_pool)
            if isinstance(converted, bytes):
                body = converted
            elif len(converted) > 1:  # svg: a page per file, in one zip
                body, media, extension = _zip(converted), "application/zip", "zip"
            else:
                body = converted[0]
        from abcgen.export import slugify

        filename = f"{slugify(title)}.{extension}"
        return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    async def engrave(request: Request) -> Response:
        abc = text_value(await read_json(request), "abc", MAX_ABC, required=True).strip() + "\n"
        pages, _ = await server.run(convert, abc, "svg", False, pool=server.export_pool)
        assert isinstance(pages, list)  # svg: a page per item
        return JSONResponse({"pages": [page.decode("utf-8") for page in pages]})

    def tune_library() -> Library:
        if server.library is None:
            raise BadRequest("this server has no tune library", 404)
        return server.library

    async def list_tunes(request: Request) -> Response:
        query = request.query_params.get("q", "")
        if len(query) > MAX_TITLE:
            raise BadRequest(f"q is at most {MAX_TITLE} characters")
        found = await server.run(tune_library().search, query, pool=server.quick_pool)
        return JSONResponse({"tunes": found, "total": await server.run(tune_library().count, pool=server.quick_pool)})

    def tune_fields(data: dict, new: bool) -> dict:
        fields: dict = {
            "abc": text_value(data, "abc", MAX_ABC, required=new),
            "title": text_value(data, "title", MAX_TITLE),
            "rating": int_value(data, "rating", 0, 5, 0 if new else None),
            "notes": text_value(data, "notes", MAX_NOTES, "" if new else None),
        }
        if fields["abc"] is not None and not fields["abc"].strip():
            raise BadRequest("abc must hold a tune")
        if fields["title"] and "\n" in fields["title"]:
            raise BadRequest("title must be one line")
        return fields

    async def add_tune(request: Request) -> Response:
        data = await read_json(request)
        fields = tune_fields(data, new=True)
        settings = data.get("settings") or {}
        if not isinstance(settings, dict) or len(json.dumps(settings)) > 4000:
            raise BadRequest("settings must be a JSON object of at most 4000 characters")
        tune_id = await server.run(lambda: tune_library().add(settings=settings, **fields), pool=server.quick_pool)
        return JSONResponse(await server.run(tune_library().get, tune_id, pool=server.quick_pool), 201)

    def tune_id(request: Request) -> int:
        try:
            return int(request.path_params["tune_id"])
        except ValueError:
            raise BadRequest("a tune id is a whole number", 404) from None

    async def get_tune(request: Request) -> Response:
        found = await server.run(tune_library().get, tune_id(request), pool=server.quick_pool)
        return JSONResponse(found) if found else JSONResponse({"error": "no such tune"}, 404)

    async def update_tune(request: Request) -> Response:
        fields = tune_fields(await read_json(request), new=False)
        number = tune_id(request)
        if not await server.run(lambda: tune_library().update(number, **fields), pool=server.quick_pool):
            return JSONResponse({"error": "no such tune"}, 404)
        return JSONResponse(await server.run(tune_library().get, number, pool=server.quick_pool))

    async def delete_tune(request: Request) -> Response:
        if not await server.run(tune_library().delete, tune_id(request), pool=server.quick_pool):
            return JSONResponse({"error": "no such tune"}, 404)
        return JSONResponse({"deleted": True})

    async def tunebook(request: Request) -> Response:
        text = await server.run(tune_library().tunebook, pool=server.quick_pool)
        return Response(
            text,
            media_type="text/vnd.abc; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="tunebook.abc"'},
        )

    async def bad_request(request: Request, error: BadRequest) -> Response:
        return JSONResponse({"error": str(error)}, error.status)

    async def unexpected(request: Request, error: Exception) -> Response:
        return JSONResponse({"error": f"the server failed: {type(error).__name__}"}, 500)

    routes = [
        Route("/", index),
        Route("/vendor/abcjs.js", abcjs),
        Route("/api/info", info),
        Route("/api/write", write, methods=["POST"]),
        Route("/api/jobs/{job}/cancel", cancel_job, methods=["POST"]),
        Route("/api/check", check, methods=["POST"]),
        Route("/api/vary", vary_route, methods=["POST"]),
        Route("/api/export/{format}", export, methods=["POST"]),
        Route("/api/engrave", engrave, methods=["POST"]),
        Route("/api/tunes", list_tunes, methods=["GET"]),
        Route("/api/tunes", add_tune, methods=["POST"]),
        Route("/api/tunes/{tune_id}", get_tune, methods=["GET"]),
        Route("/api/tunes/{tune_id}", update_tune, methods=["PATCH"]),
        Route("/api/tunes/{tune_id}", delete_tune, methods=["DELETE"]),
        Route("/api/tunebook.abc", tunebook),
        Mount("/page", StaticFiles(directory=PAGE), name="page"),
    ]
    middleware = [Middleware(SameOriginOnly)]
    if allowed_hosts:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for event in list(server.jobs.values()):  # shutting down (Ctrl-C): stop every generation
            event.set()
        for pool in (server.pool, server.export_pool, server.quick_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    handlers: dict = {BadRequest: bad_request, Exception: unexpected}
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan, exception_handlers=handlers)
    app.state.server = server
    return app


class SameOriginOnly:
    """Refuses a POST, PUT, PATCH or DELETE that another site's page sends through the
    browser: an Origin other than this server's, or Sec-Fetch-Site: cross-site; and one with
    a body that is not declared JSON (what a cross-site form or a "simple" request sends)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in CHANGING:
            problem = self.problem(Request(scope))
            if problem:
                status, message = problem
                await JSONResponse({"error": message}, status)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def problem(request: Request) -> tuple[int, str] | None:
        origin = request.headers.get("origin")
        host = request.headers.get("host", "")
        if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
            return 403, f"refused: requests from {origin} may not change anything here (only this page may)"
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return 403, "refused: a cross-site request may not change anything here"
        has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if has_body and content_type != "application/json":
            return 415, "send the request body as JSON (Content-Type: application/json)"
        return None


def line(data: dict) -> bytes:
    return (json.dumps(data) + "\n").encode("utf-8")


def validate_generate(model: TuneModel | None, settings: dict) -> None:
    """The checks generate() makes before it writes anything (AbcgenError on a bad value),
    without writing: so that a bad meter or prime is a 400, not an error inside the stream."""
    # Here, not at the top: abcgen.sample loads the sampler (numpy, ONNX Runtime), which the
    # page's library and static files need not load.
    from abcgen.sample import read_prime
    from abcgen.structure import check_structure_option

    check_header_values(meter=settings["meter"], key=settings["key"], title=settings["title"])
    check_structure_option(settings["structure"])
    prime = settings["prime"]
    if prime and prime.lstrip().startswith("@"):
        raise AbcgenError("prime is ABC text (a file name is not accepted here)")
    prime = read_prime(prime)
    if prime and prime.lstrip().startswith("X:") and any(settings[k] for k in ("meter", "key", "title")):
        raise AbcgenError("the prime starts with its own header (X:...); leave meter, key and title empty")
    if model is not None:
        model.vocab.encode("".join(v for v in (prime, settings["meter"], settings["key"]) if v))


def convert(abc: str, name: str, chords: bool) -> tuple[list[bytes] | bytes, str]:
    """(bytes, or a list of SVG pages, and the title) of one tune in one format."""
    from abcgen.export import check_formats, convert_tune, read_tunes

    tunes = read_tunes(abc)
    if not tunes:
        raise BadRequest("the text holds no tune (it needs at least a K: line)")
    if name == "pdf":
        try:
            check_formats(["pdf"])
        except AbcgenError as error:
            raise BadRequest(str(error), 501) from None
    try:
        outputs = convert_tune(tunes[0], (name,), chords=chords)
    except AbcgenError as error:
        raise BadRequest(f"cannot export this tune: {error}", 422) from None
    except Exception as error:  # music21 and verovio raise many kinds on broken text
        raise BadRequest(f"cannot export this tune: {type(error).__name__}: {str(error)[:200]}", 422) from None
    pages = outputs[name]
    return (pages if name == "svg" else pages[0]), tunes[0].title


def _title(abc: str) -> str:
    return title_of(abc)


def _zip(pages: list[bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for number, page in enumerate(pages, 1):
            archive.writestr(f"page-{number}.svg", page)
    return buffer.getvalue()
