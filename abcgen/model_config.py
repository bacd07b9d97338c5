"""A model's shape: its architecture and sizes, as a checkpoint records them. Apart from
abcgen.model so that a model's export (abcgen.inference) is read without importing torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from abcgen.form import FORM_BLOCKS


@dataclass
class ModelConfig:
    vocab_size: int
    arch: str = "lstm"
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.25
    heads: int = 4  # attention heads: lstm-attention, transformer
    window: int = 16  # characters seen at once: lstm-attention, bilstm-window
    kernel: int = 3  # convolution width: conv-lstm
    context: int = 64  # attention span in characters: transformer
    form: int = FORM_BLOCKS  # blocks of bars told beside each character (form.py); 0: none
    form_count: str = "tune"  # bars counted from the tune's start or the part's (form.COUNTS)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        data = {"form": 0, **data}  # written before models read form classes
        return cls(**{k: v for k, v in data.items() if k in known})
