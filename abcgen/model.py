"""Character-level language models behind one interface.

Every architecture is an nn.Module registered in ARCHITECTURES and built from a
ModelConfig. It maps a batch of character ids to next-character logits and carries a
state from one call to the next, which is what both truncated back-propagation
through time (train.py) and step-by-step generation (sample.py) need:

    logits, state = model(ids, state)   # ids: (batch, time) long; logits: (batch, time, vocab)
    state = model.detach_state(state)   # cut the graph between training windows
    state = model.select_state(state, rows)  # keep some batch rows (finished tunes leave)

state=None means "start of the text". Recurrent models keep their hidden state in it;
a model that attends over the past can keep the recent ids or keys there instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from abcgen.errors import AbcgenError


@dataclass
class ModelConfig:
    vocab_size: int
    arch: str = "lstm"
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class CharModel(nn.Module):
    """Base class: subclasses define forward(ids, state) -> (logits, state)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    def detach_state(self, state):
        return tree_map(lambda t: t.detach(), state)

    def select_state(self, state, rows):
        """Keep only some batch rows of a state (recurrent states: batch is dim 1)."""
        return tree_map(lambda t: t.index_select(1, rows), state)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class CharRNN(CharModel):
    """One-hot characters -> stacked LSTM (or GRU) -> linear layer back to the vocabulary.

    The one-hot input is computed as a lookup into a fixed identity matrix: the same
    numbers as torch.nn.functional.one_hot(...).float() without building it per step.
    """

    cell = nn.LSTM

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.register_buffer("one_hot_table", torch.eye(config.vocab_size), persistent=False)
        self.rnn = self.cell(
            input_size=config.vocab_size,
            hidden_size=config.hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, ids, state=None):
        x = nn.functional.embedding(ids, self.one_hot_table)
        out, state = self.rnn(x, state)
        return self.head(self.drop(out)), state


class CharGRU(CharRNN):
    cell = nn.GRU


ARCHITECTURES: dict[str, type[CharModel]] = {"lstm": CharRNN, "gru": CharGRU}


def build_model(config: ModelConfig) -> CharModel:
    try:
        return ARCHITECTURES[config.arch](config)
    except KeyError:
        names = ", ".join(sorted(ARCHITECTURES))
        raise AbcgenError(f"unknown architecture {config.arch!r}; choose one of {names}") from None


def tree_map(fn, state):
    """Apply fn to every tensor in a (possibly nested tuple/list) state."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    return type(state)(tree_map(fn, s) for s in state)
