"""Fetch named corpora, verify every file's sha256, and move each into place atomically.

    >>> from abcgen.download import download
    >>> download("nottingham")          # [Path('corpora/nottingham/ashover.abc'), ...]

Each file streams into `<file>.part` beside its final name and is renamed only once its
size and sha256 match the registry, so a failed or interrupted download never leaves a
partial or unverified file under a final name. Files already present and verified are
skipped, so running again fetches only what is missing.
"""

import hashlib
import importlib.util
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
from tqdm import tqdm
from urllib3.exceptions import ReadTimeoutError

from abcgen import __version__
from abcgen.errors import AbcgenError

MIRROR_ENV = "ABCGEN_MIRROR"
CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class RemoteCorpus:
    """A named corpus: the address its files live under and the exact bytes of each."""

    name: str
    base_url: str
    files: tuple[RemoteFile, ...]


NOTTINGHAM_COMMIT = "0992bb6cd864f6d4b90d6663e08c0ef53ffaa08f"

NOTTINGHAM = RemoteCorpus(
    name="nottingham",
    base_url=(f"https://raw.githubusercontent.com/jukedeck/nottingham-dataset/{NOTTINGHAM_COMMIT}/ABC_cleaned/"),
    files=(
        RemoteFile("ashover.abc", 19647, "6586eea8dca53866b42721050d11fc1408bdb2cf31a902b41c5c13504139b164"),
        RemoteFile("hpps.abc", 25222, "6d035c6972ac0c204ba79d8128e2d71978ece2214a29ffceeb3e053e27f17db5"),
        RemoteFile("jigs.abc", 129665, "5bb6f621e443bde552540810e3ea53e53531fd22258736e338d795e7a5bdcaf5"),
        RemoteFile("morris.abc", 12002, "cbf60b212c87748dea226c76b72a15db5b4f606bb35a580763e9cd8f7294e7da"),
        RemoteFile("playford.abc", 5101, "070877bc37176e0dedbcd038268d6669399201cd7b58d88b4ab36127528f9c76"),
        RemoteFile("reelsa-c.abc", 37613, "f92ed0e66024e0a5bb7d21fe3172cd50c3fb4cb7f642b4ec7cd5aa8ad0396da8"),
        RemoteFile("reelsd-g.abc", 42433, "33f535569116ec8cfb530c112f4cdc3bfb7fc042c271e0317cf6458bad30dfae"),
        RemoteFile("reelsh-l.abc", 43044, "cb701d4ffe6839cb7a5655bc21785ecb71a72ab63d8560f7be3856f6aedaf7e5"),
        RemoteFile("reelsm-q.abc", 38405, "a99f2967cf47460bba70bae40cd355a220b537a87180131c6d9433750bc446a1"),
        RemoteFile("reelsr-t.abc", 46838, "f80a2c0f37a49b9b0c748e922924d59c40d82758abc5b0f7fc9245d7fd563be0"),
        RemoteFile("reelsu-z.abc", 17203, "d104d7d1bb83eb1ca18f6b944dc22cf9f7bfe5f955d07cd573615985f69c2c1f"),
        RemoteFile("slip.abc", 3838, "da686b3a0de20aab38e64f8c8ec57edace980bab6450a6c388d79a2866e5b16a"),
        RemoteFile("waltzes.abc", 21490, "ffa773d012756be17784ab4a84e0e4618f316be5c6f244f9d60c06b23cd812c6"),
        RemoteFile("xmas.abc", 3519, "05ebc4b856c8c5186bb828641e8f88f723c109d47ba7e3f1e5048b536e091249"),
    ),
)

REGISTRY = {NOTTINGHAM.name: NOTTINGHAM}


# ---------------------------------------------------------------- collections shipped in music21


@dataclass(frozen=True)
class ShippedCollection:
    """An ABC collection that music21 ships inside its package: nothing to download."""

    name: str
    folder: str  # the folder in music21's corpus
    tunes: int  # tunes (X: fields) in its files, before normalising
    source: str
    licence: str
    left_out: tuple[str, ...] = ()  # file names that are not part of the collection

    def files(self) -> list[Path]:
        """The collection's .abc files, read from music21's installed package."""
        folder = music21_corpus_folder() / self.folder
        files = sorted(p for p in folder.glob("*.abc") if p.name not in self.left_out)
        if not files:
            raise AbcgenError(
                f"{self.name}: music21's corpus has no {self.folder}/ folder here ({folder}); "
                "install music21 with its corpus (pip install music21)"
            )
        return files


