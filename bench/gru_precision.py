"""Why the GRU trains slower than the LSTM on a CPU, in each precision.

    .venv/bin/python -m bench.gru_precision [--steps 10]

Times a training step (batch 16 x 128 characters, abcgen's CharRNN over the default
inputs) of the LSTM and the GRU in fp32 and, where the CPU computes bf16 natively, under
bf16 autocast; and counts the operators one step runs (torch profiler): a fused recurrent
kernel is one operator per layer, an unfused one a few per time step.
"""

import argparse
import time

import torch
from torch import nn

from abcgen.device import bf16_supported
from abcgen.model import build_model
from abcgen.model_config import ModelConfig

VOCAB, BATCH, SEQ = 90, 16, 128


def step_fn(model, bf16):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ + 1))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, _ = model(ids[:, :-1])
        loss = nn.functional.cross_entropy(logits.float().reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    precisions = [False] + ([True] if bf16_supported(torch.device("cpu")) else [])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16 on this CPU: "
        f"{bf16_supported(torch.device('cpu'))}; batch {BATCH} x {SEQ}, form inputs off"
    )
    for arch in ("lstm", "gru"):
        for bf16 in precisions:
            torch.manual_seed(0)
            step = step_fn(build_model(ModelConfig(vocab_size=VOCAB, arch=arch, form=0)), bf16)
            step()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            seconds = (time.perf_counter() - start) / args.steps
            with torch.profiler.profile() as profile:
                step()
            events = profile.key_averages()
            recurrent = [e.key for e in events if "rnn" in e.key.lower() and "mkldnn" in e.key.lower()]
            print(
                f"{arch:5s} {'bf16' if bf16 else 'fp32'}  {BATCH * SEQ / seconds:9,.0f} chars/s  "
                f"{sum(e.count for e in events):6,} operators a step  fused kernel: "
                f"{', '.join(sorted(set(recurrent))) or 'none'}",
                flush=True,
            )


if __name__ == "__main__":
    main()
