"""The form a tune is written to, and the rules that hold the sampler to it.

A structure is a list of parts, each a whole number of bars, played once or repeated:
`AABB` is two repeated 8-bar parts (the form of most reels and jigs), `A16B16` two 16-bar
parts played once, `AABBCC` three repeated parts. It is written as letters, a doubled letter
for a repeated part, each letter optionally followed by its number of bars (8 when left out).
`auto` draws one from the forms of the training tunes in the tune's meter (the checkpoint
keeps their counts); `none` writes without structure rules.

While a tune body is written (constrained decoding, see BodyRules):
- characters that would break the structure or ABC are removed from the choice: a field
  line or inline field in the body, a `:` (repeat signs are written by the rules, never by
  the model), a second `|` or `]` or an ending number after a bar line, a `]`, `)` or `}`
  with nothing open, a line break inside a chord symbol, a `\\` that does not end a line, a
  blank line (the end of the tune) before the last part is done, a bar line before a note
  (an empty bar), a bar line, line break or `(` while a tuplet still takes notes, a second
  `/` in a length (`A/2/`), more than 4 grace notes, a chord symbol that does not start with
  a root, holds a character no chord symbol has (a bar line, a space), or runs past 8
  characters; after the bar that brings a staff line to 32 notes, a
  line break is the only choice (abcm2ps cannot fit much more on a line; a part's last two
  bars join the line up to 48), and inside a bar, before the line holds 6 notes, or with a
  part's last two bars still to come, none is;
- when a bar ends, the part so far goes through the strict check (abcgen.abc): a bar of the
  wrong length, a tie between different pitches, a part that runs past its length, a last
  note off the tonic, and the sampler writes that bar again (see sample.watch_bars); a bar
  that is only short takes its bar line back instead, and the model writes on from before
  it, with no bar line until another note (a model that knows few 9/8 tunes writes 6/8 bars
  there, and a bar written again from its start was short again), as does a tune's first
  bar, its pickup, when it holds more than half a bar (1.8% of the training tunes' do);
- a part that began with a pickup and reaches its length with a full bar is cut at the note
  where, with the pickup, it makes one bar (`d2|...|B2A2 G2:|`), as real tunes close, and
  the notes cut off begin the next part as its pickup (`|:^F2|`);
- a part's first bar completes the bar that closed the part before (`efe d2:|` then
  `|:A|`), or is a full bar after a full one, and is written again until it does;
- when a part reaches its length, its closing bar line is written for it: `:|` for a
  repeated part, `||` between parts, `|]` at the end, and `|:` opens a repeated part that
  follows another repeat; a slur still open ends on the part's last note (`(dcB A2):|`).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from abcgen.abc import check_tune, ends_on_tonic
from abcgen.errors import AbcgenError
from abcgen.form import MUSIC

DEFAULT_STRUCTURE = "AABB"
PART_BARS = 8
MAX_PARTS = 8
MAX_PART_BARS = 32
FOLK_PART_BARS = (4, 8, 16)
PART = re.compile(r"([A-Z])(\d+)?")
# Outside chord symbols and decorations, the characters a tune body may hold (the others,
# such as field letters, only begin field lines, which the rules leave out).
NOTE_END = set("ABCDEFGabcdefgzxZ,'0123456789/]")  # what a length, tie or > may follow
SLUR_OPEN = re.compile(r"\((?!\d)")
# A note's pitch with its accidental, or text in which letters are no notes (chord symbols,
# decorations): to find the accidentals a bar holds for each pitch.
NOTE_OR_TEXT = re.compile(r'"[^"]*"|![^!]*!|\+[^+]*\+|(\^\^|\^|__|_|=)?([A-Ga-g][,\']*)')
# A staff line (lines joined by a trailing \\) is ended after the bar that brings it to this
# many notes: abcm2ps refuses to squeeze much more into a line ("Line too much shrunk"), and
# the training tunes' lines hold at most about 40.
STAFF_LINE_NOTES = 32
# ... except that a part's last SHORT_LINE_BARS bars join the line up to this many notes
# (abcm2ps fits about 50 eighth notes with their chord symbols, 48 sixteenths).
MAX_STAFF_LINE_NOTES = 48
# No staff line break with this many bars or fewer left in the part: they would make a line
# of their own, which real tunes seldom have (1-2 bars on 2.5% of the Nottingham training
# tunes' lines, 12% of sampled ones without this rule) and abcm2ps sets "underfull".
SHORT_LINE_BARS = 2
# Nor a line break before a staff line holds this many notes (1% of the training tunes'
# lines hold fewer): a line of a pickup or a bar or two is one abcm2ps sets "underfull".
MIN_STAFF_LINE_NOTES = 6
MAX_CHORD_SYMBOL = 8  # characters: "Bbmaj7/F" is the longest the models write well
CHORD_CHARACTERS = set('ABCDEFGabcdefg#mjisuM0123456789/+"')  # abcgen.abc.CHORD_SYMBOL's, and the closing quote
MAX_GRACE_NOTES = 4
PRINTABLE = set(string.printable)
STARTS_TOKEN = set('ABCDEFGabcdefgzx^_=" ([{.~')  # a cut before one of these ends a note
BODY_CHARACTERS = set("ABCDEFGabcdefgzxZ^_=,'0123456789/|[]()<>{}-.~\" \n\\")


@dataclass(frozen=True)
class Part:
    bars: int
    repeated: bool


@dataclass(frozen=True)
class Structure:
    parts: tuple[Part, ...]

    def __str__(self) -> str:
        return "".join(
            (letter + (str(part.bars) if part.bars != PART_BARS else "")) * (2 if part.repeated else 1)
            for letter, part in zip("ABCDEFGH", self.parts)
        )

    @classmethod
    def parse(cls, text: str) -> "Structure":
        """`AABB`, `A16B16`, `AABBCC`, `A8A8B8`...; raises AbcgenError with one line."""
        spec = text.replace(" ", "")
        found = PART.findall(spec)
        if not spec or "".join(letter + number for letter, number in found) != spec:
            raise AbcgenError(
                f"structure {text!r} is not a form such as AABB or A16B16 "
                "(letters for parts, a doubled letter for a repeat, bars after a letter)"
            )
        parts: list[tuple[str, int, int]] = []  # letter, bars, times written
        for letter, number in found:
            bars = int(number) if number else PART_BARS
            if parts and parts[-1][0] == letter and parts[-1][2] == 1 and parts[-1][1] == bars:
                parts[-1] = (letter, bars, 2)
            else:
                parts.append((letter, bars, 1))
        if len(parts) > MAX_PARTS:
            raise AbcgenError(f"structure {text!r} has {len(parts)} parts; at most {MAX_PARTS}")
        for letter, bars, _ in parts:
            if not 1 <= bars <= MAX_PART_BARS:
                raise AbcgenError(f"part {letter} of {text!r} has {bars} bars; a part has 1 to {MAX_PART_BARS}")
        return cls(tuple(Part(bars, times == 2) for _, bars, times in parts))


def structure_of(tune: str) -> str | None:
    """The structure a tune is written in (`AABB`), or None when it fails the check or has
    a section that is not a whole number of bars."""
    result = check_tune(tune)
    if not result.ok or result.tune is None or not result.tune.sections:
        return None
    sections = result.tune.sections
    counts = [section.bar_count or 0 for section in sections]
    if any(not 1 <= count <= MAX_PART_BARS for count in counts) or len(counts) > MAX_PARTS:
        return None
    return str(Structure(tuple(Part(count, section.repeated) for count, section in zip(counts, sections))))


def corpus_forms(tunes: list[str]) -> dict[str, dict[str, int]]:
    """{meter: {structure: number of tunes}} over some tunes: what `auto` draws from. Only
    forms whose parts have 4, 8 or 16 bars count (a 32-bar "part" is a tune written out
    without marks; a 9-bar one a slip of the pen)."""
    forms: dict[str, Counter] = {}
    for tune in tunes:
        form = structure_of(tune)
        meter = check_tune(tune).meter
        if form and meter and all(part.bars in FOLK_PART_BARS for part in Structure.parse(form).parts):
            forms.setdefault(meter, Counter())[form] += 1
    return {meter: dict(counts.most_common()) for meter, counts in forms.items()}


def choose_structure(spec: str | None, meter: str, forms: dict, rng: np.random.Generator) -> Structure | None:
    """The structure for one tune: spec itself, or with `auto` one drawn from the forms of
    the training tunes in this meter (their counts as odds), or None for `none`."""
    if spec is None or spec == "none":
        return None
    if spec != "auto":
        return Structure.parse(spec)
    counts = forms.get(meter) or {DEFAULT_STRUCTURE: 1}
    names = list(counts)
    odds = np.array([counts[name] for name in names], dtype=float)
    return Structure.parse(names[rng.choice(len(names), p=odds / odds.sum())])


def check_structure_option(spec: str | None) -> None:
    if spec not in (None, "auto", "none"):
        Structure.parse(spec)


# ---------------------------------------------------------------- the rules while writing


@dataclass
class Lexer:
    """Just enough of a tune body's syntax to know which characters may come next."""

    previous: str = "\n"
    in_quote: bool = False
    chord: bool = False
    grace: bool = False
    slurs: int = 0
    tuplet: str = ""  # "(", "(3", "(3:" ... while a tuplet mark is being written
    music: bool = False  # a note or rest since the last bar line
    after_bar: bool = False  # a bar line and no note or rest since
    staff_notes: int = 0  # notes and rests on the staff line so far (lines joined by \\)
    tuplet_left: int = 0  # notes a tuplet still takes
    grace_notes: int = 0  # in the grace group being written
    quote_length: int = 0  # characters of the chord symbol being written
    length: str = ""  # the note length being written (`3/2`)

    def ends_bar(self) -> bool:
        """Whether a `|` now would end a bar (rather than sit in a chord symbol or chord)."""
        return self.music and not (self.in_quote or self.chord or self.grace)

    def feed(self, ch: str) -> None:
        if not self.in_quote and not self.grace:
            if ch in "|:" and not self.chord:
                self.music = False
                self.after_bar = True
            elif ch in MUSIC:
                self.music = not self.chord or self.music
                self.after_bar = False
                self.staff_notes += 1
                self.tuplet_left = max(0, self.tuplet_left - 1)
            elif ch == "\n" and self.previous != "\\":
                self.staff_notes = 0
        if self.grace and ch in "ABCDEFGabcdefg":
            self.grace_notes += 1
        if self.in_quote:
            self.in_quote = ch != '"'
            self.quote_length += 1
        elif ch == '"':
            self.in_quote, self.quote_length = True, 0
        elif ch == "[":
            self.chord = True
        elif ch == "]":
            self.chord = False
        elif ch in "{}":
            self.grace, self.grace_notes = ch == "{", 0
        elif ch == ")":
            self.slurs -= 1
        spec, self.tuplet = self.tuplet, self.next_tuplet(ch)
        self.length = self.length + ch if ch in "0123456789/" and not self.tuplet and not self.in_quote else ""
        if spec[1:2].isdigit() and not self.tuplet:  # "(3" is written: its notes follow
            self.tuplet_left = int(spec[1]) - (ch in "ABCDEFGabcdefgzx")
        if self.tuplet == "(" and not self.in_quote:
            self.slurs += 1
        elif self.tuplet[:1] == "(" and len(self.tuplet) == 2 and self.previous == "(":
            self.slurs -= 1  # "(3" opened a tuplet, not a slur
        self.previous = ch

    def next_tuplet(self, ch: str) -> str:
        if self.in_quote:
            return ""
        if ch == "(":
            return "("
        if self.tuplet and (ch.isdigit() or (ch == ":" and len(self.tuplet) < 5)):
            return self.tuplet + ch
        return ""

    def forbidden(self, ending_allowed: bool) -> set[str]:
        """Characters that cannot come next without breaking ABC or the structure."""
        if self.in_quote:  # a chord symbol: a root first, and short (then rewinds judge it)
            if self.previous == '"':
                return PRINTABLE - set("ABCDEFG")
            # only what chord symbols are made of: a quote left open would swallow bar lines
            return PRINTABLE - {'"'} if self.quote_length >= MAX_CHORD_SYMBOL else PRINTABLE - CHORD_CHARACTERS
        if self.previous == "\\":
            return BODY_CHARACTERS - {"\n"}
        # chords ([GB]) and inline fields are left out: the model rarely closes them
        blocked = {"[", ":"} if not self.tuplet[1:] else {"["}
        if self.after_bar:
            blocked.add("|")  # an empty bar (`|\n|`)
        if self.previous == "|":
            blocked |= set("|]:0123456789")
        if self.previous == "[":
            blocked |= set("|0123456789[]")
        if not self.chord:
            blocked.add("]")
        else:
            blocked |= {"[", "|", "\n", "\\", '"', "{", "}"}
        if not self.grace:
            blocked.add("}")
        elif self.grace_notes >= MAX_GRACE_NOTES and self.previous in "ABCDEFGabcdefg":
            return BODY_CHARACTERS - {"}"}
        else:
            blocked |= {"{", "|", "[", "\n", "(", ")", '"', "\\", "<", ">", "-"}
        if self.previous not in NOTE_END or self.tuplet:
            blocked |= set("/-<>")  # a length, tie or broken rhythm needs a note
            if not self.tuplet:
                blocked |= set("0123456789")
        if "/" in self.length and self.length[-1].isdigit():
            blocked.add("/")  # `A/2/` is no length
        if self.tuplet[-1:].isdigit():
            blocked |= set("0123456789")  # (3 and not (33
        if self.tuplet_left or self.tuplet[1:2].isdigit():
            blocked |= {"(", "|", "\n", "\\"}  # a tuplet's notes first (nor one in another)
        if not self.previous.isdigit():
            blocked.add("0")  # no length starts with 0 (a zero length, or /0)
        if self.previous in "^_=":
            blocked |= BODY_CHARACTERS - set("ABCDEFGabcdefg^_")
        if self.previous in "ABCDEFG,":
            blocked.add("'")
        if self.previous in "abcdefg'":
            blocked.add(",")
        if self.slurs <= 0:
            blocked.add(")")
        if self.previous == "\n" and not ending_allowed:
            blocked.add("\n")
        if self.previous in " \n":
            blocked.add("\\")
        return blocked


