"""Shaping the next-character probabilities while sampling: temperature, top-k, and in
tune bodies the temperature applied among the pitches only (keep_rhythm; see
pitch_tempered), while note lengths and the kind of character that comes next keep the
model's own odds. Among pitches, the unlikeliest tail is left out (pitch_top_p; see
pitch_nucleus).
"""

from __future__ import annotations

import torch

PITCH_LETTERS = "ABCDEFGabcdefg"


def pitch_mask(chars) -> torch.Tensor:
    """Which vocabulary characters are pitch letters: the ones the temperature sharpens
    among themselves (see pitch_tempered)."""
    return torch.tensor([ch in PITCH_LETTERS for ch in chars])


def next_char_probs(logits, temperature, top_k, pitches=None, pitch_top_p=1.0):
    """Next-character probabilities: logits/temperature, or with a pitch mask, the
    temperature applied among the pitches only (see pitch_tempered) and the pitches cut to
    their nucleus (see pitch_nucleus)."""
    logits = logits.float()
    if pitches is None:
        probs = torch.softmax(logits / temperature, dim=-1)
    else:
        probs = pitch_tempered(logits, temperature, pitches.to(logits.device), pitch_top_p)
    if top_k is not None and top_k < probs.shape[-1]:
        threshold = torch.topk(probs, top_k, dim=-1).values[:, -1:]
        probs = probs.masked_fill(probs < threshold, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def pitch_tempered(logits, temperature, pitches, pitch_top_p=1.0):
    """Whether a pitch comes next, and every other character, at the model's own odds;
    which pitch, sharpened (or flattened) by the temperature.

    A plain temperature below 1 favours whatever single character is likeliest. After a
    note that is often the length `2`, whose rivals (the next pitch) are spread over a
    dozen letters: at 0.8 the shipped model wrote 47% quarter notes where the corpus has
    25%. Keeping the other characters at the model's odds leaves rhythm, bar lines and
    tune endings as the model learned them. Note lengths were sharpened among themselves
    too until a 200-tune comparison showed the rhythm blander for it (notes-per-bar gap to
    the validation tunes -0.060 sharpened, -0.044 at the model's odds; note durations
    -0.030 and -0.012; bench/RESULTS.md).
    """
    probs = torch.softmax(logits, dim=-1)
    share = probs[:, pitches].sum(dim=-1, keepdim=True)
    # every pitch masked (-inf) gives 0/0: the pitches keep no share
    within = torch.nan_to_num(torch.softmax(logits[:, pitches] / temperature, dim=-1), nan=0.0)
    if pitch_top_p < 1:
        within = pitch_nucleus(within, pitch_top_p)
    probs[:, pitches] = within * share
    return probs


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
