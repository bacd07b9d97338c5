"""Training throughput: abcgen's training step against a plain one-hot reference.

    .venv/bin/python -m bench.train_speed [CORPUS] [--steps N]

All train a 2x128 LSTM on the same Nottingham training split with the same batch
(64 streams) and sequence length (128), Adam, in one process, alternating rounds so
that background load hits all alike. The reference is the textbook version:
torch.nn.LSTM (dropout 0.2 between its layers) over a one-hot float input, float32.
abcgen runs twice: as trained by default (reading form classes beside the characters)
and with characters only; each in the precision `--precision auto` picks here.
"""

import argparse
import time

import torch
from torch import nn

from abcgen.corpus import load_corpus
from abcgen.device import use_bf16
from abcgen.form import FORM_BLOCKS, encode_text
from abcgen.model import build_model
from abcgen.model_config import ModelConfig
from abcgen.scoring import make_streams
from abcgen.vocab import Vocab
from bench.common import corpus_path

BATCH, SEQ = 64, 128


REFERENCE_LR = 3e-3  # Adam's learning rate in the reference (issue 16's "competent user")


class Reference(nn.Module):
    """What a competent user writes: torch's stacked LSTM, 2 x 128 with dropout 0.2 between
    the layers, over one-hot float32 characters, a linear layer back to the vocabulary."""

    def __init__(self, vocab_size, dropout=0.2):
        super().__init__()
        self.vocab_size = vocab_size
        self.lstm = nn.LSTM(vocab_size, 128, 2, batch_first=True, dropout=dropout)
        self.head = nn.Linear(128, vocab_size)

    def forward(self, ids, state=None):
        x = nn.functional.one_hot(ids, self.vocab_size).float()
        out, state = self.lstm(x, state)
        return self.head(out), state


def make_stepper(model, inputs, targets, bf16, lr=REFERENCE_LR):
    """One step of stateful truncated BPTT over the streams: Adam, gradient clipping at 1.0;
    the streams start again (state reset) when the next window would run past their end."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    position = {"t": 0, "state": None}

    def step():
        t = position["t"]
        if t + SEQ > inputs.shape[1]:
            t, position["state"] = 0, None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, state = model(inputs[:, t : t + SEQ], position["state"])
        loss = nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets[:, t : t + SEQ].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        position["t"], position["state"] = t + SEQ, tuple(s.detach() for s in state)
        return position["t"] + SEQ > inputs.shape[1]  # True at the end of an epoch

    return step


def time_steps(step, n):
    start = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?")
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    corpus = load_corpus(corpus_path([None, args.corpus] if args.corpus else [None]))
    vocab = Vocab.from_text(corpus.text("train"))
    form_inputs, ids = encode_text(corpus.text("train"), vocab, FORM_BLOCKS)
    inputs, targets = make_streams(ids, BATCH)
    torch.manual_seed(0)
    bf16 = use_bf16("auto", torch.device("cpu"))
    steppers = {
        "abcgen": make_stepper(
            build_model(ModelConfig(vocab_size=len(vocab))), make_streams(ids, BATCH, form_inputs)[0], targets, bf16
        ),
        "no form": make_stepper(build_model(ModelConfig(vocab_size=len(vocab), form=0)), inputs, targets, bf16),
        "reference": make_stepper(Reference(len(vocab)), inputs, targets, False),
    }
    for step in steppers.values():
        step()  # warm-up
    totals = dict.fromkeys(steppers, 0.0)
    for _ in range(args.rounds):
        for name, step in steppers.items():
            totals[name] += time_steps(step, args.steps)
    chars = BATCH * SEQ * args.steps * args.rounds
    speed = {name: chars / seconds for name, seconds in totals.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 autocast: {bf16}")
    print(f"batch {BATCH} x seq {SEQ}, {args.rounds} rounds of {args.steps} steps each")
    for name, value in speed.items():
        print(f"{name:10s} {value:10,.0f} chars/s")
    print(
        f"ratio      {speed['abcgen'] / speed['reference']:.2f}x "
        f"(characters only: {speed['no form'] / speed['reference']:.2f}x)"
    )


if __name__ == "__main__":
    main()
