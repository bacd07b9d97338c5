"""Fine-tuning: train on a collection starting from a trained model (`train --init`).

    >>> from abcgen.train import finetune_config, train
    >>> train("my-tunes/", "runs/my-tunes", config=finetune_config(), init="shipped")

The starting model gives the architecture, its size and its form inputs; the collection
gives the tunes. Characters the starting model never saw are added to its vocabulary
(grow_vocab) so that, before training, it predicts every text it could read as it did.
The checkpoint records where it started from (meta["init"]), and `abcgen info` shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from abcgen.checkpoint import load_checkpoint
from abcgen.errors import AbcgenError
from abcgen.form import class_count, encode_text
from abcgen.model import CharModel, build_model, input_width
from abcgen.model_config import ModelConfig
from abcgen.vocab import Vocab

SHIPPED = "shipped"
SHIPPED_PATH = Path(__file__).parent / "pretrained" / "nottingham.pt"

# Training settings for a small collection started from a trained model, measured on
# 20 and 50 O'Neill's tunes from the shipped model by bench/finetune.py
# (bench/results/finetune.md). Early stopping on the collection's own validation tunes ends
# most runs well before `epochs`.
FINETUNE_DEFAULTS: dict[str, Any] = dict(
    lr=3e-3, epochs=40, patience=4, batch_size=8, weight_decay=0.0, warmup_steps=10
)

# The model options that the starting model decides (an option that differs is refused).
MODEL_OPTIONS = ("arch", "layers", "hidden", "heads", "window", "kernel", "context", "form", "form_count")

# A new character starts this far (in nats) below the log-sum of the old characters' odds
# wherever the reference text was read: a probability under e^-12 (6e-6) of the rest, so
# the old characters' log-probabilities move by less than 1e-5 per new character.
NEW_CHAR_MARGIN = 12.0
MIN_VALIDATION = 2  # validation tunes to stop early on; fewer are made up from training
REFERENCE_CHARS = 50_000


def init_path(init: str | Path) -> Path:
    """The model file `--init` names: a path, or `shipped` for the model in the package."""
    return SHIPPED_PATH if str(init) == SHIPPED else Path(init)


def check_model_options(start: ModelConfig, given: dict, path: Path) -> None:
    """Refuse, in one line, a model option that contradicts the starting model's."""
    for key in MODEL_OPTIONS:
        if key in given and given[key] != getattr(start, key):
            flag = "--form/--no-form" if key == "form" else f"--{key.replace('_', '-')}"
            raise AbcgenError(
                f"{flag} {given[key]} contradicts the starting model {path} ({key} "
                f"{getattr(start, key)}): the architecture, size and form inputs come from "
                f"--init; leave {flag} out, or train from scratch without --init"
            )


def start_from(
    init: str | Path, train_text: str, model_config: dict | None = None, log: Callable[[str], None] | None = None
) -> tuple[CharModel, Vocab, dict[str, Any]]:
    """The model to fine-tune, its vocabulary (the starting model's with the characters of
    train_text it lacks; log says which), and the provenance to record: (model, vocab, origin)."""
    path = init_path(init)
    start = load_checkpoint(path)
    given = dict(model_config or {})
    check_model_options(start.config, given, path)
    if "dropout" in given and given["dropout"] != start.config.dropout:
        start.model.config = replace(start.config, dropout=given["dropout"])
        for module in start.model.modules():  # the dropout layers read p when they run
            if hasattr(module, "p") and isinstance(module.p, float):
                module.p = given["dropout"]
    vocab = Vocab(start.vocab.chars + list(train_text))
    added = sorted(set(vocab.chars) - set(start.vocab.chars))
    model = grow_vocab(start.model, start.vocab, vocab, reference=train_text)
    origin = {
        "path": str(init) if str(init) == SHIPPED else str(path.resolve()),
        "corpus": start.meta.get("corpus"),
        "corpus_fingerprint": start.meta.get("corpus_fingerprint"),
        "epoch": start.meta.get("epoch"),
        "vocabulary_size": len(start.vocab),
        "added_chars": "".join(added),
    }
    if start.meta.get("init"):
        origin["init"] = start.meta["init"]  # a fine-tuned model fine-tuned again
    if log:
        shown = " ".join(repr(ch) for ch in added) or "none"
        log(
            f"starting from {origin['path']} ({start.meta.get('corpus') or 'unknown corpus'}, "
            f"{len(start.vocab)} characters); characters added to its vocabulary: {shown}"
        )
    return model, vocab, origin