_MUSIC21_NOTE = "distributed with music21 by permission; see music21/corpus/license.txt"

SHIPPED = {
    collection.name: collection
    for collection in (
        ShippedCollection(
            "oneills-1850",
            "oneills1850",
            2009,
            "O'Neill's Music of Ireland (Chicago, 1903: 1850 melodies), transcribed by volunteers",
            f"1903 book, public domain; transcriptions {_MUSIC21_NOTE}",
        ),
        ShippedCollection(
            "ryans-mammoth",
            "ryansMammoth",
            1059,
            "Ryan's Mammoth Collection (Boston, 1883), one file per tune, transcribed by Ray Davies and others",
            f"1883 book, public domain; transcriptions {_MUSIC21_NOTE}",
        ),
        ShippedCollection(
            "airds-airs",
            "airdsAirs",
            1180,
            "James Aird, A Selection of Scotch, English, Irish and Foreign Airs "
            "(Glasgow, 1778-1803, six volumes), transcribed by Jack Campin",
            f"18th-century books, public domain; transcriptions {_MUSIC21_NOTE}",
        ),
        ShippedCollection(
            "essen",
            "essenFolksong",
            8462,
            "Essen Folk Song Collection (EsAC, H. Schaffrath; mostly German, some Chinese, Dutch, "
            "Lorraine, Luxembourg songs), ABC by Seymour Shlien",
            "non-commercial use only (music21/corpus/essenFolksong/license.txt)",
            left_out=("test0.abc", "test1.abc", "testd.abc", "teste.abc"),
        ),  # music21's test samples
    )
}


def music21_corpus_folder() -> Path:
    """Where music21's corpus lies in the installed package (found without importing music21)."""
    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        raise AbcgenError("music21 is not installed; install it with `pip install music21`")
    return Path(list(spec.submodule_search_locations)[0]) / "corpus"


def known_corpora() -> list[dict]:
    """Every corpus abcgen knows by name: name, tunes, where it comes from, licence, and
    how to get it (`download`, or `music21` for the collections shipped in its package)."""
    rows = [
        {
            "name": NOTTINGHAM.name,
            "tunes": 1034,
            "kind": "download",
            "source": "Nottingham Music Database (abc.sourceforge.net/NMD), cleaned ABC from "
            f"github.com/jukedeck/nottingham-dataset at {NOTTINGHAM_COMMIT[:7]}",
            "licence": "GPL-3.0 (the jukedeck/nottingham-dataset repository)",
        }
    ]
    rows += [
        {"name": c.name, "tunes": c.tunes, "kind": "music21", "source": c.source, "licence": c.licence}
        for c in SHIPPED.values()
    ]
    return rows


def corpus_files(name: str) -> tuple[str, list[Path]] | None:
    """The files of the corpus called `name`, or None when abcgen knows no such name: a
    music21 collection's files in music21's package, or a downloaded corpus's in
    corpora/NAME (an AbcgenError says to download it when it is not there)."""
    if name in SHIPPED:
        return name, SHIPPED[name].files()
    if name in REGISTRY:
        folder = Path("corpora") / name
        if not folder.is_dir():
            raise AbcgenError(
                f"{name} is not downloaded yet (no folder {folder}); "
                f"run `abcgen download {name}`, or give the path of its files"
            )
        return name, sorted(folder.glob("*.abc"))
    return None


@dataclass
class FetchResult:
    """What a download did: every file of the corpus, and which of them were fetched now."""

    corpus: str
    dest: Path
    paths: list[Path]
    downloaded: list[Path]

    @property
    def already_present(self) -> list[Path]:
        return [path for path in self.paths if path not in self.downloaded]


@dataclass(frozen=True)
class _Policy:
    timeout: float | tuple[float, float]
    tries: int
    backoff: float

    @property
    def read_timeout(self) -> float:
        return self.timeout[1] if isinstance(self.timeout, tuple) else self.timeout


_RETRY_HINT = "check your network, or use a mirror with --base-url / ABCGEN_MIRROR, then run again"
_MIRROR_HINT = "check the address given by --base-url / ABCGEN_MIRROR"
_WRONG_FILE_HINT = "the server holds a different file; try another mirror with --base-url"


