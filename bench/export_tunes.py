"""`abcgen export` of a 100-tune tunebook, end to end, and where the time goes.

    .venv/bin/python -m bench.export_tunes [CORPUS] [-n 100] [--jobs 0,1] [--checkout DIR]...

Makes a tunebook as thesession.org writes them (`X: 1`, `T:`, `R: jig`, `M:`, `L:`,
`K: Gmaj`, the body as the source has it, chord symbols included) from N tunes spread
evenly over the corpus (default: ../shared/corpora/nottingham, read, not copied), then:

1. times `python -m abcgen export BOOK -o TMP -q -j J` in a fresh process for each J of
   --jobs (0: abcgen's default, a worker per 10 tunes up to one per core) and each
   --checkout (default: this one; give --checkout twice, e.g. the last commit's `git archive
   HEAD | tar -x -C /tmp/before` and this one, to compare them side by side in one run),
   --repeat times each, alternating, and prints the fastest and every run;
2. shows where the time goes, for each checkout: starting Python with the CLI imported,
   importing music21, a spawned worker process ready with music21 imported (what each
   of export's workers pays before its first tune), and the four stages of all N tunes
   in one process: parse (ABC to a music21 score), midi, musicxml, svg (verovio).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTTINGHAM = ROOT.parent / "shared" / "corpora" / "nottingham"
RHYTHMS = {"6/8": "jig", "9/8": "slip jig", "12/8": "slide", "3/4": "waltz", "2/4": "polka"}
MODES = {"": "maj", "m": "min", "min": "min", "maj": "maj"}


def session_style(tune: str, number: int, hornpipe: bool) -> str:
    """One tune with a header as thesession.org writes it; comments and S:, Y:, P: dropped."""
    header, body = re.split(r"(?m)^(?=K:)", tune, maxsplit=1)
    fields = dict(re.findall(r"(?m)^([A-Z]):\s*(.*?)\s*$", header))
    key = re.match(r"([A-G][#b]?)\s*([A-Za-z]*)(.*)", body[2:].split("\n")[0].strip())
    mode = MODES.get(key[2].lower(), key[2].lower()[:3])
    rhythm = "hornpipe" if hornpipe else RHYTHMS.get(fields.get("M", ""), "reel")
    lines = [
        f"X: {number}",
        f"T: {fields.get('T', 'Untitled')}",
        f"R: {rhythm}",
        f"M: {fields.get('M', '4/4')}",
        f"L: {fields.get('L', '1/8')}",
        f"K: {key[1]}{mode}{key[3]}",
    ]
    lines += [line for line in body.split("\n")[1:] if line.strip() and not re.match(r"%|[SYP]:", line)]
    return "\n".join(lines) + "\n"


def tunebook(corpus: Path, count: int) -> str:
    """`count` tunes spread evenly over the corpus's files (in name order)."""
    tunes = []
    for file in sorted(corpus.glob("*.abc")) if corpus.is_dir() else [corpus]:
        text = file.read_text(encoding="utf-8", errors="replace")
        tunes += [(tune, file.stem == "hpps") for tune in re.split(r"(?m)^(?=X:)", text) if re.search(r"(?m)^K:", tune)]
    chosen = [tunes[index * len(tunes) // count] for index in range(min(count, len(tunes)))]
    return "\n".join(session_style(tune, number, hornpipe) for number, (tune, hornpipe) in enumerate(chosen, 1))


def time_cli(checkout: Path, book: Path, jobs: int) -> tuple[float, int, int]:
    """(seconds, files written, exit status) of one `abcgen export` in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="abcgen-bench-") as out:
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "abcgen", "export", str(book), "-o", out, "-q", "-j", str(jobs)],
            cwd=checkout,
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(checkout)),
        )
        seconds = time.perf_counter() - start
        return seconds, len(os.listdir(out)), result.returncode


def python_seconds(checkout: Path, code: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code], cwd=checkout, check=True, env=dict(os.environ, PYTHONPATH=str(checkout))
    )
    return time.perf_counter() - start


WORKER_READY = """
import multiprocessing, time
from concurrent.futures import ProcessPoolExecutor
def ready():
    import abcgen.export, music21
if __name__ == "__main__":
    start = time.perf_counter()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(ready).result()
    print(time.perf_counter() - start)
"""

STAGES = """
import sys
from pathlib import Path
from abcgen.export import parse_tune, to_musicxml, to_svg
from bench.export import load_tunes, time_stages
tunes = load_tunes(Path(sys.argv[1]), 10**6)
to_svg(to_musicxml(parse_tune(tunes[0])))  # imports and verovio's fonts, outside the timings
print(" ".join(f"{stage} {value:.2f}" for stage, value in time_stages(tunes).items()))
"""


def breakdown(checkout: Path, book: Path) -> str:
    cli = python_seconds(checkout, "import abcgen.cli")
    music21 = python_seconds(checkout, "import music21") - python_seconds(checkout, "pass")
    script = book.with_name("ready.py")
    script.write_text(WORKER_READY)
    ready = subprocess.run(
        [sys.executable, str(script)],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(checkout)),
    ).stdout.strip()
    stages = subprocess.run(
        [sys.executable, "-c", STAGES, str(book)],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(checkout)),
    ).stdout.strip()
    return (
        f"python + CLI import {cli:.2f} s; music21 import {music21:.2f} s; "
        f"a spawned worker ready {float(ready):.2f} s; stages in one process (s): {stages}"
    )


def run(args, checkouts: list[Path], book: Path) -> None:
    if args.save:
        args.save.write_text(book.read_text(encoding="utf-8"), encoding="utf-8")
    print(
        f"{args.n} tunes from {args.corpus}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start"
    )
    runs = {(checkout, jobs): [] for checkout in checkouts for jobs in map(int, args.jobs.split(","))}
    for _ in range(args.repeat):
        for (checkout, jobs), seconds in runs.items():
            elapsed, files, status = time_cli(checkout, book, jobs)
            seconds.append(elapsed)
            print(f"  {checkout}  -j {jobs}: {elapsed:.2f} s, {files} files, exit {status}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.repeat:
        print(f"\nfastest of {args.repeat}:")
        for (checkout, jobs), seconds in runs.items():
            print(f"  {checkout}  -j {jobs}: {min(seconds):.2f} s")
    if not args.no_breakdown:
        for checkout in checkouts:
            print(f"\n{checkout}: {breakdown(checkout, book)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=NOTTINGHAM)
    parser.add_argument("-n", type=int, default=100, help="tunes in the tunebook")
    parser.add_argument("--jobs", default="0,1", help="values of export's --jobs to time, e.g. 0,1,2")
    parser.add_argument(
        "--checkout", type=Path, action="append", help="abcgen checkout to time (repeat to compare; default: this one)"
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs of each command")
    parser.add_argument("--no-breakdown", action="store_true", help="time the command only")
    parser.add_argument("--save", type=Path, help="also write the tunebook to this file")
    args = parser.parse_args()
    if not args.corpus.exists():
        sys.exit(f"corpus not found at {args.corpus}; pass a folder of .abc files or an .abc file")
    checkouts = [path.resolve() for path in args.checkout or [ROOT]]
    with tempfile.TemporaryDirectory(prefix="abcgen-bench-") as folder:
        book = Path(folder) / "tunebook.abc"
        book.write_text(tunebook(args.corpus, args.n), encoding="utf-8")
        run(args, checkouts, book)


if __name__ == "__main__":
    main()
