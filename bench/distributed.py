"""Devices and distributed training: throughput, time to quality, checkpoints between devices.

    .venv/bin/python -m bench.distributed cpu CORPUS [--seconds 60]
        training characters per second of the default model (2 x 128, batch 16) in one process
        (with torch's thread count, then with 1 thread) and in 2 processes of 1 thread each on
        2 cores (DDP over gloo, as `--nproc 2` starts them, the same global batch), on this CPU.
    python3 -m bench.distributed gpu CORPUS_PICKLE [--seconds 20] [--out DIR]
        on a CUDA machine: characters per second for 2 x 128 and 3 x 512 at batch 64 and 256
        (bf16 autocast where the GPU has it), the time the default model takes to reach the
        shipped model's validation bits per character, and checkpoints moved both ways between
        the GPU and the CPU (sampling scored on the CPU from a GPU model; a GPU run resumed on
        the CPU and a CPU run resumed on the GPU). CORPUS_PICKLE: a pickled abcgen Corpus
        (made with pickle.dump(load_corpus(PATH), file)), so that the GPU machine needs
        neither music21 nor the corpus files.

Prints one JSON object per measurement; the figures go to bench/results/scale.md by hand, with
the command and the card (or CPU) that gave them.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import time
from pathlib import Path

import torch

from abcgen.checkpoint import load_checkpoint
from abcgen.scoring import known_tunes, score_text
from abcgen.train import TrainConfig, train

SHIPPED_VAL_BPC = 1.452  # the shipped model's best validation bits per character (README)


def say(**figures):
    print(json.dumps(figures), flush=True)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]


def throughput(corpus, out: Path, model: dict, seconds: float, **options) -> dict:
    config = TrainConfig(epochs=None, max_time=seconds, **options)
    started = time.perf_counter()
    result = train(corpus, out, model, config, force=True, progress=False, log=lambda m: None)
    history = metrics(out)
    speeds = [m["chars_per_s"] for m in history[1:]] or [history[0]["chars_per_s"]]  # first epoch warms up
    return {
        "chars_per_s": round(sum(speeds) / len(speeds)),
        "steps": history[-1]["step"],
        "val_bpc": round(result.best_val_loss / math.log(2), 3),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def cpu(args):
    """1 and 2 processes alternately (--repeats times each), so that other load on the
    machine falls on both alike."""
    from abcgen.corpus import load_corpus
    from abcgen.distributed import launch_training

    corpus = load_corpus(args.corpus)
    out = Path(args.out)
    model = {"layers": 2, "hidden": 128}
    options = {"batch_size": 16, "device": "cpu", "seed": 0}
    threads = torch.get_num_threads()
    for repeat in range(args.repeats):
        for count in sorted({threads, 1}, reverse=True):
            torch.set_num_threads(count)
            one = throughput(corpus, out / "cpu-1", model, args.seconds, **options)
            say(what=f"cpu, 1 process, {count} thread(s)", repeat=repeat, **one)
        torch.set_num_threads(threads)
        started = time.perf_counter()
        result = launch_training(
            2,
            args.corpus,
            out / "cpu-2",
            model,
            TrainConfig(epochs=None, max_time=args.seconds, **options),
            force=True,
            progress=False,
        )
        history = metrics(out / "cpu-2")
        speeds = [m["chars_per_s"] for m in history[1:]] or [history[0]["chars_per_s"]]
        say(
            what="cpu, 2 processes (gloo), 1 thread each",
            repeat=repeat,
            chars_per_s=round(sum(speeds) / len(speeds)),
            steps=history[-1]["step"],
            val_bpc=round(result.best_val_loss / math.log(2), 3),
            wall_s=round(time.perf_counter() - started, 1),
        )


def gpu(args):
    assert torch.cuda.is_available(), "no CUDA GPU here"
    corpus = pickle.loads(Path(args.corpus).read_bytes())
    out = Path(args.out)
    say(what="device", card=torch.cuda.get_device_name(0), torch=torch.__version__, bf16=torch.cuda.is_bf16_supported())
    for layers, hidden in ((2, 128), (3, 512)):
        for batch in (64, 256):
            for precision in args.precisions.split(","):
                figures = throughput(
                    corpus,
                    out / f"t{layers}x{hidden}b{batch}{precision}",
                    {"layers": layers, "hidden": hidden},
                    args.seconds,
                    batch_size=batch,
                    device="cuda",
                    precision=precision,
                    seed=0,
                )
                say(what=f"cuda {layers} x {hidden}, batch {batch}, precision {precision}", **figures)

    # Time to the shipped model's quality: its recipe (90 epochs, batch 16), on the GPU.
    run = out / "to-quality"
    result = train(
        corpus,
        run,
        {},
        TrainConfig(epochs=90, max_time=args.quality_limit, device="cuda", seed=0),
        force=True,
        progress=False,
        log=lambda m: None,
    )
    reached = next((m for m in metrics(run) if m["val_bpc"] <= SHIPPED_VAL_BPC), None)
    say(
        what="cuda, default model and recipe, to the shipped model's validation bpc",
        target_bpc=SHIPPED_VAL_BPC,
        reached_at_s=reached and reached["elapsed_s"],
        reached_at_epoch=reached and reached["epoch"],
        best_bpc=round(result.best_val_loss / math.log(2), 3),
        epochs=result.epochs,
        train_s=round(result.elapsed_s, 1),
        stopped=result.stopped_because,
    )

    # Checkpoints between devices: the GPU model scored on the CPU ...
    checkpoint = load_checkpoint(run / "best.pt", device="cpu")
    from abcgen.form import encode_text

    config = checkpoint.model.config
    val = "".join(t + "\n\n" for t in known_tunes(corpus.val, checkpoint.vocab))
    inputs, ids = encode_text(val, checkpoint.vocab, config.form, config.form_count)
    on_cpu = score_text(checkpoint.model, ids, inputs)["bpc"]
    say(
        what="GPU-trained best.pt scored on the CPU (fp32)",
        val_bpc_cpu=round(on_cpu, 4),
        val_bpc_gpu_recorded=round(result.best_val_loss / math.log(2), 4),
    )
    # ... a GPU run resumed on the CPU, and a CPU run resumed on the GPU.
    small = {"layers": 1, "hidden": 64}
    for first, then in (("cuda", "cpu"), ("cpu", "cuda")):
        folder = out / f"resume-{first}-{then}"
        train(
            corpus,
            folder,
            small,
            TrainConfig(epochs=1, device=first, seed=0),
            force=True,
            progress=False,
            log=lambda m: None,
        )
        again = train(
            corpus,
            folder,
            small,
            TrainConfig(epochs=2, device=then, seed=0),
            resume=True,
            progress=False,
            log=lambda m: None,
        )
        say(
            what=f"trained 1 epoch on {first}, resumed for a 2nd on {then}",
            epochs=again.epochs,
            val_bpc=round(again.best_val_loss / math.log(2), 3),
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["cpu", "gpu"])
    parser.add_argument("corpus")
    parser.add_argument("--seconds", type=float, default=20, help="training seconds per throughput run")
    parser.add_argument(
        "--quality-limit", type=float, default=240, help="gpu: longest training for the time-to-quality run"
    )
    parser.add_argument("--repeats", type=int, default=2, help="cpu: runs of each, alternately")
    parser.add_argument("--precisions", default="auto,fp32", help="gpu: precisions to time")
    parser.add_argument("--out", default="runs/bench-distributed")
    args = parser.parse_args()
    (cpu if args.mode == "cpu" else gpu)(args)


if __name__ == "__main__":
    main()
