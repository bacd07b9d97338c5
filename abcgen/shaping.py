"""Shaping the next-character probabilities while sampling: temperature, top-k, and in
tune bodies the temperature applied within classes of characters (keep_rhythm; see
class_tempered), which sharpens the choice among pitches while note lengths and the kind
of character that comes next keep the model's own odds. Among pitches, the unlikeliest
tail is left out (pitch_top_p; see pitch_nucleus).
"""

from __future__ import annotations

import torch

# Characters that the temperature sharpens among themselves (see class_tempered); the
# pitch letters are class PITCH_CLASS.
# Note lengths were sharpened too until a 200-tune comparison showed the rhythm blander for
# it (notes-per-bar gap to the validation tunes -0.060 sharpened, -0.044 at the model's odds;
# note durations -0.030 and -0.012; bench/RESULTS.md).
SHARPENED_GROUPS = ("ABCDEFGabcdefg",)
PITCH_CLASS = 0


def character_classes(chars) -> torch.Tensor:
    """A class number per vocabulary character: the pitch letters are one class
    (PITCH_CLASS) and every other character is its own."""
    numbers, classes = {group: number for number, group in enumerate(SHARPENED_GROUPS)}, []
    for ch in chars:
        group = next((group for group in SHARPENED_GROUPS if ch in group), ch)
        classes.append(numbers.setdefault(group, len(numbers)))
    return torch.tensor(classes)


def next_char_probs(logits, temperature, top_k, classes=None, pitch_top_p=1.0):
    """Next-character probabilities: logits/temperature, or with classes, the temperature
    applied within each class only (see class_tempered) and the pitches cut to their
    nucleus (see pitch_nucleus)."""
    logits = logits.float()
    if classes is None:
        probs = torch.softmax(logits / temperature, dim=-1)
    else:
        probs = class_tempered(logits, temperature, classes.to(logits.device), pitch_top_p)
    if top_k is not None and top_k < probs.shape[-1]:
        threshold = torch.topk(probs, top_k, dim=-1).values[:, -1:]
        probs = probs.masked_fill(probs < threshold, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def class_tempered(logits, temperature, classes, pitch_top_p=1.0):
    """Which kind of character comes next at the model's own odds; which one of that kind
    sharpened (or flattened) by the temperature.

    A plain temperature below 1 favours whatever single character is likeliest. After a
    note that is often the length `2`, whose rivals (the next pitch) are spread over a
    dozen letters: at 0.8 the shipped model wrote 47% quarter notes where the corpus has
    25%. Keeping the odds between classes leaves rhythm, bar lines and tune endings as
    the model learned them, and the temperature still chooses among pitches (every other
    character, a length digit included, is a class of its own: it keeps the model's odds).
    """
    batch, count = logits.shape[0], int(classes.max()) + 1
    index = classes.expand(batch, -1)
    class_odds = torch.zeros(batch, count, device=logits.device).index_add_(1, classes, torch.softmax(logits, dim=-1))
    scaled = logits / temperature
    class_max = torch.full((batch, count), float("-inf"), device=logits.device).scatter_reduce(1, index, scaled, "amax")
    weights = torch.exp(scaled - class_max.gather(1, index))
    class_sums = torch.zeros(batch, count, device=logits.device).index_add_(1, classes, weights)
    # a class whose every character is masked (-inf) gives 0/0: it keeps no share
    within = torch.nan_to_num(weights / class_sums.gather(1, index), nan=0.0)
    if pitch_top_p < 1:
        pitches = classes == PITCH_CLASS
        within[:, pitches] = pitch_nucleus(within[:, pitches], pitch_top_p)
    return within * class_odds.gather(1, index)


def pitch_nucleus(shares, top_p):
    """The likeliest pitches whose shares (rows summing to 1) add up to top_p, the rest
    left out, renormalised: nucleus sampling (Holtzman et al. 2020) among pitches.

    A tune writes about 150 pitches, and its range is set by the most extreme one, so
    rare pitches the model gives a few percent add up: at temperature 0.8 without the cut,
    the models' tunes spanned about 2 semitones more than the training tunes of the same
    length (bench/RESULTS.md). Leaving out the tail of each choice brings the range back
    while every common step of a melody stays possible.
    """
    ordered, order = shares.sort(dim=-1, descending=True)
    outside = ordered.cumsum(dim=-1) - ordered > top_p
    kept = shares.scatter(-1, order, ordered.masked_fill(outside, 0.0))
    return torch.nan_to_num(kept / kept.sum(dim=-1, keepdim=True), nan=0.0)
