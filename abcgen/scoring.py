"""Loss scoring: how well a model predicts a text, one character after another.

Shared by training (the validation loss), sampling (TuneModel.score), evaluation and the
experiment; nothing here trains, so sampling and evaluation need not import training.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from abcgen.errors import AbcgenError

if TYPE_CHECKING:  # only the annotations name them: scoring sits below the model and the vocabulary
    from abcgen.model import CharModel
    from abcgen.vocab import Vocab

LN2 = math.log(2)  # nats per bit: a loss in nats over LN2 is bits per character


def known_tunes(tunes: list[str], vocab: Vocab) -> list[str]:
    """The tunes whose every character the vocabulary knows."""
    return [tune for tune in tunes if not vocab.unknown(tune)]


def make_streams(
    ids: torch.Tensor, batch: int, inputs: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets as (batch, n) tensors of `batch` contiguous streams of a text's
    character ids (the inputs: the model's input ids of the text, if not the same)."""
    n = (len(ids) - 1) // batch
    if n < 2:
        raise AbcgenError(
            f"the corpus is too small for one batch: {len(ids)} characters for "
            f"{batch} streams; use a smaller --batch-size or a bigger corpus"
        )
    inputs = (ids if inputs is None else inputs)[: n * batch].view(batch, n)
    targets = ids[1 : n * batch + 1].view(batch, n)
    return inputs, targets


def windows(n: int, seq_len: int) -> list[tuple[int, int]]:
    """The (start, end) column ranges that cover n columns seq_len at a time."""
    return [(start, min(start + seq_len, n)) for start in range(0, n, seq_len)]


@torch.no_grad()
def score_text(
    model: CharModel,
    text_ids: torch.Tensor,
    input_ids: torch.Tensor | None = None,
    batch: int = 16,
    seq_len: int = 256,
    bf16: bool = False,
) -> dict:
    """Mean loss (nats per character) and next-character accuracy over a text (its
    character ids, and its model input ids if they differ: see form.encode_text)."""
    model.eval()
    device = next(model.parameters()).device
    batch = max(1, min(batch, (len(text_ids) - 1) // 2))
    inputs, targets = make_streams(text_ids, batch, input_ids)
    inputs, targets = inputs.to(device), targets.to(device)
    total_loss, correct, count, state = 0.0, 0, 0, None
    for start, end in windows(inputs.shape[1], seq_len):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits, state = model(inputs[:, start:end], state)
        logits = logits.float().reshape(-1, logits.shape[-1])
        target = targets[:, start:end].reshape(-1)
        total_loss += nn.functional.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(-1) == target).sum().item()
        count += target.numel()
    return {"loss": total_loss / count, "bpc": total_loss / count / LN2, "acc": correct / count}
