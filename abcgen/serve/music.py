"""What the page needs to know about a tune's text, and rewriting a stretch of it.

bar_layout finds where each bar of a tune sits in its text (so that the page can select bars
and the check can point at one); check_summary is the strict check (abcgen.abc.check_tune)
as the page shows it; vary rewrites the bars a musician selected and keeps the rest.

Varying a stretch: the model reads the tune up to the first selected bar and writes several
candidates for the stretch from that state, as many bars as were selected. A candidate is
kept when the whole tune with it passes the strict check and it differs from the original.
The kept ones are ranked by how likely the model finds the rest of the tune (every character
after the stretch, to the tune's end) when it follows each candidate: a bar that leads
naturally into the music that comes next ranks first.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from abcgen.abc import FIELD_LINE, TOKEN, check_tune
from abcgen.errors import AbcgenError
from abcgen.options import SamplingOptions, check_temperature

if TYPE_CHECKING:
    from abcgen.sample import TuneModel

MUSIC_TOKENS = {"note", "rest", "measure_rest", "chord_open"}
TOKEN_KINDS = (
    "newline",
    "space",
    "comment",
    "continuation",
    "inline",
    "ending",
    "bar",
    "symbol",
    "decoration",
    "shorthand",
    "tuplet",
    "slur",
    "grace",
    "note",
    "rest",
    "measure_rest",
    "chord_open",
    "chord_close",
    "tie",
    "broken",
)
SECTION_BARS = re.compile(r"^:|:$|\|\]|\|\||\[\|")
TUNE_END = "\n\n"  # what separates tunes in the training text


@dataclass
class BarSpan:
    index: int  # as abcgen.abc numbers bars: 0 for the first bar with notes
    start: int  # offset in the tune's text of its first character
    end: int  # offset just past its last character (before the bar line that closes it)
    line: int  # line of the text (0 = the first line of the tune)
    part: int  # which section: parts are separated by repeats, double bars, endings, P: lines


def body_start(abc: str) -> int:
    """Offset of the first character after the K: line (len(abc) when there is none)."""
    found = re.search(r"^K:.*$", abc, re.M)
    if not found:
        return len(abc)
    return min(found.end() + 1, len(abc))


def bar_layout(abc: str) -> list[BarSpan]:
    """The bars of a tune with their places in the text, read with the strict checker's
    tokens; a stretch the tokens cannot read ends the layout there."""
    offset = body_start(abc)
    body = abc[offset:]
    bars: list[BarSpan] = []
    part, start, last_music, has_music, position, at_line_start = 0, None, 0, False, 0, True

    def close() -> None:
        nonlocal start, has_music
        if start is not None and has_music:
            bars.append(
                BarSpan(len(bars), offset + start, offset + last_music, abc.count("\n", 0, offset + start), part)
            )
        start, has_music = None, False

    def boundary() -> None:
        nonlocal part
        if bars and bars[-1].part == part:
            part += 1

    while position < len(body):
        if at_line_start:
            line_end = body.find("\n", position)
            line_end = len(body) if line_end < 0 else line_end
            text = body[position:line_end]
            if FIELD_LINE.match(text) or text.startswith("%"):
                if text[:2] in ("P:", "K:", "M:"):
                    close()
                    boundary()
                position = line_end
                continue
        match = TOKEN.match(body, position)
        if match is None:
            break
        kind = next(name for name in TOKEN_KINDS if match[name] is not None)
        at_line_start = kind == "newline"
        if kind == "bar" or (kind == "ending" and has_music):
            close()
        if kind == "ending" or (kind == "bar" and (SECTION_BARS.search(match[0]) or match["bar_ending"])):
            boundary()
        elif kind not in ("bar", "newline", "space", "comment", "continuation", "inline"):
            start = position if start is None else start
            last_music = match.end()
            has_music = has_music or kind in MUSIC_TOKENS
        position = match.end()
    close()
    return bars


def check_summary(abc: str) -> dict:
    """The strict check as the page shows it: ok, the reason and rule, and where the bar it
    names sits in the text."""
    result = check_tune(abc.strip())
    layout = bar_layout(abc)
    found: dict = {
        "ok": result.ok,
        "reason": result.reason,
        "rule": result.rule,
        "bar": None,
        "bars": [vars(bar) for bar in layout],
    }
    if result.bad_bar is not None:
        bar = layout[result.bad_bar] if result.bad_bar < len(layout) else None
        found["bar"] = {
            "index": result.bad_bar,
            "number": result.bad_bar + 1,
            "start": bar.start if bar else None,
            "end": bar.end if bar else None,
            "line": bar.line if bar else None,
        }
    return found


# ---------------------------------------------------------------- vary


def vary(
    tune_model: TuneModel,
    abc: str,
    first: int,
    last: int,
    count: int = 3,
    temperature: float = SamplingOptions.temperature,
    seed: int | None = None,
    tries: int = 12,
    rounds: int = 3,
    cancelled: Callable[[], bool] | None = None,
) -> dict:
    """Rewrite bars first..last (indices, inclusive) of a tune: up to `count` candidates,
    best first, each {abc, stretch, score} where score is the mean log-probability per
    character the model gives the rest of the tune after it."""
    abc = abc.strip()
    check_temperature(temperature)
    layout = bar_layout(abc)
    if not layout:
        raise AbcgenError("the tune has no bars to vary")
    if not 0 <= first <= last < len(layout):
        raise AbcgenError(f"bars {first + 1}-{last + 1} are not in the tune, which has {len(layout)} bars")
    prefix, original, tail = (
        abc[: layout[first].start],
        abc[layout[first].start : layout[last].end],
        abc[layout[last].end :],
    )
    if "\nK:" not in "\n" + prefix:
        raise AbcgenError("the tune needs a header ending in a K: line before its first bar")
    tune_model.vocab.encode(prefix + tail)  # one clear line for characters the model never saw
    bars_wanted = last - first + 1
    rng = np.random.default_rng(seed)
    kept: dict[str, float] = {}
    with tune_model.steps.running():
        for _ in range(rounds):
            for stretch in write_stretches(
                tune_model,
                prefix,
                bars_wanted,
                tries,
                temperature,
                rng,
                SamplingOptions.pitch_top_p,
                cancelled,
            ):
                if stretch.strip() and stretch.strip() != original.strip() and stretch not in kept:
                    if check_tune(prefix + stretch + tail).ok:
                        kept[stretch] = math.nan
            if len(kept) >= count:
                break
        for stretch in kept:
            kept[stretch] = score_tail(tune_model, prefix + stretch, tail)
        original_score = score_tail(tune_model, prefix + original, tail)
    ranked = sorted(kept.items(), key=lambda item: -item[1])[:count]
    return {
        "first": first,
        "last": last,
        "original": original,
        "original_score": original_score,
        "candidates": [
            {"abc": prefix + stretch + tail, "stretch": stretch, "score": score} for stretch, score in ranked
        ],
    }


def write_stretches(
    tune_model: TuneModel,
    prefix: str,
    bars_wanted: int,
    tries: int,
    temperature: float,
    rng: np.random.Generator,
    pitch_top_p: float,
    cancelled: Callable[[], bool] | None = None,
) -> list[str]:
    """`tries` stretches of bars_wanted bars that the model writes after prefix, each
    without the bar line that closes its last bar (the tune's own bar line stays)."""
    from abcgen.form import Place, input_ids
    from abcgen.shaping import draw, next_char_probs

    steps, vocab, config = tune_model.steps, tune_model.vocab, tune_model.config
    logits, state = steps.start(input_ids(TUNE_END + prefix, vocab, config.form, config.form_count), tries)
    logits = logits.copy()
    # a stretch starts with music: not a bar line, space or line break
    logits[:, [vocab.index[ch] for ch in "|:] \n\\" if ch in vocab.index]] = -np.inf
    place = Place()
    for ch in TUNE_END + prefix:
        place = place.after(ch)
    texts, places = [""] * tries, [place] * tries
    watchers = [_BarCounter() for _ in range(tries)]
    limit = 80 * bars_wanted + 40
    active = list(range(tries))
    done: list[str] = []
    while active:
        if cancelled is not None and cancelled():
            raise AbcgenError("cancelled")
        probs = next_char_probs(logits, temperature, None, tune_model.pitches, pitch_top_p)
        chosen = draw(probs, rng).tolist()
        keep, feed = [], []
        for row, (i, choice) in enumerate(zip(active, chosen)):
            ch = vocab.chars[choice]
            texts[i] += ch
            if texts[i].endswith(TUNE_END) or len(texts[i]) > limit:
                continue  # the tune ended, or the stretch ran on: not a candidate
            if watchers[i].feed(ch) >= bars_wanted:
                done.append(texts[i][:-1].rstrip(" "))
                continue
            places[i] = places[i].after(ch)
            feed.append(choice + len(vocab) * places[i].form_class(config.form, config.form_count))
            keep.append(row)
        if not keep:
            break
        if len(keep) < len(active):
            state = steps.select(state, keep)
            active = [active[row] for row in keep]
        logits, state = steps.step(np.array(feed, dtype=np.int64), state)
    return done


class _BarCounter:
    """Counts bars as a stretch is written: a bar ends at the first bar-line character
    (| or :) after some music, outside chord symbols, decorations and [chords]."""

    def __init__(self):
        self.bars, self.music, self.quote, self.bang, self.depth = 0, False, False, False, 0

    def feed(self, ch: str) -> int:
        if self.quote:
            self.quote = ch != '"'
        elif self.bang:
            self.bang = ch != "!"
        elif ch == '"':
            self.quote = True
        elif ch == "!":
            self.bang = True
        elif ch == "[":
            self.depth += 1
        elif ch == "]" and self.depth:
            self.depth -= 1
        elif ch in "|:" and not self.depth:
            if self.music:
                self.bars += 1
                self.music = False
        elif ch in "ABCDEFGabcdefgzxZ":
            self.music = True
        return self.bars


def score_tail(tune_model: TuneModel, head: str, tail: str) -> float:
    """Mean log-probability per character (nats) of tail and the tune's end after head."""
    from abcgen.form import input_ids
    from abcgen.shaping import softmax

    steps, vocab, config = tune_model.steps, tune_model.vocab, tune_model.config
    text = TUNE_END + head + tail + TUNE_END
    ids = input_ids(text, vocab, config.form, config.form_count)
    begin = len(TUNE_END + head)
    logits, state = steps.start(ids[:begin], 1)
    total = 0.0
    for position in range(begin, len(text)):
        total += math.log(softmax(logits.astype(np.float64))[0, vocab.index[text[position]]])
        if position + 1 < len(text):
            logits, state = steps.step(np.array(ids[position : position + 1], dtype=np.int64), state)
    return total / (len(text) - begin)
