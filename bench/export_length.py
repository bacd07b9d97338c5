"""Export time against tune length: one generated reel of 100, 1,000 and 5,000 bars.

    .venv/bin/python -m bench.export_length [--bars 100,1000,5000] [--formats midi,musicxml]
                                            [--profile BARS] [--checkout DIR]

Each tune repeats an 8-bar strain with chord symbols, a pickup, repeats and endings. Prints
seconds per stage (parse, midi, musicxml, svg), per 1,000 bars (linear time keeps that column
flat) and the peak memory of the process so far. --profile BARS shows the functions that take
the most time (cProfile). --checkout DIR times the abcgen of another checkout, e.g. the last
commit's: `git archive HEAD | tar -x -C /tmp/before`, then `--checkout /tmp/before`; this
script then runs itself again in a fresh process with that checkout on PYTHONPATH.
"""

import argparse
import cProfile
import os
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path

STRAIN = [
    '"G"GABc dBGB',
    '"C"cBcd e2dc',
    '"G"BGBd gdBG',
    '"D"A2F2 D4',
    '"G"g2fg edef',
    '"C"gfed cBAG',
    '"D"FGAB cAFA',
    '"G"G2B2 G4',
]


def long_tune(bars: int) -> str:
    """A reel of `bars` bars: strains of 8 bars, each repeated with first and second endings."""
    lines, written = [], 0
    while written < bars:
        lines.append("|:" + "|".join(STRAIN[:6]) + f"|[1 {STRAIN[6]}:|[2 {STRAIN[7]}||")
        written += 8
    return f"X:1\nT:Long Reel {bars}\nM:4/4\nL:1/8\nQ:1/4=120\nK:G\n" + "\n".join(lines) + "\n"


def time_stages(bars: int, formats) -> dict[str, float]:
    from abcgen.export import parse_tune, read_tunes, to_midi, to_musicxml, to_svg

    tune = read_tunes(long_tune(bars))[0]
    seconds, start = {}, time.perf_counter()
    score = parse_tune(tune)
    seconds["parse"] = time.perf_counter() - start
    musicxml = b""
    for stage in formats:
        start = time.perf_counter()
        if stage == "midi":
            to_midi(score)
        elif stage == "musicxml":
            musicxml = to_musicxml(score)
        elif stage == "svg":
            to_svg(musicxml or to_musicxml(score))
        seconds[stage] = time.perf_counter() - start
    return seconds


def in_checkout(checkout: Path, args: argparse.Namespace) -> int:
    """Runs this script again, without --checkout, in a fresh process that imports abcgen from
    `checkout`: run as a file from there, with the checkout first on PYTHONPATH."""
    argv = ["--bars", args.bars, "--formats", args.formats] + (["--profile", str(args.profile)] if args.profile else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, __file__, *argv], cwd=checkout, env=env).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", default="100,1000,5000", help="tune lengths in bars")
    parser.add_argument("--formats", default="midi,musicxml", help="stages after parse: midi,musicxml,svg")
    parser.add_argument("--profile", type=int, help="profile one export of this many bars")
    parser.add_argument("--checkout", type=Path, help="the abcgen checkout to time (default: this one)")
    args = parser.parse_args()
    if args.checkout:
        sys.exit(in_checkout(args.checkout.resolve(), args))
    formats = args.formats.split(",")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(time_stages, args.profile, formats)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        return
    print(
        f"{'bars':>6} "
        + " ".join(f"{stage:>9}" for stage in ["parse", *formats])
        + f" {'total':>8} {'s/1000 bars':>12} {'peak MB':>8}"
    )
    for bars in (int(value) for value in args.bars.split(",")):
        seconds = time_stages(bars, formats)
        total = sum(seconds.values())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        print(
            f"{bars:>6} "
            + " ".join(f"{seconds[stage]:>9.2f}" for stage in seconds)
            + f" {total:>8.2f} {1000 * total / bars:>12.2f} {peak:>8.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