GO_ON, CLOSE, SHORTEN, REWRITE, EXTEND = "go on", "close", "shorten", "rewrite", "extend"


@dataclass(frozen=True)
class BarEnd:
    """What the rules say when a bar ends: go on; close the part, writing `closing` in place
    of the bar line; shorten, cutting the bar at text offset `cut` and closing there;
    extend, taking the bar line back (the bar is short: more notes first); or rewrite the
    bar, for `reason` ("long": the part ran past its length)."""

    action: str
    closing: str = ""
    cut: int = 0
    reason: str = ""
    carry: str = ""  # shorten: the notes cut off, written after the closing as the next part's pickup


@dataclass
class BodyRules:
    """The structure rules for one tune being written (see the module doc)."""

    structure: Structure
    head: str  # the tune's header up to and including its K: line
    part_starts: list[int] = field(default_factory=list)  # text offsets where each part began
    lexer: Lexer = field(default_factory=Lexer)
    finished: bool = False
    bar_ends: list[tuple[int, Fraction]] = field(default_factory=list)  # (text offset, bars left) at each
    carry: str = ""  # the pickup to write once the part's closing is written (BarEnd.carry)
    bar_too_short: bool = False  # a bar line was taken back: none until another note

    @property
    def part(self) -> int:
        return len(self.part_starts) - 1

    def start(self, offset: int) -> None:
        self.part_starts = [offset]

    def forbidden(self) -> set[str]:
        if self.line_must_end():
            return BODY_CHARACTERS - {"\n"}
        blocked = self.lexer.forbidden(self.finished)
        if self.bar_too_short:
            blocked.add("|")
        if self.lexer.previous != "\\" and not self.line_may_end():
            blocked.add("\n")
        if self.lexer.music:
            blocked.add("\\")  # a staff line continued inside a bar
        return blocked

    def line_may_end(self) -> bool:
        """Whether the model may end the staff line here: right after a bar line (a break
        inside a bar leaves its bar line, or the part's closing repeat, to begin the next
        line), once the line holds MIN_STAFF_LINE_NOTES notes, and not with the part's last
        SHORT_LINE_BARS bars still to come (they would stand on a line of their own)."""
        lexer = self.lexer
        return lexer.previous == "|" and lexer.staff_notes >= MIN_STAFF_LINE_NOTES and not self.last_bars()

    def line_must_end(self) -> bool:
        """Whether the staff line is full: after the bar that brings it to STAFF_LINE_NOTES
        notes, or with only the part's last bars to come, to MAX_STAFF_LINE_NOTES."""
        lexer = self.lexer
        return lexer.previous == "|" and lexer.staff_notes >= (
            MAX_STAFF_LINE_NOTES if self.last_bars() else STAFF_LINE_NOTES
        )

    @property
    def bars_left(self) -> Fraction | None:
        """Bars still to come in the part, as its last bar end found (None: none yet)."""
        if self.bar_ends and self.bar_ends[-1][0] >= self.part_starts[-1] and not self.finished:
            return self.bar_ends[-1][1]
        return None

    def last_bars(self) -> bool:
        """Whether only the part's last SHORT_LINE_BARS bars are still to come."""
        return self.bars_left is not None and self.bars_left <= SHORT_LINE_BARS

    def feed(self, ch: str) -> None:
        """Follow one more character of the body."""
        self.lexer.feed(ch)
        if ch in MUSIC and not (self.lexer.in_quote or self.lexer.grace):
            self.bar_too_short = False

    def replay(self, text: str) -> None:
        """Follow the text again after a rewind (parts that began after its end are undone)."""
        while len(self.part_starts) > 1 and self.part_starts[-1] > len(text):
            self.part_starts.pop()
        while self.bar_ends and self.bar_ends[-1][0] > len(text):
            self.bar_ends.pop()
        self.finished, self.bar_too_short = False, False  # a bar written again keeps bar_ends' place
        self.lexer = Lexer()
        for ch in text[self.part_starts[0] :]:
            self.lexer.feed(ch)

    def part_text(self, text: str) -> str:
        return self.head + text[self.part_starts[-1] :]

    def bar_end(self, text: str, may_rewrite: bool = True, bar_start: int | None = None) -> BarEnd:
        """What to do now that a bar has ended with the last character of text (its first
        bar line character), the bar having begun at text offset bar_start (see BarEnd).
        Once may_rewrite is False (the rewinds are spent), the part is closed as soon as it
        is long enough, so that repeats still pair."""
        end = self._bar_end(text, bar_start)
        if end.action in (REWRITE, EXTEND) and not may_rewrite:
            end = (
                BarEnd(CLOSE, closing=self.closing(self.part == len(self.structure.parts) - 1))
                if end.reason == "long"
                else BarEnd(GO_ON)
            )
        if end.action not in (CLOSE, SHORTEN):
            return end
        # slurs still open end on the part's last note: `(dcB A2):|`
        left_out = text[end.cut : -1] if end.action == SHORTEN else ""
        slurs = self.lexer.slurs - len(SLUR_OPEN.findall(left_out)) + left_out.count(")")
        last = self.part == len(self.structure.parts) - 1
        self.carry = "" if last else pickup_from(text[bar_start : end.cut] if bar_start is not None else "", left_out)
        return replace(end, closing=")" * max(slurs, 0) + end.closing, carry=self.carry)

    def _bar_end(self, text: str, bar_start: int | None = None) -> BarEnd:
        part = self.structure.parts[self.part]
        result = check_tune(self.part_text(text[:-1]) + "|", complete=False)
        if result.tune is None:
            return BarEnd(REWRITE, reason=result.reason or "")
        bars = [bar for bar in result.tune.bars if bar.expected]
        done = sum((bar.duration / bar.expected for bar in bars if bar.expected), Fraction(0))
        short_last = bool(bars) and bars[-1].duration < (bars[-1].expected or 0)
        # the check cannot know yet that a short last bar closes the part: judged below
        if result.bad_bar is not None and not (result.bad_bar == len(result.tune.bars) - 1 and short_last):
            return BarEnd(REWRITE, reason="long" if done >= part.bars else result.reason or "")
        if len(bars) == 1 and not self.part and short_last and bars[0].duration > (bars[0].expected or 0) / 2:
            return BarEnd(EXTEND, reason="a pickup of more than half a bar")  # 1.8% of the training tunes
        if len(bars) == 1 and self.part and bars[0].duration != (bars[0].expected or 0) * self.first_bar_wanted(text):
            return BarEnd(REWRITE, reason="a first bar out of step with the bar that closed the part before")
        first = bars[0] if len(bars) > 1 and bars[0].may_be_short else None
        pickup = first.duration / first.expected if first is not None and first.expected else Fraction(0)
        if done == part.bars or (done == part.bars + pickup and not short_last):
            last = self.part == len(self.structure.parts) - 1
            if text[:-1].rstrip().endswith("-"):  # a tie across a repeat or the tune's end
                return BarEnd(REWRITE, reason="long")
            cut = self.pickup_close(text, bar_start, pickup, last) if 0 < pickup < 1 and not short_last else None
            if cut is not None:
                return BarEnd(SHORTEN, closing=self.closing(last), cut=cut)
            if last and not ends_on_tonic(result.tune, keyless=True):
                return BarEnd(REWRITE, reason="long")
            return BarEnd(CLOSE, closing=self.closing(last))
        if done > part.bars:
            return BarEnd(REWRITE, reason="long")
        if short_last and len(bars) > 1:
            return BarEnd(EXTEND, reason="a short bar inside a part")
        self.bar_ends.append(
            (len(text), part.bars + (pickup if pickup < 1 else 0) - done)
        )  # a full first bar is no pickup
        return BarEnd(GO_ON)

    def first_bar_wanted(self, text: str) -> Fraction:
        """How much of a bar the current part's first bar holds: what the previous part's
        closing bar left of one (a pickup, `efe d2:|` then `|:A|`), or a whole bar after a
        full one: played in turn, the two make one bar (abcgen.abc's joint rule)."""
        before = check_tune(self.head + text[self.part_starts[-2] : self.part_starts[-1]], complete=False)
        bars = [bar for bar in before.tune.bars if bar.expected] if before.tune else []
        closing = bars[-1].duration / bars[-1].expected if bars and bars[-1].expected else Fraction(1)
        return 1 - closing if closing < 1 else Fraction(1)

    def pickup_close(self, text: str, bar_start: int | None, pickup: Fraction, last: bool) -> int | None:
        """Where to cut a part's full last bar so that, with the pickup it began with, it
        makes one bar, as real tunes close such parts (`d2|GABc ... |G6:|`); None if no
        note ends there (or, in the last part, the note there is not the tonic).

        The model alone closes 67% of such parts with the short bar, but under the rules,
        which close a part at its planned length, it had written a full bar 77% of the
        time: it seldom plans the end of a part at the very bar the plan does."""
        if bar_start is None:
            return None
        share = 1 - pickup
        for cut in range(bar_start + 1, len(text) - 1):  # the first cut that keeps `share`:
            if text[cut] not in STARTS_TOKEN:  # before a note's chord symbol, decorations, grace notes
                continue
            bar = text[bar_start:cut]
            result = check_tune(self.head + bar + "|", complete=False)
            if result.tune is None or not result.tune.bars:
                continue
            first = result.tune.bars[0]
            if first.expected is None or first.duration > first.expected * share:
                return None
            if (
                first.duration < first.expected * share
                or bar.rstrip().endswith("-")
                or len(SLUR_OPEN.findall(bar)) > bar.count(")")
            ):
                continue
            return cut if not last or ends_on_tonic(result.tune, keyless=True) else None
        return None

    def closing(self, last: bool) -> str:
        part = self.structure.parts[self.part]
        if last:
            return (":|" if part.repeated else "|]") + "\n\n"
        following = self.structure.parts[self.part + 1]
        return (":|" if part.repeated else "||") + "\n" + ("|:" if following.repeated and part.repeated else "")

    def closed(self, offset: int) -> str:
        """The closing bar line has been written up to offset: the next part begins.
        Returns the text to write first in it: the notes its closing bar was cut from
        (BarEnd.carry), or ""."""
        carry, self.carry = self.carry, ""
        if self.part == len(self.structure.parts) - 1:
            self.finished = True
            return ""
        self.part_starts.append(offset)
        return carry


def pickup_from(kept: str, left_out: str) -> str:
    """The notes cut from a part's closing bar (`^F2` of `B2A2 G2 ^F2|`, `kept` being the
    rest) as the next part's pickup (`^F2|`): they are what the closing bar leaves of one
    bar, and the model wrote them to lead on. An accidental written earlier in the bar for
    one of them is written on it (the new bar line would cancel it); "" when they are
    rests only, or hold a slur, a tie or half a chord symbol."""
    notes = left_out.strip()
    loose = SLUR_OPEN.search(notes) or set(notes) & set("){}\\\n") or notes.endswith("-")
    if loose or notes.count('"') % 2 or not any(match[2] for match in NOTE_OR_TEXT.finditer(notes)):
        return ""
    held = {match[2]: match[1] for match in NOTE_OR_TEXT.finditer(kept) if match[2] and match[1]}

    def spell(match: re.Match[str]) -> str:
        if not match[2] or match[1]:
            held.pop(match[2] or "", None)  # its own accidental holds from here
            return match[0]
        return held.get(match[2], "") + match[0]

    return NOTE_OR_TEXT.sub(spell, notes) + "|"