def recorded_init(path: Path) -> dict | None:
    """The provenance a checkpoint records of the model it was fine-tuned from, if any."""
    if not Path(path).is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None  # load_checkpoint will say what is wrong with it
    return payload.get("meta", {}).get("init") if isinstance(payload, dict) else None


def grow_vocab(
    model: CharModel, old: Vocab, new: Vocab, reference: str | None = None, margin: float = NEW_CHAR_MARGIN
) -> CharModel:
    """A copy of model that reads and writes new's characters (a superset of old's).

    Every weight tied to a character moves to the character's new id. A new character's
    input weights are zero (old texts never hold it), its output weights are zero and its
    output bias sits `margin` nats below the lowest log-sum of the old logits over the
    reference text (or below the lowest output bias when there is none), so the starting
    model's predictions over the old characters stay as they were."""
    if new.chars == old.chars:
        return model
    lost = set(old.chars) - set(new.chars)
    if lost:
        raise AbcgenError(f"the new vocabulary lacks {''.join(sorted(lost))!r} of the old one")
    config = replace(model.config, vocab_size=len(new))
    grown = build_model(config)
    old_v, new_v = len(old), len(new)
    where = torch.tensor([new.index[ch] for ch in old.chars])
    classes = class_count(config.form)
    extra = input_width(config) - new_v  # form columns after the characters' own
    maps = {  # (old size, new size) of a dimension -> where each old entry goes
        (old_v, new_v): where,
        (old_v * classes, new_v * classes): torch.cat([where + new_v * c for c in range(classes)]),
        (old_v + extra, new_v + extra): torch.cat([where, torch.arange(new_v, new_v + extra)]),
    }
    target = grown.state_dict()
    state = {}
    for key, value in model.state_dict().items():
        shape = target[key].shape
        changed = [d for d in range(value.dim()) if value.shape[d] != shape[d]]
        if not changed:
            state[key] = value
            continue
        if len(changed) != 1 or (value.shape[changed[0]], shape[changed[0]]) not in maps:
            raise AbcgenError(
                f"cannot grow the vocabulary of this model: {key} is shaped {tuple(value.shape)}, not by characters"
            )
        dim = changed[0]
        grown_value = torch.zeros(shape, dtype=value.dtype)
        state[key] = grown_value.index_copy(dim, maps[value.shape[dim], shape[dim]], value)
    state["head.bias"][_new_ids(old, new)] = _new_char_logit(model, old, reference, margin)
    grown.load_state_dict(state)
    return grown.to(next(model.parameters()).device).train(model.training)


def _new_ids(old: Vocab, new: Vocab) -> torch.Tensor:
    return torch.tensor([new.index[ch] for ch in new.chars if ch not in old], dtype=torch.long)


@torch.no_grad()
def _new_char_logit(model: CharModel, vocab: Vocab, reference: str | None, margin: float) -> float:
    """margin nats below the lowest log-sum-exp of the model's logits over reference."""
    text = "".join(ch for ch in (reference or "")[:REFERENCE_CHARS] if ch in vocab)
    if len(text) < 2:
        return model.get_parameter("head.bias").min().item() - margin
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    inputs, _ = encode_text(text, vocab, model.config.form, model.config.form_count)
    inputs = inputs.to(device).unsqueeze(0)
    lowest, state = float("inf"), None
    for start in range(0, inputs.shape[1], 512):
        logits, state = model(inputs[:, start : start + 512], state)
        lowest = min(lowest, torch.logsumexp(logits.float(), dim=-1).min().item())
    model.train(was_training)
    return lowest - margin
