"""Following a tune as it is written, one character at a time: where each bar begins, and
whether the bar just finished, or a header value just written, is one to keep.

Bars are checked as they are written (fix_bars): when a bar is complete, the tune so far goes
through the same ABC check as whole tunes, and a bar of the wrong length is written again from
its first character, from the model state saved there (a Snapshot). The shipped model
miscounts about one bar in forty; resampling that bar, rather than the whole tune, keeps the
other bars and costs a few steps. Under a --structure, the structure rules (abcgen.structure)
judge each bar's end instead: go on, close the part, or write the bar again. Header values get
the same care: a meter or key that the model's training tunes never used (M:4/8, M:A/4) is
written again, as a tune written in it would be guesswork.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable

from abcgen.abc import CheckResult, check_tune
from abcgen.form import MUSIC
from abcgen.options import UNIT_LENGTH_VALUE
from abcgen.structure import CLOSE, EXTEND, REWRITE, SHORTEN

if TYPE_CHECKING:
    import numpy as np

    from abcgen.sample import Draft


TUNE_END = "\n\n"
MAX_BAR_REWINDS = 50  # per tune: past this, the tune is left as the model writes it
BAR_TRIES = 8  # tries at one bar before going back one bar further
LINE_TRIES = 8  # tries at a header value the model writes (M:, L:, K:)
# Between two bars: barline characters, ending numbers, spaces and line breaks. Any other
# character begins a bar, except a letter that begins a field line (P:B) in the body.
BETWEEN_BARS = set("|:]0123456789 \t\n\\")
BODY_METER_OR_LENGTH = re.compile(r"(^|\[)[ML]:", re.M)


class Segment(Enum):
    """What a draft is writing: text given to it (a header field's name, a value asked for,
    a prime), a header value the model writes, or the tune body."""

    FIXED = "fixed"
    LINE = "line"
    BODY = "body"


class Spot(Enum):
    """Where a BarWatch stands in a tune body."""

    BETWEEN = "between bars"
    BAR = "in a bar"
    FIELD = "in a field line"


@dataclass
class Snapshot:
    """The model just before it wrote a character: what it needs to write it again."""

    length: int  # characters of the tune before that character
    state: Any  # the engine's own (abcgen.inference.Steps)
    logits: np.ndarray


@dataclass
class BarWatch:
    """Follows a tune body, character by character, to see where each bar begins.

    After a barline the watch is "between" bars (barline characters, ending numbers,
    spaces, line breaks, field lines such as P:B); the first character of music starts
    a bar. A `[` is decided one character later: `[1` is an ending and `[|` a barline,
    while `[CEG]` and `[M:3/4]` start a bar.
    """

    body_start: Snapshot | None = None  # to write again a tune that ends before any bar
    starts: list[Snapshot] = field(default_factory=list)  # a Snapshot at each bar's first character
    rewinds: int = 0
    tries_here: int = 0  # rewinds to the current last start
    spot: Spot = Spot.BETWEEN
    depth: int = 0  # [ brackets open inside the bar
    in_quote: bool = False  # inside a "chord symbol"
    bracket: Snapshot | None = None  # taken at a [ between bars until it is decided
    line_start: bool = True

    def step(self, ch: str, snapshot: Callable[[], Snapshot]) -> Snapshot | None:
        """Take the next character; return the Snapshot of a bar that begins with it.

        snapshot() gives the model as it was before ch; it is called only when needed.
        """
        started = None
        if self.spot is Spot.FIELD:
            self.spot = Spot.BETWEEN if ch == "\n" else Spot.FIELD
        elif self.spot is Spot.BETWEEN:
            started = self.between(ch, snapshot)
        else:
            self.in_bar(ch)
        self.line_start = ch == "\n"
        return started

    def between(self, ch: str, snapshot: Callable[[], Snapshot]) -> Snapshot | None:
        if self.bracket is not None:
            bracket, self.bracket = self.bracket, None
            if ch.isdigit() or ch == "|":
                return None
            self.spot, self.depth = Spot.BAR, 1
            self.in_bar(ch)
            return bracket
        if ch == "[":
            self.bracket = snapshot()
        elif self.line_start and ch.isalpha() and ch not in MUSIC:
            self.spot = Spot.FIELD
        elif ch not in BETWEEN_BARS:
            self.spot, self.depth = Spot.BAR, 0
            self.in_bar(ch)
            return snapshot()
        return None

    def in_bar(self, ch: str) -> None:
        if self.in_quote or ch == '"':
            self.in_quote = self.in_quote != (ch == '"')
        elif ch == "[":
            self.depth += 1
        elif ch == "]" and self.depth:
            self.depth -= 1
        elif ch in "|:" and not self.depth:
            self.spot = Spot.BETWEEN

    def rewind_target(self) -> Snapshot:
        """Where to write again from: the start of the last bar, or of the bar before it
        once the last one has failed BAR_TRIES times (its context may allow no good bar)."""
        if self.tries_here >= BAR_TRIES and len(self.starts) > 1:
            self.starts.pop()
            self.tries_here = 0
        self.tries_here += 1
        return self.starts[-1]

    def rewind(self, to: Snapshot, line_start: bool) -> Snapshot:
        """Start the bar that begins at `to` again (line_start: at the start of a line)."""
        self.spot, self.bracket, self.in_quote, self.depth = Spot.BETWEEN, None, False, 0
        self.line_start = line_start
        self.rewinds += 1
        return to


def watch_bars(draft: Draft, ch: str, snapshot: Callable[[], Snapshot]) -> Snapshot | None:
    """Follow the body as ch is added. When a bar turns out to have the wrong length,
    cut it from the text and return the Snapshot to write it again from."""
    watch = draft.bars = draft.bars or BarWatch(body_start=snapshot())
    if draft.rules is not None and not draft.cut:
        return watch_structure(draft, watch, ch, snapshot)
    if draft.cut or watch.rewinds >= MAX_BAR_REWINDS:
        return None
    if draft.done:  # the tune has ended, so its last bar is complete
        if not watch.starts and watch.body_start is not None:  # and it has none: write the body again
            draft.text, draft.done = (draft.text + TUNE_END)[: watch.body_start.length], False
            return watch.rewind(watch.body_start, line_start=True)
        result = check_tune(last_bars(draft.text, watch.starts, len(draft.text)))
    else:
        begun = watch.step(ch, snapshot)
        if begun is None or (watch.starts and watch.starts[-1].length == begun.length):
            return None
        if watch.starts:
            result = check_tune(last_bars(draft.text, watch.starts, begun.length), complete=False)
        if not watch.starts or not bars_fail(result):
            watch.starts.append(begun)
            watch.tries_here = 0
            return None
    if not bars_fail(result):
        return None
    if result.tune is not None and result.bad_bar is not None and result.bad_bar < len(result.tune.bars) - 1:
        # An earlier bar is wrong: the watch missed where a bar ended (garbled barlines).
        # Rewriting the last bar cannot mend it; rewriting the last two can, as the check
        # only saw text from the start of the one before it.
        if len(watch.starts) < 2:
            watch.rewinds = MAX_BAR_REWINDS
            return None
        watch.tries_here = BAR_TRIES
    target = watch.rewind_target()
    draft.text, draft.done = draft.text[: target.length], False
    return watch.rewind(target, line_start=draft.text.endswith("\n"))


def watch_structure(draft: Draft, watch: BarWatch, ch: str, snapshot: Callable[[], Snapshot]) -> Snapshot | None:
    """Follow the body under the structure rules: at each bar's end, go on, write the
    part's closing bar line, or cut the bar and return the Snapshot to write it from."""
    rules = draft.rules
    if draft.done or rules is None:
        return None
    ends_bar = ch == "|" and rules.lexer.ends_bar() and not draft.closing
    if ends_bar and watch.starts:
        end = rules.bar_end(draft.text, may_rewrite=watch.rewinds < MAX_BAR_REWINDS, bar_start=watch.starts[-1].length)
        if end.action == EXTEND:  # take the bar line back: the model writes on from before it
            draft.text = draft.text[:-1]
            rules.replay(draft.text)
            rules.bar_too_short = True
            watch.rewinds += 1
            return snapshot()
        if end.action in (SHORTEN, REWRITE):
            # shorten: write the bar again as far as the cut, then the closing
            target = watch.starts[-1] if end.action == SHORTEN else watch.rewind_target()
            if end.action == SHORTEN:
                draft.forced, draft.closing = draft.text[target.length : end.cut].rstrip() + end.closing, True
            draft.text, draft.done = draft.text[: target.length], False
            rules.replay(draft.text)
            return watch.rewind(target, line_start=draft.text.endswith("\n"))
        if end.action == CLOSE:
            draft.text = draft.text[:-1] + end.closing[0]
            draft.forced, draft.closing = end.closing[1:], True
            ch = end.closing[0]
            if draft.form is not None:
                draft.form_class = draft.form.feed(draft.text)
    rules.feed(ch)
    begun = watch.step(ch, snapshot)
    if begun is not None and not (watch.starts and watch.starts[-1].length == begun.length):
        watch.starts.append(begun)
        watch.tries_here = 0
    if draft.closing and not draft.forced:
        draft.closing = False
        draft.forced = rules.closed(len(draft.text))
    return None


