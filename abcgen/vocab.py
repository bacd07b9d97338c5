"""The character vocabulary: characters <-> ids, one-hot encoding, and a plain-dict
form that is stored inside checkpoints."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, SupportsInt

from abcgen.errors import AbcgenError

if TYPE_CHECKING:
    import torch


class Vocab:
    """A fixed, sorted set of characters, each with an integer id."""

    def __init__(self, chars: Iterable[str]):
        self.chars = sorted(set(chars))
        self.index = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls(text)

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: str) -> bool:
        return ch in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def unknown(self, text: str) -> list[str]:
        """The characters of text that the vocabulary does not have, sorted."""
        return sorted(set(text) - self.index.keys())

    def encode(self, text: str) -> list[int]:
        """Ids of text; raises AbcgenError naming any characters not in the vocabulary."""
        missing = self.unknown(text)
        if missing:
            shown = " ".join(repr(ch) for ch in missing)
            raise AbcgenError(f"characters not in the model's vocabulary: {shown}")
        return [self.index[ch] for ch in text]

    def decode(self, ids: Iterable[SupportsInt]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def one_hot(self, text: str) -> torch.Tensor:
        """A (len(text), len(vocab)) float tensor with a single 1 per row."""
        import torch  # here, not at the top: reading a vocabulary needs no torch

        ids = torch.tensor(self.encode(text), dtype=torch.long)
        return torch.nn.functional.one_hot(ids, len(self)).float()

    def to_dict(self) -> dict:
        return {"chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocab":
        return cls(data["chars"])
