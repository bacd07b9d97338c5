"""Training speed on a loaded machine: torch's thread count against the cores left free.

    .venv/bin/python -m bench.train_threads [CORPUS] [--seconds 20] [--load 0,1]

For each load (that many busy-looping processes started beside training, each taking a
whole core), trains the default model for --seconds with 1 thread, with torch's own count
(one per core) and with abcgen's choice (TrainConfig.threads=None: device.TrainingThreads),
and prints the training characters per second from metrics.jsonl and the threads used.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from abcgen.corpus import load_corpus
from abcgen.device import TORCH_THREADS
from abcgen.train import TrainConfig, train
from bench.common import corpus_path


def speed(corpus, seconds: float, threads: int | None) -> tuple[float, list]:
    """Mean training characters per second over the run's evaluations, threads used."""
    with tempfile.TemporaryDirectory() as out:
        train(
            corpus,
            out,
            None,
            TrainConfig(max_time=seconds, epochs=None, threads=threads),
            progress=False,
            log=lambda message: None,
        )
        metrics = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return sum(m["chars_per_s"] for m in metrics) / len(metrics), sorted({m["threads"] for m in metrics})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--load", default="0,1", help="busy processes beside training, per round")
    args = parser.parse_args()
    corpus = load_corpus(corpus_path([None, args.corpus] if args.corpus else [None]))
    print(
        f"{os.cpu_count()} cores, torch's own count {TORCH_THREADS} threads; load average "
        f"{os.getloadavg()[0]:.2f} before; {args.seconds:g} s of training per run"
    )
    for load in (int(x) for x in args.load.split(",")):
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
        try:
            for name, threads in (
                ("1 thread", 1),
                (f"{TORCH_THREADS} threads", TORCH_THREADS),
                ("abcgen's choice", None),
            ):
                chars, used = speed(corpus, args.seconds, threads)
                print(
                    f"{load} busy process(es)  {name:16s} {chars:10,.0f} chars/s  (threads used: "
                    f"{', '.join(map(str, used))})",
                    flush=True,
                )
        finally:
            for process in busy:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()
