"""Character-level language models behind one interface.

Every architecture is an nn.Module registered in ARCHITECTURES and built from a
ModelConfig. It maps a batch of input ids to next-character logits and carries a
state from one call to the next, which is what both truncated back-propagation
through time (train.py) and step-by-step generation (sample.py) need:

    logits, state = model(ids, state)   # ids: (batch, time) long; logits: (batch, time, vocab)
    state = model.detach_state(state)   # cut the graph between training windows
    state = model.select_state(state, rows)  # keep some batch rows (finished tunes leave)
    state = model.merge_states([a, b])       # join batch pieces again (the sampler's rewinds)

The ids are input ids: a character's, or with `form` (form.py) the pair of a character
and how many bars of its tune are complete, character + vocab_size x form class; every
model reads them as one row of input_table (the transformer: an embedding row).
state=None means "start of the text". Recurrent models keep their hidden state in it;
a model that attends over the past can keep the recent ids or keys there instead.

The architectures (`abcgen train --arch NAME`):

- lstm: one-hot inputs, a stacked LSTM, a linear layer back to the vocabulary (default).
- gru: the same with GRU layers.
- lstm-attention: the LSTM, then multi-head attention over its last `window` outputs.
- bilstm-window: a bidirectional LSTM that reads the last `window` characters for every
  prediction; `window` times the work of the LSTM per character, in each direction.
- conv-lstm: a causal 1-D convolution of width `kernel` in front of the LSTM.
- transformer: a small causal decoder (`layers` blocks of width `hidden`, `heads` heads)
  that attends over the last `context` characters through a key/value cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from abcgen.errors import AbcgenError
from abcgen.form import BARS_PER_BLOCK, class_count
from abcgen.model_config import ModelConfig
from abcgen.options import OptionError

# A model's state between calls: None before the first, else tensors nested in tuples, as
# each architecture's docstring says; tree_map and tree_cat walk it whatever its shape.
State = Any


class CharModel(nn.Module):
    """Base class: subclasses define forward(ids, state) -> (logits, state)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    def detach_state(self, state: State) -> State:
        return tree_map(lambda t: t.detach(), state)

    def select_state(self, state: State, rows: torch.Tensor) -> State:
        """Keep only some batch rows of a state (recurrent states: batch is dim 1)."""
        return tree_map(lambda t: t.index_select(1, rows), state)

    def merge_states(self, states: list[State] | tuple[State, ...]) -> State:
        """One state from the states of consecutive batch pieces (recurrent: batch is dim 1)."""
        return tree_cat(states, batch_dim=1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def step(self, ids: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        """One time step of inference (ids of shape (batch, 1)): what the sampler calls."""
        return self(ids, state)


class CharRNN(CharModel):
    """One-hot characters -> stacked LSTM (or GRU) -> linear layer back to the vocabulary.

    The one-hot input is computed as a lookup into a fixed table (input_table): the same
    numbers as torch.nn.functional.one_hot(...).float() without building it per step.
    Each layer is its own torch RNN so that dropout between layers and before the output
    layer can be variational (one mask per sequence, the same at every step; Gal and
    Ghahramani 2016): it regularises a recurrent model at least as well as a fresh mask
    per step, and drawing a fresh mask took 11% of a training step on a 2-core CPU.
    State: as torch's stacked RNNs keep it, (layers, batch, hidden) tensors.
    """

    cell: type[nn.LSTM] | type[nn.GRU] = nn.LSTM
    one_hot_table: torch.Tensor  # a buffer, declared for the type checker

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.register_buffer("one_hot_table", input_table(config), persistent=False)
        sizes = [input_width(config)] + [config.hidden] * config.layers
        self.layers = nn.ModuleList(self.cell(size, config.hidden, batch_first=True) for size in sizes[:-1])
        self.drop = SequenceDropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)
        if self.cell is nn.LSTM:
            for layer in self.layers:
                open_forget_gates(layer)  # type: ignore[arg-type]  # the layers are nn.LSTM here
        self._register_load_state_dict_pre_hook(rename_stacked_weights)

    def forward(self, ids: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        x = nn.functional.embedding(ids, self.one_hot_table)
        states = []
        for number, layer in enumerate(self.layers):
            layer_state = tree_map(lambda t: t[number : number + 1], state)
            x, layer_state = layer(self.drop(x) if number else x, layer_state)
            states.append(layer_state)
        return self.head(self.drop(x)), tree_cat(states, batch_dim=0)

    def step(self, ids: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        """forward for one time step in eval mode through torch's single-step cell kernels
        (torch.lstm_cell, torch.gru_cell, as nn.LSTMCell uses): a one-step nn.LSTM call
        costs twice as much on a CPU (0.24 against 0.11 ms at batch 1), and a tune is
        written one character at a time."""
        if self.training or ids.shape[1] != 1:
            return self(ids, state)
        return self.step_inputs(nn.functional.embedding(ids[:, 0], self.one_hot_table), state)

    def step_inputs(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        """step from the input rows x (batch, input_width) instead of ids."""
        lstm = self.cell is nn.LSTM
        if state is None:
            zeros = x.new_zeros(len(self.layers), x.shape[0], self.config.hidden)
            state = (zeros, zeros) if lstm else zeros
        hs, cs = [], []
        for number, layer in enumerate(self.layers):
            weights = cast(  # torch types a layer's parameters as Tensor | Module
                "tuple[torch.Tensor, ...]", (layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0)
            )
            if lstm:
                x, c = torch.lstm_cell(x, (state[0][number], state[1][number]), *weights)
                cs.append(c)
            else:
                x = torch.gru_cell(x, state[number], *weights)
            hs.append(x)
        state = (torch.stack(hs), torch.stack(cs)) if lstm else torch.stack(hs)
        return self.head(x).unsqueeze(1), state


class SequenceDropout(nn.Module):
    """Dropout of whole features of a (batch, time, features) sequence: one mask per
    sequence, shared by all its time steps."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty(x.shape[0], 1, x.shape[2], device=x.device).bernoulli_(1 - self.p)
        return x * (keep / (1 - self.p)).to(x.dtype)


def rename_stacked_weights(state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
    """Read checkpoints written when CharRNN was one stacked torch RNN (rnn.weight_ih_l1
    is now layers.1.weight_ih_l0)."""
    for key in [k for k in state_dict if k.startswith(prefix + "rnn.")]:
        name, layer = key[len(prefix) + 4 :].rsplit("_l", 1)
        state_dict[f"{prefix}layers.{layer}.{name}_l0"] = state_dict.pop(key)


def open_forget_gates(lstm: nn.LSTM) -> None:
    """Start every forget gate at bias 1 so that memory flows from the first step:
    training leaves the unigram plateau sooner (gates are ordered input, forget, cell, output)."""
    hidden = lstm.hidden_size
    with torch.no_grad():
        for name, bias in lstm.named_parameters():
            if name.startswith("bias_ih"):
                bias[hidden : 2 * hidden] = 1.0


class CharGRU(CharRNN):
    cell = nn.GRU


# ---------------------------------------------------------------- shared pieces


def input_count(config: ModelConfig) -> int:
    """How many input ids a model reads: one per character, or per (character, form class)."""
    return config.vocab_size * class_count(config.form)


def input_width(config: ModelConfig) -> int:
    """The width of a one-hot input: the character's, then with form classes the block's
    and the bar's within the block."""
    return config.vocab_size + (config.form + BARS_PER_BLOCK if config.form else 0)


def input_table(config: ModelConfig, padded: bool = False) -> torch.Tensor:
    """The one-hot row of each input id (character + vocab_size x form class, see
    form.input_ids). padded: one more all-zero row, for the padding id input_count,
    which stands for "before the text starts" in models that keep recent ids in their state."""
    classes, vocab = class_count(config.form), config.vocab_size
    parts = [torch.eye(vocab).repeat(classes, 1)]
    if config.form:
        blocks = torch.eye(config.form).repeat_interleave(BARS_PER_BLOCK, 0)  # class // BARS_PER_BLOCK
        bars = torch.eye(BARS_PER_BLOCK).repeat(config.form, 1)  # class % BARS_PER_BLOCK
        parts += [t.repeat_interleave(vocab, 0) for t in (blocks, bars)]
    rows = torch.cat(parts, dim=1)
    return torch.cat([rows, torch.zeros(1, rows.shape[1])]) if padded else rows


def last(t: torch.Tensor, n: int, dim: int = 1) -> torch.Tensor:
    """The last n entries of t along dim (all of them if there are fewer; none if n == 0)."""
    size = t.shape[dim]
    return t.narrow(dim, size - min(n, size), min(n, size))


def select_recurrent(rnn_state: State, rows: torch.Tensor) -> State:
    """Batch rows of an LSTM/GRU state: a tensor or a pair, batch in dim 1."""
    return tree_map(lambda t: t.index_select(1, rows), rnn_state)


def banded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, span: int, slopes: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal attention of the last T = q.shape[2] positions over k, v (batch, heads, S, d).

    Each query sees the `span` positions that end at its own, so the cached keys of
    earlier calls count exactly as they would in one long call. With ALiBi slopes, a
    penalty of slope x distance replaces position embeddings: the scores depend only on
    distances inside the window, never on where in a long stream the window sits.
    """
    queries, keys = q.shape[2], k.shape[2]
    distance = torch.arange(keys - queries, keys, device=q.device).unsqueeze(1) - torch.arange(
        keys, device=q.device
    ).unsqueeze(0)
    allowed = (distance >= 0) & (distance < span)
    if slopes is None:
        mask = allowed
    else:
        mask = (-slopes.view(-1, 1, 1) * distance).masked_fill(~allowed, float("-inf")).to(q.dtype)
    return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, time, width = x.shape
    return x.view(batch, time, heads, width // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, time, size = x.shape
    return x.transpose(1, 2).reshape(batch, time, heads * size)


# ---------------------------------------------------------------- lstm-attention


class LSTMAttention(CharModel):
    """The one-hot LSTM, then multi-head attention of each output over the last `window`
    outputs (its own included; those of earlier calls are carried in the state); the
    attended context goes through a linear layer and is added to the LSTM output before
    the output layer. (A residual sum: joining the two through a tanh layer, as Luong et
    al. do, learned several times slower on small corpora.)

    State: (LSTM state, the last window-1 LSTM outputs (batch, <= window-1, hidden)).
    """

    one_hot_table: torch.Tensor  # a buffer, declared for the type checker

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        width = config.hidden
        self.register_buffer("one_hot_table", input_table(config), persistent=False)
        self.rnn = nn.LSTM(
            input_width(config),
            width,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.join = nn.Linear(width, width)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(width, config.vocab_size)

    def forward(self, ids: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        rnn_state, memory = state if state is not None else (None, None)
        out, rnn_state = self.rnn(nn.functional.embedding(ids, self.one_hot_table), rnn_state)
        seen = out if memory is None else torch.cat([memory.to(out.dtype), out], dim=1)
        heads = self.config.heads
        keys, values = self.key_value(seen).chunk(2, dim=-1)
        context = banded_attention(
            split_heads(self.query(out), heads),
            split_heads(keys, heads),
            split_heads(values, heads),
            self.config.window,
        )
        joined = out + self.join(merge_heads(context))
        return self.head(self.drop(joined)), (rnn_state, last(seen, self.config.window - 1))

    def select_state(self, state: State, rows: torch.Tensor) -> State:
        rnn_state, memory = state
        return select_recurrent(rnn_state, rows), memory.index_select(0, rows)

    def merge_states(self, states: list[State] | tuple[State, ...]) -> State:
        rnn_states, memories = zip(*states)
        return tree_cat(rnn_states, batch_dim=1), tree_cat(memories, batch_dim=0, time_dim=1)


# ---------------------------------------------------------------- bilstm-window


class BiLSTMWindow(CharModel):
    """A bidirectional LSTM reads the last `window` characters afresh for every position
    and predicts the next one from both directions' final outputs.

    Cost: every character is read `window` times in each direction, so training and
    sampling take about 2 x window times the work of a one-way LSTM of the same size
    per character (and window times its activation memory in training).
    State: the last window-1 ids (the padding id before the text starts).
    """

    one_hot_table: torch.Tensor  # a buffer, declared for the type checker

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.pad_id = input_count(config)
        self.register_buffer("one_hot_table", input_table(config, padded=True), persistent=False)
        self.rnn = nn.LSTM(
            input_width(config),
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.hidden, config.vocab_size)

    def forward(self, ids: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        batch, time = ids.shape
        size, hidden = self.config.window, self.config.hidden
        recent = state if state is not None else ids.new_full((batch, size - 1), self.pad_id)
        seen = torch.cat([recent, ids], dim=1)
        windows = seen.unfold(1, size, 1).reshape(batch * time, size)
        out, _ = self.rnn(nn.functional.embedding(windows, self.one_hot_table))
        # The forward direction ends at the window's last character, the backward at its first.
        both = torch.cat([out[:, -1, :hidden], out[:, 0, hidden:]], dim=-1)
        logits = self.head(self.drop(both)).view(batch, time, -1)
        return logits, seen[:, time:]

    def select_state(self, state: State, rows: torch.Tensor) -> State:
        return state.index_select(0, rows)

    def merge_states(self, states: list[State] | tuple[State, ...]) -> State:
        return torch.cat(states, dim=0)


# ---------------------------------------------------------------- conv-lstm


class ConvLSTM(CharModel):
    """A causal 1-D convolution over the one-hot characters (width `kernel`, `hidden`
    channels, ReLU) in front of the stacked LSTM.

    State: (the last kernel-1 ids, the padding id before the text starts; LSTM state).
    """

    one_hot_table: torch.Tensor  # a buffer, declared for the type checker

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.pad_id = input_count(config)
        self.register_buffer("one_hot_table", input_table(config, padded=True), persistent=False)
        self.conv = nn.Conv1d(input_width(config), config.hidden, config.kernel)
        self.rnn = nn.LSTM(
            config.hidden,
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, ids: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        batch, time = ids.shape
        if state is None:
            state = (ids.new_full((batch, self.config.kernel - 1), self.pad_id), None)
        recent, rnn_state = state
        seen = torch.cat([recent, ids], dim=1)
        x = nn.functional.embedding(seen, self.one_hot_table).transpose(1, 2)
        features = torch.relu(self.conv(x)).transpose(1, 2)
        out, rnn_state = self.rnn(features, rnn_state)
        return self.head(self.drop(out)), (seen[:, time:], rnn_state)

    def select_state(self, state: State, rows: torch.Tensor) -> State:
        recent, rnn_state = state
        return recent.index_select(0, rows), select_recurrent(rnn_state, rows)

    def merge_states(self, states: list[State] | tuple[State, ...]) -> State:
        recents, rnn_states = zip(*states)
        return torch.cat(recents, dim=0), tree_cat(rnn_states, batch_dim=1)


# ---------------------------------------------------------------- transformer


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's geometric slopes 2^(-8i/heads), i = 1..heads (Press et al. 2022)."""
    return torch.tensor([2.0 ** (-8.0 * i / heads) for i in range(1, heads + 1)])


class DecoderBlock(nn.Module):
    """Pre-norm block: banded causal self-attention with a key/value cache, then an MLP."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        width = config.hidden
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None, slopes: torch.Tensor, context: int
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        heads = slopes.shape[0]
        q, k, v = (split_heads(t, heads) for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        if cache is not None:
            k = torch.cat([cache[0].to(k.dtype), k], dim=2)
            v = torch.cat([cache[1].to(v.dtype), v], dim=2)
        attended = merge_heads(banded_attention(q, k, v, context, slopes))
        x = x + self.drop(self.proj(attended))
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, (last(k, context - 1, dim=2), last(v, context - 1, dim=2))


class CharTransformer(CharModel):
    """A small causal decoder: character embeddings, `layers` pre-norm blocks of width
    `hidden` with `heads` heads, each character attending over the last `context`
    characters (ALiBi distances, no position embeddings), a linear output layer.

    State: per block, the keys and values of the last context-1 positions
    ((batch, heads, <= context-1, hidden/heads) each), so a long text read in windows
    (training) or one character at a time (sampling) gives the same logits as one call.
    """

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.register_buffer("slopes", alibi_slopes(config.heads), persistent=False)
        self.embed = nn.Embedding(input_count(config), config.hidden)
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.hidden)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, ids: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        caches = state if state is not None else (None,) * len(self.blocks)
        x = self.drop(self.embed(ids))
        new_caches = []
        for block, cache in zip(self.blocks, caches):
            x, cache = block(x, cache, self.slopes, self.config.context)
            new_caches.append(cache)
        return self.head(self.norm(x)), tuple(new_caches)

    def select_state(self, state: State, rows: torch.Tensor) -> State:
        return tree_map(lambda t: t.index_select(0, rows), state)

    def merge_states(self, states: list[State] | tuple[State, ...]) -> State:
        return tree_cat(states, batch_dim=0, time_dim=2)


# ---------------------------------------------------------------- the registry


ARCHITECTURES: dict[str, type[CharModel]] = {
    "lstm": CharRNN,
    "gru": CharGRU,
    "lstm-attention": LSTMAttention,
    "bilstm-window": BiLSTMWindow,
    "conv-lstm": ConvLSTM,
    "transformer": CharTransformer,
}
USES_HEADS = ("lstm-attention", "transformer")


def check_config(config: ModelConfig) -> None:
    """One clear line for an architecture option that cannot work."""
    if config.arch not in ARCHITECTURES:
        names = ", ".join(ARCHITECTURES)
        raise AbcgenError(f"unknown architecture {config.arch!r}; choose one of {names}")
    problems = [
        (config.heads < 1, "heads", "must be at least 1"),
        (config.window < 1, "window", "must be at least 1"),
        (config.kernel < 1, "kernel", "must be at least 1"),
        (config.context < 1, "context", "must be at least 1"),
        (config.form < 0, "form", "cannot be negative"),
        (
            config.arch in USES_HEADS and config.heads >= 1 and config.hidden % config.heads != 0,
            "hidden",
            f"({config.hidden}) must be a multiple of {{heads}} ({config.heads})",
        ),
    ]
    for bad, option, problem in problems:
        if bad:
            raise OptionError(option, problem)


def build_model(config: ModelConfig) -> CharModel:
    check_config(config)
    return ARCHITECTURES[config.arch](config)


def tree_map(fn: Callable[[torch.Tensor], torch.Tensor], state: State) -> State:
    """Apply fn to every tensor in a (possibly nested tuple/list) state."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    return type(state)(tree_map(fn, s) for s in state)


def tree_cat(states: list[State] | tuple[State, ...], batch_dim: int, time_dim: int | None = None) -> State:
    """Concatenate states of the same structure along batch_dim.

    Memories along time_dim may differ in length when one piece was saved earlier in a
    text than another (the first `window` or `context` characters): all are cut to the
    shortest, dropping their oldest entries: a small approximation that only a piece
    saved in the first few dozen characters of a text can meet.
    """
    first = states[0]
    if isinstance(first, torch.Tensor):
        if time_dim is not None:
            shortest = min(t.shape[time_dim] for t in states)
            states = [last(t, shortest, dim=time_dim) for t in states]
        return torch.cat(states, dim=batch_dim)
    return type(first)(tree_cat(parts, batch_dim, time_dim) for parts in zip(*states))