LOCAL_RULES = {"bar length", "syntax", "tie", "bracket", "range"}


def bars_fail(result: CheckResult) -> bool:
    """Whether a check of the last bars found them unreadable or of the wrong length (two
    bars of rests are fine there: the whole tune has notes). Repeats, endings and sections
    span more than two bars: the whole tune's check judges them."""
    return not result.ok and result.rule in LOCAL_RULES


def watch_header_value(draft: Draft, snapshot: Callable[[], Snapshot], meta: dict) -> Snapshot | None:
    """Follow a header value the model writes. When it ends and is not one the model's
    training tunes used (M:4/8, M:A/4, L:1/7), return the Snapshot to write it again from."""
    if draft.line_start is None:
        draft.line_start = snapshot()
    if draft.mode is Segment.LINE or draft.done:
        return None
    start, draft.line_start = draft.line_start, None
    line = draft.text[start.length :].strip()
    field_name = draft.text[: start.length].rstrip(":").rsplit("\n", 1)[-1]
    if header_value_ok(field_name, line, meta) or draft.line_tries >= LINE_TRIES:
        draft.line_tries = 0
        return None
    draft.line_tries += 1
    draft.reopen_line(start.length)
    return start


def header_value_ok(name: str, value: str, meta: dict) -> bool:
    """Whether a generated header value is one to keep: a meter or key the training tunes
    used (when the checkpoint records them), a unit length 1/2^n, a title that is not empty."""
    known = {"M": meta.get("meters"), "K": meta.get("keys")}.get(name)
    if known:
        return value in known
    if name == "L":
        return UNIT_LENGTH_VALUE.fullmatch(value) is not None
    return bool(value)


def last_bars(text: str, starts: list[Snapshot], end: int) -> str:
    """The header and the last two bars of text[:end]: enough to judge the last bar, as
    the one before it shows the barline that opens it. The whole text when the body
    changes meter or unit length, or is still at its first bar.
    """
    key_at = text.find("\nK:") + 1
    head_end = text.find("\n", key_at) + 1
    if len(starts) < 2 or key_at <= 0 or head_end <= 0 or BODY_METER_OR_LENGTH.search(text, head_end, end):
        return text[:end]
    return text[:head_end] + text[starts[-2].length : end]
