"""Validation bits per character after the same wall time: abcgen against a plain reference.

    .venv/bin/python bench/quality.py [CORPUS] [--seconds 300]

abcgen trains its default 2x128 LSTM with `abcgen.train.train` (bf16 where supported,
dropout, warm-up and cosine schedule). The reference is the textbook loop from
bench/train_speed.py: one-hot float32 input, constant Adam learning rate, no dropout,
the same streams, batch and sequence length. Both are scored on the same validation
split by the same function.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from abcgen.corpus import load_corpus  # noqa: E402
from abcgen.scoring import known_tunes, make_streams, score_text  # noqa: E402
from abcgen.train import TrainConfig, train  # noqa: E402
from abcgen.vocab import Vocab  # noqa: E402
from bench.common import corpus_path  # noqa: E402
from bench.train_speed import BATCH, SEQ, Reference, make_stepper  # noqa: E402


def train_reference(corpus, vocab, val_ids, seconds):
    """Train the reference for `seconds` of training time; its best validation loss
    over per-epoch evaluations (evaluation time not counted, as for abcgen)."""
    torch.manual_seed(0)
    inputs, targets = make_streams(torch.tensor(vocab.encode(corpus.text("train"))), BATCH)
    steps_per_epoch = inputs.shape[1] // SEQ
    model = Reference(len(vocab))
    step = make_stepper(model, inputs, targets, bf16=False)
    trained, steps, best = 0.0, 0, float("inf")
    while trained < seconds:
        start = time.perf_counter()
        step()
        trained += time.perf_counter() - start
        steps += 1
        if steps % steps_per_epoch == 0 or trained >= seconds:
            best = min(best, score_text(model, val_ids)["loss"])
    return best, steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?")
    parser.add_argument("--seconds", type=float, default=300)
    args = parser.parse_args()
    corpus = load_corpus(corpus_path([None, args.corpus] if args.corpus else [None]))
    vocab = Vocab.from_text(corpus.text("train"))
    val_ids = torch.tensor(vocab.encode("".join(t + "\n\n" for t in known_tunes(corpus.val, vocab))))

    with tempfile.TemporaryDirectory() as out:
        result = train(
            corpus, out, None, TrainConfig(max_time=args.seconds, epochs=None), progress=False, log=lambda m: None
        )
        ours = result.best_val_loss
    theirs, steps = train_reference(corpus, vocab, val_ids, args.seconds)
    ln2 = torch.log(torch.tensor(2.0)).item()
    print(f"{args.seconds:g} s of training each, validation split of {corpus.name}")
    print(f"abcgen     {ours / ln2:.3f} bpc  (best of its evaluations)")
    print(f"reference  {theirs / ln2:.3f} bpc  (best of its evaluations, {steps} steps)")
    print(f"abcgen uses {1 - ours / theirs:.1%} fewer bits per character")


if __name__ == "__main__":
    main()
