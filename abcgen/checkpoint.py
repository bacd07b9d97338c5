"""One self-contained checkpoint file per model: config, vocabulary, weights, metadata.

Checkpoints hold only tensors and plain Python data, and are always read with
torch.load(weights_only=True), so opening one can never run code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch

from abcgen import __version__
from abcgen.errors import AbcgenError
from abcgen.files import write_bytes_atomic
from abcgen.model import CharModel, build_model
from abcgen.model_config import ModelConfig
from abcgen.vocab import Vocab

FORMAT = "abcgen-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    model: CharModel
    vocab: Vocab
    meta: dict = field(default_factory=dict)
    training: dict | None = None  # optimizer, schedule, RNG and stream state (last.pt only)

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def save_checkpoint(path: Path, model: CharModel, vocab: Vocab, meta: dict, training: dict | None = None) -> None:
    """Write the checkpoint atomically: a temporary file beside it, then a rename."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "vocab": vocab.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": {**meta, "abcgen_version": __version__},
    }
    if training is not None:
        payload["training"] = training
    atomic_torch_save(payload, Path(path))


def atomic_torch_save(obj: object, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def _load_problem(error: Exception) -> str:
    """Why torch.load refused a file, in a few words."""
    if str(error).strip().startswith("Weights only load failed"):
        return "it holds objects that only an unsafe load would run, and abcgen never does that"
    return "the file is truncated or corrupt"


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint; any problem with the file becomes one clear AbcgenError."""
    path = Path(path)
    if not path.is_file():
        raise AbcgenError(f"model file {path} does not exist; train one with `abcgen train`")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise AbcgenError(f"{path} is not a readable abcgen model: {_load_problem(error)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AbcgenError(f"{path} is not an abcgen model file")
    try:
        config = ModelConfig.from_dict(payload["config"])
        model = build_model(config)
        model.load_state_dict(payload["state_dict"])
        vocab = Vocab.from_dict(payload["vocab"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise AbcgenError(f"{path} is a damaged abcgen model: {str(error)[:200]}") from None
    model.to(device).eval()
    return Checkpoint(model, vocab, payload.get("meta", {}), payload.get("training"))
