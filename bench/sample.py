"""Sampling benchmarks for the shipped model (or --model):

    .venv/bin/python -m bench.sample [--model PATH] [--runs 5] [--tunes 100] [--validity 200]

1. Cold start: wall time of the whole command `abcgen sample -n 1` in a new process
   (median of --runs), against the 2.5 s target.
2. 100 tunes at temperature 0.8 with --check: wall time (target 15 s) and whether every
   emitted tune passes the check.
3. Validity at temperature 0.8 with --no-check: the share of --validity tunes that pass the
   ABC check (target 95%); and the same for the model alone, without the sampler's bar
   fixing and class temperature.
"""

import argparse
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cold_start(model_args, runs):
    command = [sys.executable, "-m", "abcgen", "sample", "-n", "1", "--seed", "1", *model_args]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tunes", type=int, default=100)
    parser.add_argument("--validity", type=int, default=200)
    args = parser.parse_args()
    model_args = ["--model", args.model] if args.model else []

    median, times = cold_start(model_args, args.runs)
    print(
        f"cold start `abcgen sample -n 1`: median {median:.2f} s "
        f"(runs: {', '.join(f'{t:.2f}' for t in times)}; target 2.5 s)"
    )

    import abcgen
    from abcgen.abc import check_tune

    model = abcgen.load_model(args.model)
    messages = []
    start = time.perf_counter()
    tunes = model.generate(n=args.tunes, temperature=0.8, seed=1, check=True, log=messages.append)
    seconds = time.perf_counter() - start
    failing = sum(not check_tune(t).ok for t in tunes)
    print(
        f"{args.tunes} tunes with --check: {seconds:.1f} s (target 15 s); "
        f"{args.tunes - failing}/{args.tunes} pass the check; regenerations: {messages or 'none'}"
    )

    for label, options in (
        ("--no-check", {}),
        ("--no-check --no-fix-bars --plain-temperature (the model alone)", {"fix_bars": False, "keep_rhythm": False}),
    ):
        start = time.perf_counter()
        raw = model.generate(n=args.validity, temperature=0.8, seed=2, check=False, **options)
        seconds = time.perf_counter() - start
        results = [check_tune(t) for t in raw]
        valid = sum(r.ok for r in results)
        reasons = Counter(r.reason.split(":")[0] for r in results if not r.ok)
        print(
            f"validity with {label}: {valid}/{len(raw)} = {valid / len(raw):.1%} (target 95%); "
            f"generated in {seconds:.1f} s; failures: {dict(reasons.most_common(5))}"
        )


if __name__ == "__main__":
    main()