class _Failure(Exception):
    """Why one attempt failed; a transient failure is worth another try."""

    def __init__(self, cause: str, hint: str = _RETRY_HINT, transient: bool = False):
        super().__init__(cause)
        self.cause = cause
        self.hint = hint
        self.transient = transient


def download(
    name: str | RemoteCorpus = "nottingham",
    dest: str | os.PathLike | None = None,
    base_url: str | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float | tuple[float, float] = (5, 30),
    tries: int = 3,
    backoff: float = 0.5,
) -> list[Path]:
    """Download corpus `name` into `dest` (default corpora/NAME) and return its file paths.

    `base_url` (or the ABCGEN_MIRROR environment variable) replaces the canonical address.
    `timeout` is requests' (connect, read) pair in seconds; connection errors, bodies cut
    short and HTTP 5xx get up to `tries` attempts, `backoff`, 2*`backoff`, ... seconds apart.
    Raises AbcgenError with a one-line message on any failure.
    """
    return fetch(name, dest, base_url, force, progress, timeout, tries, backoff).paths


def fetch(
    name: str | RemoteCorpus = "nottingham",
    dest: str | os.PathLike | None = None,
    base_url: str | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float | tuple[float, float] = (5, 30),
    tries: int = 3,
    backoff: float = 0.5,
) -> FetchResult:
    """Like download(), but also says which files were fetched and which were already there."""
    if isinstance(name, str) and name in SHIPPED:
        files = SHIPPED[name].files()
        return FetchResult(name, files[0].parent, files, [])
    corpus = resolve(name)
    dest = Path(dest) if dest is not None else Path("corpora") / corpus.name
    base_url = base_url or os.environ.get(MIRROR_ENV) or corpus.base_url
    policy = _Policy(timeout, max(1, tries), backoff)
    _make_folder(dest)

    wanted = [remote for remote in corpus.files if force or not _verified(dest / remote.name, remote)]
    with requests.Session() as session, _progress_bar(wanted, corpus.name, progress) as bar:
        session.headers["User-Agent"] = f"abcgen/{__version__}"
        for remote in wanted:
            bar.set_postfix_str(remote.name)
            _fetch_file(session, remote, _join(base_url, remote.name), dest, policy, bar)

    paths = [dest / remote.name for remote in corpus.files]
    return FetchResult(corpus.name, dest, paths, [dest / remote.name for remote in wanted])


def resolve(name: str | RemoteCorpus) -> RemoteCorpus:
    """The registry entry called `name` (a RemoteCorpus is returned as it is)."""
    if isinstance(name, RemoteCorpus):
        return name
    if name not in REGISTRY:
        known = ", ".join([*sorted(REGISTRY), *SHIPPED])
        raise AbcgenError(f"unknown corpus {name!r}; known corpora: {known}")
    return REGISTRY[name]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(path: Path, remote: RemoteFile) -> bool:
    try:
        return path.stat().st_size == remote.size and sha256_of(path) == remote.sha256
    except OSError:
        return False


def _make_folder(dest: Path) -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AbcgenError(f"cannot create folder {dest}: {error.strerror or error}") from error


def _join(base_url: str, filename: str) -> str:
    return base_url.rstrip("/") + "/" + filename


def _progress_bar(files: list[RemoteFile], label: str, enabled: bool) -> tqdm:
    return tqdm(
        total=sum(remote.size for remote in files),
        desc=label,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        leave=False,
        disable=not (enabled and sys.stderr.isatty()),
    )


def _fetch_file(
    session: requests.Session, remote: RemoteFile, url: str, dest: Path, policy: _Policy, bar: tqdm
) -> None:
    """Fetch one file into dest/<name>.part, retrying transient failures, then rename it."""
    part = dest / (remote.name + ".part")
    try:
        for attempt in range(1, policy.tries + 1):
            shown = bar.n
            try:
                _stream(session, remote, url, part, policy, bar)
                break
            except _Failure as failure:
                bar.update(shown - bar.n)  # a failed attempt's bytes do not count
                if not failure.transient or attempt == policy.tries:
                    raise AbcgenError(_message(remote, url, failure, attempt)) from failure
                time.sleep(policy.backoff * 2 ** (attempt - 1))
        os.replace(part, dest / remote.name)
    except OSError as error:
        raise AbcgenError(f"cannot save {remote.name} in {dest}: {error.strerror or error}") from error
    finally:
        part.unlink(missing_ok=True)


