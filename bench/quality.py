"""Validation bits per character after the same wall time: abcgen against a strong reference.

    .venv/bin/python -m bench.quality [CORPUS] [--seconds 300] [--side both|abcgen|reference]
                                      [--set lr=8e-3 --set dropout=0.1 ...] [--threads N]

abcgen trains its default model with `abcgen.train.train` and `--max-time SECONDS`, which
counts everything the training loop does (steps, validation, checkpoints). The reference is
what a competent user writes in 60 lines (issue 16): torch.nn.LSTM, 2 layers of 128 with
dropout 0.2 between them, over one-hot float32 characters; Adam at 3e-3; gradient clipping
at 1.0; 64 streams of 128 steps of stateful truncated back-propagation; the validation split
scored after every epoch and at the end, that time counted against its budget. Both are
scored on the same validation tunes by the same function (abcgen.scoring.score_text), and
both report the best of their evaluations. The two run one after the other in one process.

--set changes one abcgen option for exploring (a TrainConfig field such as lr, batch_size,
min_lr_ratio, or a model option such as dropout, form); --side runs one of the two only.
--parallel runs the two at the same time instead, each in its own process on one thread:
on a machine that other jobs share, both then meet the same load.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from abcgen.corpus import load_corpus
from abcgen.model_config import ModelConfig
from abcgen.scoring import LN2, known_tunes, make_streams, score_text
from abcgen.train import TrainConfig, train
from abcgen.vocab import Vocab
from bench.common import corpus_path
from bench.train_speed import BATCH, Reference, make_stepper


def train_reference(corpus, vocab, val_ids, seconds):
    """Train the reference for `seconds` of wall time, validation included; its best
    validation loss over the evaluations after each epoch and at the end, and its steps."""
    torch.manual_seed(0)
    inputs, targets = make_streams(torch.tensor(vocab.encode(corpus.text("train"))), BATCH)
    model = Reference(len(vocab))
    step = make_stepper(model, inputs, targets, bf16=False)
    start, steps, best, evaluations = time.perf_counter(), 0, float("inf"), 0
    while True:
        model.train()
        epoch_done = step()
        steps += 1
        out_of_time = time.perf_counter() - start >= seconds
        if epoch_done or out_of_time:
            best = min(best, score_text(model, val_ids)["loss"])
            evaluations += 1
        if out_of_time or time.perf_counter() - start >= seconds:
            return best, steps, evaluations, time.perf_counter() - start


def parse_sets(pairs):
    """--set key=value pairs split into TrainConfig and ModelConfig overrides."""
    train_fields = TrainConfig.__dataclass_fields__
    model_fields = ModelConfig.__dataclass_fields__
    train_options, model_options = {}, {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        fields = train_fields if key in train_fields else model_fields if key in model_fields else None
        if fields is None:
            sys.exit(f"--set {pair}: {key} is neither a TrainConfig nor a ModelConfig field")
        default = (
            getattr(TrainConfig(), key, None) if fields is train_fields else getattr(ModelConfig(vocab_size=1), key)
        )
        kind = type(default) if default is not None else float
        (train_options if fields is train_fields else model_options)[key] = kind(value)
    return train_options, model_options


def parallel(args):
    """Both sides at once, each a process of this script on one thread."""
    base = (
        [sys.executable, "-m", "bench.quality"]
        + ([args.corpus] if args.corpus else [])
        + ["--seconds", str(args.seconds), "--threads", "1"]
        + [f"--set={pair}" for pair in args.set]
    )
    runs = {
        side: subprocess.Popen(base + ["--side", side], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for side in ("abcgen", "reference")
    }
    losses = {}
    for side, run in runs.items():
        out, err = run.communicate()
        if run.returncode:
            sys.exit(f"{side} failed: {err.strip().splitlines()[-1] if err.strip() else run.returncode}")
        print(out.strip().splitlines()[-1] if side == "reference" else out.strip(), flush=True)
        losses[side] = float(next(line for line in err.splitlines() if line.startswith(side + ":")).split(":")[1])
    print(
        f"abcgen uses {1 - losses['abcgen'] / losses['reference']:.1%} fewer bits per character "
        "(both at once, one thread each)"
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--side", choices=("both", "abcgen", "reference"), default="both")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="an abcgen training or model option (exploring)"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: abcgen's choice)")
    parser.add_argument("--parallel", action="store_true", help="both sides at once, one thread each")
    args = parser.parse_args()
    if args.parallel:
        return parallel(args)
    train_options, model_options = parse_sets(args.set)
    if args.threads:  # both sides: the reference through torch, abcgen through its own choice
        torch.set_num_threads(args.threads)
        train_options["threads"] = args.threads
    corpus = load_corpus(corpus_path([None, args.corpus] if args.corpus else [None]))
    vocab = Vocab.from_text(corpus.text("train"))
    val_ids = torch.tensor(vocab.encode("".join(t + "\n\n" for t in known_tunes(corpus.val, vocab))))
    print(
        f"{args.seconds:g} s of training each, validation split of {corpus.name} "
        f"({len(val_ids):,} characters); torch {torch.__version__}, {torch.get_num_threads()} threads "
        f"at the start; {' '.join(args.set) or 'abcgen defaults'}",
        flush=True,
    )

    ours = theirs = None
    if args.side in ("both", "abcgen"):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            config = TrainConfig(**{"epochs": None, **train_options, "max_time": args.seconds})
            result = train(corpus, out, model_options or None, config, progress=False, log=lambda m: None)
            ours = result.best_val_loss
            metrics = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
            print(f"abcgen:{ours!r}", file=sys.stderr)
            print(
                f"abcgen     {ours / LN2:.3f} bpc  (best of its {len(metrics)} evaluations; {result.epochs} "
                f"epochs, {metrics[-1]['step']} steps, {time.perf_counter() - start:.0f} s wall clock with "
                f"set-up; threads {sorted({m['threads'] for m in metrics})})",
                flush=True,
            )
    if args.side in ("both", "reference"):
        theirs, steps, evaluations, wall = train_reference(corpus, vocab, val_ids, args.seconds)
        print(f"reference:{theirs!r}", file=sys.stderr)
        print(
            f"reference  {theirs / LN2:.3f} bpc  (best of its {evaluations} evaluations, {steps} steps, {wall:.0f} s)",
            flush=True,
        )
    if ours is not None and theirs is not None:
        print(f"abcgen uses {1 - ours / theirs:.1%} fewer bits per character")


if __name__ == "__main__":
    main()
