"""Where a model runs and in what precision: shared by training, sampling and evaluation.

Nothing here imports training, so sampling stays free of it. Checkpoints are written with
every tensor on the CPU and read with map_location, so a model trained on one device loads
on any other (see abcgen.checkpoint).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import torch

from abcgen.errors import AbcgenError
from abcgen.options import DEVICE_NAMES


def available(name: str) -> bool:
    if name == "cuda":
        return torch.cuda.is_available()
    if name == "mps":
        return torch.backends.mps.is_available()
    return name == "cpu"


def pick_device(name: str) -> torch.device:
    """The device called `name`: auto is CUDA when there is a GPU, then Apple's MPS, then the CPU."""
    if name == "auto":
        return torch.device(next(kind for kind in ("cuda", "mps", "cpu") if available(kind)))
    if name not in DEVICE_NAMES:
        raise AbcgenError(f"unknown device {name!r}: use one of {', '.join(DEVICE_NAMES)}")
    if not available(name):
        found = "" if name != "cuda" else " (this PyTorch sees no CUDA GPU: torch.cuda.is_available() is False)"
        raise AbcgenError(f"device {name!r} is not available here{found}; use --device cpu or auto")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    """Whether the hardware computes in bf16 natively (autocast to it is then a speed-up)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return False


# Architectures whose recurrent layers have no fused kernel on the CPU: torch runs its GRU
# there as two small matrix products per time step (oneDNN's fused RNN serves only the LSTM),
# and bf16 autocast adds a cast of the weights at every step: 3-4x slower than the LSTM
# under bf16 (issue 16), so `auto` keeps them in fp32 on the CPU (bench/results/scale.md).
NO_FUSED_BF16_ON_CPU = ("gru",)


def use_bf16(precision: str, device: torch.device, arch: str | None = None) -> bool:
    """bf16 autocast where the hardware has fast bf16 (auto), always (bf16: refused where it
    has none) or never (fp32). arch: the model's architecture; auto keeps fp32 for those
    that bf16 slows down (NO_FUSED_BF16_ON_CPU on a CPU)."""
    if precision == "fp32":
        return False
    supported = bf16_supported(device)
    if precision == "bf16" and not supported:
        raise AbcgenError(f"bf16 is not supported on this {device.type}; use --precision fp32")
    if precision == "auto" and device.type == "cpu" and arch in NO_FUSED_BF16_ON_CPU:
        return False
    return supported


# ---------------------------------------------------------------- CPU threads for training

# Torch's own thread count when abcgen was imported (one per core unless OMP_NUM_THREADS says).
TORCH_THREADS = torch.get_num_threads()
# A core counts as free when other processes use less than this much of it: a second
# thread is worth 1.1-1.2x on an idle 2-core machine, but when another process holds a
# core, torch's threads wait on each other and training runs 6-34x slower than on one
# thread (bench/results/scale.md), so a core half used by others is not free.
FREE_BELOW = 0.2


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def busy_seconds() -> float | None:
    """CPU time all processes have spent busy since boot (every core summed), from
    /proc/stat; None where there is none (not Linux)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(value) for value in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


class TrainingThreads:
    """How many CPU threads training uses: one per core that other processes leave free
    (at least 1, at most torch's own count), chosen at the start and again whenever
    update() is called (after every validation), so a run slows down gracefully when other
    work arrives and speeds up again when it leaves.

    fixed: a thread count to keep (TrainConfig.threads); with OMP_NUM_THREADS set, torch's
    count stays as that variable made it. On a GPU the choice changes nothing that matters.
    As a context manager (scoring a text: TuneModel.score), it puts torch's count back after.
    """

    def __init__(self, fixed: int | None = None, processes: int = 1):
        self.previous = torch.get_num_threads()
        self.fixed = fixed or (self.previous if os.environ.get("OMP_NUM_THREADS") else None)
        self.most = max(1, min(TORCH_THREADS, cpu_cores() // max(1, processes)))
        self.mark: tuple[float | None, float, float] | None = None  # (busy, own CPU, wall) seconds
        if self.fixed:
            torch.set_num_threads(self.fixed)
        else:
            self.set(self.others_now())

    def others_now(self) -> float:
        """Cores other processes use now: measured over a tenth of a second of our idling,
        or the 1-minute load average where /proc/stat is missing."""
        before = busy_seconds()
        if before is None:
            return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        start = time.monotonic()
        time.sleep(0.1)
        after = busy_seconds()
        others = ((after if after is not None else before) - before) / (time.monotonic() - start)
        self.remember()
        return others

    def remember(self) -> None:
        self.mark = (busy_seconds(), time.process_time(), time.monotonic())

    def set(self, others: float) -> None:
        taken = max(0, math.ceil(others - FREE_BELOW))  # cores others hold, in part or whole
        torch.set_num_threads(max(1, min(self.most, cpu_cores() - taken)))

    def update(self) -> int:
        """Choose again from what other processes used since the last choice (the machine's
        busy time less this process's own); returns the thread count now in use."""
        if not self.fixed and self.mark is not None:
            busy, own, wall = self.mark
            seconds = time.monotonic() - wall
            now = busy_seconds() if busy is not None and seconds > 0.5 else None
            if busy is not None and now is not None:
                self.set(max(0.0, (now - busy) - (time.process_time() - own)) / seconds)
                self.remember()
        return torch.get_num_threads()

    def restore(self) -> None:
        torch.set_num_threads(self.previous)

    def __enter__(self) -> TrainingThreads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def cpu_tensors(obj: Any) -> Any:
    """obj (nested dicts, lists and tuples of tensors and plain data) with every tensor on
    the CPU: what a checkpoint holds, whatever device trained it."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {key: cpu_tensors(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_tensors(value) for value in obj)
    return obj
