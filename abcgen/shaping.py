"""Shaping the next-character probabilities while sampling: temperature, top-k, and in
tune bodies the temperature applied among the pitches only (keep_rhythm; see
pitch_tempered), while note lengths and the kind of character that comes next keep the
model's own odds. Among pitches, the unlikeliest tail is left out (pitch_top_p; see
pitch_nucleus). Probabilities are numpy arrays of shape (rows, vocabulary), one row a tune;
draw picks a character from each row.
"""

from __future__ import annotations

import numpy as np

PITCH_LETTERS = "ABCDEFGabcdefg"


def pitch_mask(chars: str | list[str]) -> np.ndarray:
    """Which vocabulary characters are pitch letters: the ones the temperature sharpens
    among themselves (see pitch_tempered)."""
    return np.array([ch in PITCH_LETTERS for ch in chars])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Each row's softmax; a row of nothing but -inf gives NaN, as torch's does."""
    with np.errstate(invalid="ignore"):
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return exp / exp.sum(axis=-1, keepdims=True)


def normalised(probs: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1; an all-zero row stays zero."""
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(probs / probs.sum(axis=-1, keepdims=True), nan=0.0)


def next_char_probs(
    logits: np.ndarray,
    temperature: float,
    top_k: int | None,
    pitches: np.ndarray | None = None,
    pitch_top_p: float = 1.0,
) -> np.ndarray:
    """Next-character probabilities: logits/temperature, or with a pitch mask, the
    temperature applied among the pitches only (see pitch_tempered) and the pitches cut to
    their nucleus (see pitch_nucleus)."""
    logits = logits.astype(np.float64)
    if pitches is None:
        probs = softmax(logits / temperature)
    else:
        probs = pitch_tempered(logits, temperature, pitches, pitch_top_p)
    if top_k is not None and top_k < probs.shape[-1]:
        threshold = np.partition(probs, -top_k, axis=-1)[:, -top_k:].min(axis=-1, keepdims=True)
        probs = normalised(np.where(probs < threshold, 0.0, probs))
    return probs


def draw(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One character id from each row of probabilities (inverse transform sampling: the
    first id whose cumulative probability passes a uniform draw; an id of probability 0
    is never drawn from a row that has any probability; the sampler never leaves a row empty)."""
    cumulative = probs.cumsum(axis=-1)
    target = rng.random((len(probs), 1)) * cumulative[:, -1:]
    return np.minimum((cumulative <= target).sum(axis=-1), probs.shape[-1] - 1)


def pitch_tempered(logits: np.ndarray, temperature: float, pitches: np.ndarray, pitch_top_p: float = 1.0) -> np.ndarray:
    """Whether a pitch comes next, and every other character, at the model's own odds;
    which pitch, sharpened (or flattened) by the temperature.

    A plain temperature below 1 favours whatever single character is likeliest. After a
    note that is often the length `2`, whose rivals (the next pitch) are spread over a
    dozen letters: at 0.8 the shipped model wrote 47% quarter notes where the corpus has
    25%. Keeping the other characters at the model's odds leaves rhythm, bar lines and
    tune endings as the model learned them. Note lengths were sharpened among themselves
    too until a 200-tune comparison showed the rhythm blander for it (notes-per-bar gap to
    the validation tunes -0.060 sharpened, -0.044 at the model's odds; note durations
    -0.030 and -0.012; bench/results/wellformed.md).
    """
    probs = softmax(logits)
    share = probs[:, pitches].sum(axis=-1, keepdims=True)
    # every pitch masked (-inf) gives 0/0: the pitches keep no share
    within = np.nan_to_num(softmax(logits[:, pitches] / temperature), nan=0.0)
    if pitch_top_p < 1:
        within = pitch_nucleus(within, pitch_top_p)
    probs[:, pitches] = within * share
    return probs


def pitch_nucleus(shares: np.ndarray, top_p: float) -> np.ndarray:
    """The likeliest pitches whose shares (rows summing to 1) add up to top_p, the rest
    left out, renormalised: nucleus sampling (Holtzman et al. 2020) among pitches.

    A tune writes about 150 pitches, and its range is set by the most extreme one, so
    rare pitches the model gives a few percent add up: at temperature 0.8 without the cut,
    the models' tunes spanned about 2 semitones more than the training tunes of the same
    length (bench/results/evaluation.md). Leaving out the tail of each choice brings the range back
    while every common step of a melody stays possible.
    """
    order = np.argsort(-shares, axis=-1, kind="stable")
    ordered = np.take_along_axis(shares, order, axis=-1)
    outside = ordered.cumsum(axis=-1) - ordered > top_p
    kept = np.empty_like(shares)
    np.put_along_axis(kept, order, np.where(outside, 0.0, ordered), axis=-1)
    return normalised(kept)
