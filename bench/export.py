"""Export speed: Nottingham tunes to MIDI, MusicXML and SVG, and where the time goes.

    .venv/bin/python -m bench.export [CORPUS] [-n 100] [--jobs 1,2] [--profile]

CORPUS is a folder of .abc files or one file (default: ../shared/corpora/nottingham). The
first N tunes, in file-name order, are converted twice:

1. stage by stage in this process, timing parse (ABC -> music21 score), midi, musicxml
   and svg (verovio engraving the MusicXML) separately;
2. end to end with export_tunes(jobs=J) into a temporary folder, for each J in --jobs:
   what `abcgen export -j J` does, worker start-up and file writing included.

--profile adds the functions that take the most time in step 1 (cProfile).
"""

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from abcgen.export import export_tunes, parse_tune, read_tunes, to_midi, to_musicxml, to_svg
from bench.common import NOTTINGHAM

STAGES = ("parse", "midi", "musicxml", "svg")


def load_tunes(path: Path, count: int):
    files = sorted(path.glob("*.abc")) if path.is_dir() else [path]
    tunes = [tune for file in files for tune in read_tunes(file.read_text(encoding="utf-8"))]
    return tunes[:count]


def time_stages(tunes) -> dict[str, float]:
    seconds = dict.fromkeys(STAGES, 0.0)
    for tune in tunes:
        start = time.perf_counter()
        score = parse_tune(tune)
        parsed = time.perf_counter()
        to_midi(score)
        played = time.perf_counter()
        musicxml = to_musicxml(score)
        written = time.perf_counter()
        to_svg(musicxml)
        engraved = time.perf_counter()
        for stage, (begin, end) in zip(
            STAGES, [(start, parsed), (parsed, played), (played, written), (written, engraved)]
        ):
            seconds[stage] += end - begin
    return seconds


def time_export(tunes, jobs: int) -> tuple[float, int]:
    text = "\n".join(tune.abc for tune in tunes)
    with tempfile.TemporaryDirectory(prefix="abcgen-bench-") as folder:
        start = time.perf_counter()
        report = export_tunes(text, folder, jobs=jobs)
        return time.perf_counter() - start, len(report.written)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=NOTTINGHAM)
    parser.add_argument("-n", type=int, default=100, help="how many tunes")
    parser.add_argument("--jobs", default="1,2", help="worker processes for the end-to-end runs, e.g. 1,2")
    parser.add_argument("--profile", action="store_true", help="show the costliest functions")
    args = parser.parse_args()
    if not args.corpus.exists():
        sys.exit(f"corpus not found at {args.corpus}; pass a folder of .abc files or an .abc file")

    tunes = load_tunes(args.corpus, args.n)
    to_svg(to_musicxml(parse_tune(tunes[0])))  # imports and verovio's fonts, outside the timings
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    seconds = time_stages(tunes)
    if profiler:
        profiler.disable()
    total = sum(seconds.values())
    print(f"{len(tunes)} tunes, one process, stage by stage: {total:.1f} s ({1000 * total / len(tunes):.0f} ms a tune)")
    for stage in STAGES:
        print(f"  {stage:9s} {seconds[stage]:6.1f} s  {100 * seconds[stage] / total:3.0f}%")
    for jobs in (int(value) for value in args.jobs.split(",")):
        wall, files = time_export(tunes, jobs)
        print(f"export_tunes(jobs={jobs}), end to end: {wall:.1f} s for {files} files")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