def _message(remote: RemoteFile, url: str, failure: _Failure, attempts: int) -> str:
    tried = f" (gave up after {attempts} tries)" if attempts > 1 else ""
    return f"cannot download {remote.name} from {url}: {failure.cause}{tried}; {failure.hint}"


def _stream(session: requests.Session, remote: RemoteFile, url: str, part: Path, policy: _Policy, bar: tqdm) -> None:
    """One attempt: write the body into `part` and check its size and sha256."""
    digest = hashlib.sha256()
    received = 0
    try:
        with session.get(url, stream=True, timeout=policy.timeout) as response:
            _check_status(response)
            with open(part, "wb") as out:
                for chunk in response.iter_content(CHUNK_SIZE):
                    received += len(chunk)
                    if received > remote.size:
                        raise _Failure(f"the server sent more than the expected {remote.size} bytes", _WRONG_FILE_HINT)
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    except requests.exceptions.ChunkedEncodingError as error:
        raise _cut_short(remote) from error
    except requests.RequestException as error:
        raise _explain(error, url, policy) from error

    # Without Content-Length (or with an older urllib3) a short body ends quietly.
    if received < remote.size:
        raise _cut_short(remote)
    if digest.hexdigest() != remote.sha256:
        raise _Failure(
            f"its sha256 {digest.hexdigest()[:12]}... differs from the expected {remote.sha256[:12]}...",
            _WRONG_FILE_HINT,
        )


def _check_status(response: requests.Response) -> None:
    if response.status_code == 200:
        return
    status = f"HTTP {response.status_code} {response.reason or ''}".strip()
    if response.status_code >= 500:
        raise _Failure(f"the server answered {status}", transient=True)
    raise _Failure(f"the server answered {status}", _MIRROR_HINT)


def _cut_short(remote: RemoteFile) -> _Failure:
    return _Failure(f"the connection closed before all {remote.size} bytes arrived", transient=True)


def _explain(error: requests.RequestException, url: str, policy: _Policy) -> _Failure:
    """Turn a requests exception into a short cause; connection failures are transient."""
    host = urlsplit(url).netloc
    if isinstance(error, requests.ConnectTimeout):
        return _Failure(f"connecting to {host} timed out", transient=True)
    # Reads are not retried: each stalled try would cost a whole read timeout.
    if isinstance(error, requests.ReadTimeout) or _caused_by(error, ReadTimeoutError):
        return _Failure(f"the server stopped sending data (nothing for {policy.read_timeout} s)")
    if _caused_by(error, socket.gaierror):
        hint = "check your network connection and the address (--base-url / ABCGEN_MIRROR)"
        return _Failure(f"cannot resolve host {host}", hint, transient=True)
    if _caused_by(error, ConnectionRefusedError):
        hint = "is the server running? check the address (--base-url / ABCGEN_MIRROR)"
        return _Failure(f"connection refused by {host}", hint, transient=True)
    if isinstance(error, requests.ConnectionError):
        return _Failure(f"connection failed ({_innermost(error)})", transient=True)
    if isinstance(
        error, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)
    ):
        return _Failure("not a valid http(s) address", "give --base-url as http://HOST/PATH/")
    return _Failure(f"{type(error).__name__}: {_innermost(error)}")


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and everything behind it: causes, contexts, urllib3 reasons, wrapped args."""
    seen: list[BaseException] = []
    pending = [error]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or any(current is done for done in seen):
            continue
        seen.append(current)
        yield current
        pending += _behind(current)


def _behind(error: BaseException) -> list:
    """What an error wraps, most specific first."""
    links = [getattr(error, "reason", None), error.__cause__, *error.args, error.__context__]
    return [link for link in links if isinstance(link, BaseException)]


def _caused_by(error: BaseException, kind: type) -> bool:
    return any(isinstance(link, kind) for link in _chain(error))


def _innermost(error: BaseException) -> str:
    seen = [error]
    while (behind := _behind(error)) and not any(behind[0] is done for done in seen):
        error = behind[0]
        seen.append(error)
    return str(error) or type(error).__name__
