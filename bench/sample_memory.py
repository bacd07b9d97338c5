"""Peak memory and time of sampling and scoring, per architecture, as `abcgen experiment` does.

    .venv/bin/python -m bench.sample_memory [CORPUS] [--seconds 20] [-n 200] [--archs lstm,gru,...]

For each architecture: train it for --seconds on the corpus (as the experiment does, models
kept in --out so that a second call reuses them), then in a fresh process load the model,
score the test split and sample n tunes with the experiment's settings (temperature 0.8,
no ABC check, no bar fixing). That process reports its peak resident memory (VmHWM)
after loading, after scoring and after sampling, and the time of each stage.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from abcgen.experiment import DEFAULT_ARCHS
from bench.common import corpus_path


def peak_mb() -> float:
    """This process's peak resident memory: VmHWM, which starts afresh at exec (getrusage's
    ru_maxrss does not: it keeps the parent's peak, here the training's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: kilobytes


def child(model_path: str, corpus: str, n: int) -> dict:
    """Runs in the fresh process: load, score, sample; peaks and times."""
    from abcgen.checkpoint import load_checkpoint
    from abcgen.corpus import load_corpus
    from abcgen.sample import TuneModel

    test = load_corpus(corpus).test
    figures = {}
    start = time.perf_counter()
    model = TuneModel(load_checkpoint(model_path))
    figures["loaded_mb"], start = peak_mb(), time.perf_counter()
    model.score(test)
    figures["score_s"], figures["scored_mb"] = time.perf_counter() - start, peak_mb()
    start = time.perf_counter()
    tunes = model.generate(n=n, temperature=0.8, seed=0, check=False, fix_bars=False, keep_rhythm=False)
    figures["sample_s"], figures["sampled_mb"] = time.perf_counter() - start, peak_mb()
    figures["mean_chars"] = sum(map(len, tunes)) / len(tunes)
    figures["cut"] = sum("time limit" in w for w in model.warnings)
    return figures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--archs", default=DEFAULT_ARCHS)
    parser.add_argument("--out", default="runs/sample-memory")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "CORPUS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.n)))
        return
    corpus = str(corpus_path([None, args.corpus] if args.corpus else [None]))
    from abcgen.train import TrainConfig, train

    print(
        f"{args.n} tunes per architecture, models trained {args.seconds:g} s; peak resident memory "
        "(MB) of a fresh process after loading, scoring the test split, sampling"
    )
    for arch in args.archs.split(","):
        out = Path(args.out) / f"{arch}-{args.seconds:g}s"
        if not (out / "best.pt").exists():
            train(
                corpus,
                out,
                {"arch": arch},
                TrainConfig(max_time=args.seconds, epochs=None),
                force=True,
                progress=False,
                log=lambda message: None,
            )
        run = subprocess.run(
            [sys.executable, "-m", "bench.sample_memory", "-n", str(args.n), "--child", str(out / "best.pt"), corpus],
            capture_output=True,
            text=True,
            check=True,
        )
        f = json.loads(run.stdout.strip().splitlines()[-1])
        print(
            f"{arch:15s} loaded {f['loaded_mb']:5.0f}  scored {f['scored_mb']:5.0f} ({f['score_s']:4.1f} s)  "
            f"sampled {f['sampled_mb']:5.0f} ({f['sample_s']:5.1f} s, {f['mean_chars']:.0f} chars a tune"
            f"{', cut at the time limit' if f['cut'] else ''})",
            flush=True,
        )


if __name__ == "__main__":
    main()
