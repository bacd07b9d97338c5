"""Where a model runs and in what precision: shared by training, sampling and evaluation.

Nothing here imports training, so sampling stays free of it. Checkpoints are written with
every tensor on the CPU and read with map_location, so a model trained on one device loads
on any other (see abcgen.checkpoint).
"""

from __future__ import annotations

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


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast where the hardware has fast bf16 (auto), always (bf16: refused where it
    has none) or never (fp32)."""
    if precision == "fp32":
        return False
    supported = bf16_supported(device)
    if precision == "bf16" and not supported:
        raise AbcgenError(f"bf16 is not supported on this {device.type}; use --precision fp32")
    return supported


def cpu_tensors(obj):
    """obj (nested dicts, lists and tuples of tensors and plain data) with every tensor on
    the CPU: what a checkpoint holds, whatever device trained it."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {key: cpu_tensors(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_tensors(value) for value in obj)
    return obj
