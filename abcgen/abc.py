"""Reading and checking ABC tunes: the strict check shared by sample, evaluate and the sampler.

A tune passes `check_tune` when the programs musicians use (abc2midi and abcm2ps behind
EasyABC, abcjs on tune sites, music21 behind MuseScore imports) read it without an error,
and every bar has the duration its meter asks for:

1. Header: X: with a tune number first, K: last; M: and L: take ABC 2.1's defaults when absent.
2. Body: only what ABC 2.1 defines: notes, rests, chords, bar lines, endings, tuplets, broken
   rhythm, ties, slurs, grace notes, decorations (`!trill!`, `+trill+`, `~.HLMOPSTuv`), chord
   symbols and annotations, inline fields, field lines, comments, `\\` at a line end. A
   character that is none of these, a chord symbol or decoration left open, a stray `]`,
   `)` or `}`, a slur or grace group never closed, a shorthand decoration (`~`, `T`) with
   no note before the next bar line, grace notes with none before the tune ends, or an X:
   line (a second tune) fails.
3. Repeats and endings pair: a `|:` while a repeat is open fails, a `|:` never closed fails,
   an end repeat with nothing open fails unless it is the tune's first (ABC repeats from the
   start); `[2` needs a `[1` before it, `[1` needs a `[2` after it, and an ending needs a
   repeat around it.
4. A tie joins two notes of the same pitch (letter and octave; a chord ties to a chord).
5. The tune closes with a final or repeat bar line (`|]`, `||`, `:|`, `::`).
6. Bars: every bar is full except where ABC practice allows it to be short: the first and last
   bar of a section (a pickup, and the short bar that completes it), and the bar before an
   ending. A section (the music between repeat signs, double bars and body P:/M:/K: fields,
   each ending counted once) is a whole number of bars: a pickup and the short closing bar
   add up to one. A section of less than a bar (a pickup before `|:`) joins the next one.
7. Joints: where one section ends and the next begins, a short closing bar and the next
   section's first bar make one bar, as they are played (`efe d2:|` then `|:A|`), and a
   full closing bar is followed by a full bar (unless a header P: sets another order).

The reader is a single regular expression over the body plus a small state machine, so a
check takes about a millisecond whatever the meter, and time grows linearly with length.
music21's ABC reader accepts far more than the tools above do (it passes unclosed chord
symbols, stray brackets, ties to other pitches) and takes 30-100 ms for a full score, so it
is used for export, not for the check. A failed check's reason names the bar and the rule.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, NoReturn

_LENGTHS: dict[tuple[str, int, int], Fraction] = {}  # see _Reader.length
FIELD_LINE = re.compile(r"^([A-Za-z+]):\s?(.*)$")
BODY_FIELDS = set("IKLMmNPQRrsTUVWw")  # field letters ABC 2.1 allows inside a tune body
INLINE_FIELDS = set("IKLMmNPQRrTUV")
SECTION_FIELDS = {"P", "M", "K"}  # body fields that start a new section
FINAL_BARS = {"|]", "||", ":|", "::"}
SHORTHAND_DECORATIONS = set("~.HLMOPSTuv")
# A chord symbol as abc2midi, abcm2ps and abcjs all read it: a root, a kind abc2midi knows,
# a bass note. Text that starts with ^ _ < > @ is an annotation, printed, not played.
CHORD_SYMBOL = re.compile(
    r"[A-G][#b]?(|m|7|m7|dim|6|aug|m6|aug7|maj7|M7|dim7|9|m9|sus4|sus|7sus4|"
    r"m7b5|\+|11|5)(/[A-Ga-g][#b]?)?"
)
ANNOTATION_MARKS = set("^_<>@")
NOTE_OFFSETS = dict(zip("CDEFGAB", (0, 2, 4, 5, 7, 9, 11)))
ACCIDENTALS = {"^^": 2, "^": 1, "=": 0, "_": -1, "__": -2}
GRACE_NOTES, TUNE_END_PLACE = "grace notes", "the end of the tune"  # see _Reader.note_check

# One token of a tune body. The order matters: longer and more specific forms first.
TOKEN = re.compile(
    r"""
  (?P<newline>\n)
| (?P<space>[ \t`y]+)
| (?P<comment>%[^\n]*)
| (?P<continuation>\\[ \t]*(?:%[^\n]*)?(?=\n|$))
| (?P<inline>\[(?P<inline_name>[A-Za-z]):(?P<inline_value>[^\]\n]*)\])
| (?P<ending>\[(?P<ending_numbers>[1-9](?:[-,][1-9])*))
| (?P<bar>(?P<bar_end>:*)(?P<bar_core>\[\||\|\]|\|\||\|)(?P<bar_start>:*)
          (?P<bar_ending>[1-9](?:[-,][1-9])*)?|::+)
| (?P<symbol>"[^"\n]*")
| (?P<decoration>![^!\n]*!|\+[A-Za-z0-9^<>().]+\+)
| (?P<shorthand>[~.HLMOPSTuv])
| (?P<tuplet>\((?P<tuplet_p>[1-9])(?::(?P<tuplet_q>[1-9]?)(?::(?P<tuplet_r>[1-9]?))?)?)
| (?P<slur>[()])
| (?P<grace>\{/?|\})
| (?P<note>(?P<accidental>\^\^|\^|__|_|=)?(?P<letter>[A-Ga-g])(?P<octave>[,']*)
          (?P<length>\d*/*\d*))
| (?P<rest>[zx](?P<rest_length>\d*/*\d*))
| (?P<measure_rest>[ZX](?P<measures>\d*))
| (?P<chord_open>\[)
| (?P<chord_close>\](?P<chord_length>\d*/*\d*))
| (?P<tie>-)
| (?P<broken>[<>]{1,3})
""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Bar:
    """One bar of a tune.

    notes: (MIDI pitch, or None for a rest; duration in quarter notes), grace notes left out.
    expected: the duration the meter asks for, in quarter notes (None under a free meter).
    tonic: pitch class (0-11) of the key in force, or None when the key has no tonic.
    may_be_short: the bar sits where ABC practice allows a short bar (see the module doc).
    """

    number: int
    notes: tuple[tuple[int | None, Fraction], ...]
    meter: str | None
    expected: Fraction | None
    tonic: int | None
    may_be_short: bool = False
    line: int = 0  # the body line (0 = the first) on which the bar starts

    @functools.cached_property
    def duration(self) -> Fraction:
        return sum((length for _, length in self.notes), Fraction(0))

    @property
    def pitches(self) -> list[int]:
        return [pitch for pitch, _ in self.notes if pitch is not None]


@dataclass
class Section:
    """Bars between section edges, with its endings: what form counting works on.

    bars: indices into Tune.bars of the common part; endings: one list of bar indices per
    ending ([1, [2, ...). repeated: closed by an end repeat. length: in bars, the common part
    plus the first ending (a pickup and a short closing bar make one).
    """

    bars: list[int] = field(default_factory=list)
    endings: list[list[int]] = field(default_factory=list)
    repeated: bool = False
    length: Fraction = Fraction(0)
    pickup: Fraction = Fraction(0)  # a pickup before it that joined it (see _join_pickups)
    last_ending: Fraction = Fraction(0)  # the last ending's bars minus the first ending's

    @property
    def whole(self) -> bool:
        """Whether it is a whole number of bars: counted with its first or its last ending,
        with or without the pickup before it (the corpus writes all four)."""
        return any(
            (self.length - pickup + ending).denominator == 1
            for pickup in {Fraction(0), self.pickup}
            for ending in {Fraction(0), self.last_ending}
        )

    @property
    def bar_count(self) -> int | None:
        """Whole bars in it, the pickup and a short closing bar counted as one."""
        whole = [self.length - p + e for p in {Fraction(0), self.pickup} for e in {Fraction(0), self.last_ending}]
        return next((int(n) if n.denominator == 1 else None for n in sorted(whole) if n.denominator == 1), None)


@dataclass
class Tune:
    """A tune read by the strict reader: header fields, bars in the order written, sections."""

    header: dict[str, str]
    bars: list[Bar]
    sections: list[Section] = field(default_factory=list)

    @property
    def notes(self) -> list[tuple[int | None, Fraction]]:
        return [note for bar in self.bars for note in bar.notes]

    @property
    def pitches(self) -> list[int]:
        return [pitch for bar in self.bars for pitch in bar.pitches]


@dataclass
class CheckResult:
    """Whether a tune passes the check, and why not; plus a few facts about it."""

    ok: bool
    reason: str | None = None
    n_notes: int = 0
    n_bars: int = 0
    meter: str | None = None
    key: str | None = None
    title: str | None = None
    tune: Tune | None = field(default=None, repr=False)
    bad_bar: int | None = None  # index into tune.bars of the first bar that breaks a rule
    rule: str | None = None  # a short name of the rule broken: "bar length", "repeat", ...

    def __bool__(self) -> bool:
        return self.ok


class AbcParseError(ValueError):
    """A tune that is not ABC as the tools read it. `bar` is the index of the bar it names."""

    def __init__(self, message: str, bar: int | None = None, rule: str = "syntax"):
        super().__init__(message)
        self.bar, self.rule = bar, rule


# ---------------------------------------------------------------- text helpers


def split_tunes(text: str) -> list[str]:
    """Split an ABC text into tunes, each starting at its X: line.

    Anything before the first X: line (a file header, comments) is dropped, and so is
    trailing blank space of each tune. Lines end in \n, whatever they ended in before.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    starts = [match.start() for match in re.finditer(r"^X:", text, flags=re.MULTILINE)]
    ends = starts[1:] + [len(text)]
    tunes = (text[start:end].strip() for start, end in zip(starts, ends))
    return [tune for tune in tunes if tune]


def header_fields(tune: str) -> dict[str, str]:
    """The header fields of a tune (X, T, M, L, K, ...) up to and including the first K: line.

    Each field keeps its first value; comment lines are skipped.
    """
    return _split_header(tune)[0]


def _split_header(tune: str) -> tuple[dict[str, str], str, int]:
    """(header fields, body text, index of the body's first line among the tune's lines)."""
    fields: dict[str, str] = {}
    lines = tune.split("\n")
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("%"):
            continue
        match = FIELD_LINE.match(stripped)
        if not match:
            return fields, "\n".join(lines[number:]), number
        name, value = match.group(1), match.group(2).split("%")[0].strip()
        fields.setdefault(name, value)
        if name == "K":
            return fields, "\n".join(lines[number + 1 :]), number + 1
    return fields, "", len(lines)


def format_length(quarters: Fraction, denominator: int = 8) -> str:
    """A duration in quarter notes as a fraction of a whole note: 2.5 -> '5/8'.

    Uses the meter's denominator when it can, so that a 6/8 bar reads '6/8', not '3/4'.
    """
    whole = Fraction(quarters) / 4
    units = whole * denominator
    if units.denominator == 1:
        return f"{units.numerator}/{denominator}"
    return f"{whole.numerator}/{whole.denominator}"


# ---------------------------------------------------------------- header values


@functools.lru_cache(maxsize=512)
def parse_meter(value: str) -> tuple[Fraction | None, str | None]:
    """(bar length in quarter notes, meter as n/d) of an M: value; (None, None) for a free
    meter. `C` is 4/4, `C|` 2/2, `(2+3)/8` and `3/8+2/8` are 5/8.
    Raises AbcParseError for a value that is not a meter."""
    text = value.split("%")[0].replace(" ", "")
    if text.lower() in ("", "none"):
        return None, None
    if text in ("C", "C|"):
        return (Fraction(4), "4/4") if text == "C" else (Fraction(4), "2/2")
    sums = re.fullmatch(r"\(?(\d+(?:\+\d+)*)\)?/(\d+)", text)
    terms = re.findall(r"(\d+)/(\d+)", text) if re.fullmatch(r"\d+/\d+(?:\+\d+/\d+)+", text) else []
    if sums and int(sums[2]):
        numerator, denominator = sum(int(n) for n in sums[1].split("+")), int(sums[2])
    elif terms and all(int(d) for _, d in terms):
        denominator = max(int(d) for _, d in terms)
        total = sum((Fraction(int(n), int(d)) for n, d in terms), Fraction(0)) * denominator
        if total.denominator != 1:
            raise AbcParseError(f"M:{value} is not a meter (such as 6/8, 3/4, C)")
        numerator = int(total)
    else:
        raise AbcParseError(f"M:{value} is not a meter (such as 6/8, 3/4, C)")
    if numerator == 0:
        raise AbcParseError(f"M:{value} is not a meter (such as 6/8, 3/4, C)")
    return Fraction(4 * numerator, denominator), f"{numerator}/{denominator}"


def parse_unit(value: str) -> Fraction:
    """An L: value as a fraction of a whole note; raises AbcParseError when it is not one."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value.split("%")[0])
    if not match or int(match[1]) == 0 or int(match[2]) == 0:
        raise AbcParseError(f"L:{value} is not a unit note length (such as 1/8)")
    return Fraction(int(match[1]), int(match[2]))


def default_unit(bar: Fraction | None) -> Fraction:
    """ABC 2.1's default L: for a meter: 1/16 below 3/4, else 1/8 (also for a free meter)."""
    return Fraction(1, 16) if bar is not None and bar < 3 else Fraction(1, 8)


MODE_SHIFT = {
    "": 0,
    "maj": 0,
    "ion": 0,
    "mix": -1,
    "dor": -2,
    "m": -3,
    "min": -3,
    "aeo": -3,
    "phr": -4,
    "loc": -5,
    "lyd": 1,
}
FIFTHS = {"C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5, "F": -1}
SHARP_ORDER, FLAT_ORDER = "FCGDAEB", "BEADGCF"


@functools.lru_cache(maxsize=512)
def parse_key(value: str) -> tuple[int | None, dict[str, int]]:
    """(tonic pitch class or None, {letter: alteration}) of a K: value such as G, Ador, Bbm,
    F#mix, D =c, none or HP. Raises AbcParseError for a value that is not a key."""
    words = value.split("%")[0].strip().split()
    if not words or words[0].lower() in ("none",):
        return None, {}
    if words[0] in ("HP", "Hp"):  # Highland pipes: written without a signature (HP) or with F# C#
        return 9, {} if words[0] == "HP" else {"F": 1, "C": 1}
    match = re.fullmatch(r"([A-G])([#b]?)([A-Za-z]*)", words[0])
    mode = match[3].lower()[:3] if match else ""
    if match and match[3].lower() in ("m", "min", "minor"):
        mode = "m"
    if not match or (mode not in MODE_SHIFT and not match[3].lower().startswith(("maj", "exp"))):
        raise AbcParseError(f"K:{value} is not a key (such as D, Ador, Emin, Bb)")
    sign = {"#": 1, "b": -1, "": 0}[match[2]]
    fifths = FIFTHS[match[1]] + 7 * sign + MODE_SHIFT.get(mode, 0)
    alter = {ch: 1 for ch in SHARP_ORDER[: max(fifths, 0)]}
    alter.update({ch: -1 for ch in FLAT_ORDER[: max(-fifths, 0)]})
    if match[3].lower().startswith("exp"):
        alter = {}
    for word in words[1:]:
        explicit = re.fullmatch(r"(\^\^|\^|__|_|=)([A-Ga-g])", word)
        if explicit:
            alter[explicit[2].upper()] = ACCIDENTALS[explicit[1]]
    tonic = (NOTE_OFFSETS[match[1]] + sign) % 12
    return tonic, alter


@functools.lru_cache(maxsize=256)
def key_name(key_field: str) -> str:
    """A K: value spelled one way: 'G' -> 'G major', 'Ador' -> 'A dorian', 'Em' -> 'E minor'."""
    match = re.fullmatch(r"\s*([A-G][#b]?)\s*([A-Za-z]*)\s*", key_field.split("%")[0].split(" ")[0] or " ")
    names = {
        "": "major",
        "maj": "major",
        "ion": "major",
        "m": "minor",
        "min": "minor",
        "aeo": "minor",
        "mix": "mixolydian",
        "dor": "dorian",
        "phr": "phrygian",
        "lyd": "lydian",
        "loc": "locrian",
    }
    if not match:
        return key_field.strip() or "none"
    mode = match[2].lower()
    mode = "m" if mode in ("m", "minor") else mode[:3]
    if mode not in names:
        return key_field.strip()
    return f"{match[1]} {names[mode]}"


# ---------------------------------------------------------------- the reader


def read_tune(text: str, complete: bool = True) -> Tune:
    """Read a tune into bars of (pitch, duration) notes and sections, strictly.

    complete=False reads the beginning of a tune still being written: its last bar is not
    the tune's last bar, and what is still open (a repeat, a tie, a slur) may close later.
    Raises AbcParseError, naming the bar and the rule, when the tune breaks one.
    """
    header, body, _ = _split_header(text)
    if "K" not in header:
        raise AbcParseError("it has no K: line ending its header", rule="header")
    number = header.get("X")
    if number is None or not number.isdigit():
        raise AbcParseError(f"X: should be a tune number, not {number!r}", rule="header")
    reader = _Reader(header)
    reader.read(body)
    return reader.finish(complete)


# What a tie joins: a note's (letter, octave), or a chord's set of (octave, pitch class).
_NoteKey = tuple[str, int] | frozenset[tuple[int, int]]


class _Reader:
    """Walks the tokens of a body, building bars and sections and enforcing the rules."""

    def __init__(self, header: dict[str, str]):
        self.header = header
        self.bar_length, self.meter = parse_meter(header.get("M", "none"))
        self.unit = parse_unit(header["L"]) if "L" in header else default_unit(self.bar_length)
        self.tonic, self.key_alter = parse_key(header["K"])
        self.bars: list[Bar] = []
        self.notes: list[tuple[int | None, Fraction]] = []
        self.bar_accidentals: dict[tuple[str, int], int] = {}
        self.line = 0
        self.bar_line = 0
        self.short_ok: set[int] = set()
        self.starts_section = True
        self.sections = [Section()]
        self.in_ending = False
        self.repeat_open = False
        self.repeats_closed = 0
        self.endings_seen: list[int] = []  # ending numbers in the current repeat
        self.chord: list[tuple[int, Fraction]] | None = None
        self.grace = False
        self.slurs = 0
        self.tuplet_left, self.tuplet_ratio = 0, Fraction(1)
        self.broken_next: Fraction | None = None
        self.tie_from: _NoteKey | None = None  # after a `-`
        self.last_pitch_key: _NoteKey | None = None
        self.last_bar_symbol = ""
        self.measure_rests = 0
        self.pitched = 0  # notes with a pitch so far
        self.waiting = ""  # a decoration or grace notes still waiting for their note

    # -- errors name the bar being written

    def fail(self, message: str, rule: str = "syntax") -> NoReturn:
        raise AbcParseError(f"bar {len(self.bars) + 1}: {message}", bar=len(self.bars), rule=rule)

    def read(self, body: str) -> None:
        position, end = 0, len(body)
        at_line_start = True
        while position < end:
            if at_line_start:
                line_end = body.find("\n", position)
                line_end = end if line_end < 0 else line_end
                line = body[position:line_end]
                if FIELD_LINE.match(line) or line.startswith("%"):
                    self.on_field_line(line)
                    position = line_end
                    continue
            match = TOKEN.match(body, position)
            if match is None:
                self.fail(f"{body[position]!r} is not ABC")
            position = match.end()
            kind = match.lastgroup if match.lastgroup not in _SUBGROUPS else _kind(match)
            at_line_start = kind == "newline"
            getattr(self, f"on_{kind}")(match)

    # -- fields

    def on_field_line(self, line: str) -> None:
        if line.startswith("%"):
            return
        name, value = line[0], line[2:].split("%")[0].strip()
        if name == "X":
            self.fail("a new tune (X:) starts inside this one", rule="field")
        if name not in BODY_FIELDS:
            self.fail(f"{name}: is not a field a tune body may hold", rule="field")
        self.apply_field(name, value)

    def on_inline(self, match: re.Match[str]) -> None:
        name, value = match["inline_name"], match["inline_value"].strip()
        if name not in INLINE_FIELDS:
            self.fail(f"[{name}:] is not an inline field", rule="field")
        self.apply_field(name, value)

    def apply_field(self, name: str, value: str) -> None:
        if name == "V" and value.split()[0:1] != self.header.get("V", value).split()[0:1]:
            self.fail("it has more than one voice; abcgen reads single-voice tunes", rule="voices")
        if name == "M":
            self.bar_length, self.meter = parse_meter(value)
        elif name == "L":
            self.unit = parse_unit(value)
        elif name == "K":
            self.tonic, self.key_alter = parse_key(value)
        if name in SECTION_FIELDS and (self.bars or self.notes):
            self.section_edge(closing="field")

    # -- spacing and comments

    def on_newline(self, match: re.Match[str]) -> None:
        self.tuplet_check("the end of a line")
        self.line += 1

    def tuplet_check(self, where: str) -> None:
        """abcm2ps refuses a tuplet cut by the end of a line ("End of line found inside a
        tuplet"), and one cut by a bar line has lost its notes."""
        if self.tuplet_left:
            self.fail(f"a tuplet with {self.tuplet_left} note(s) still to come at {where}", rule="bracket")

    def note_check(self, where: str) -> None:
        """A shorthand decoration with no note after it before a bar line, or grace notes
        with none before the tune ends (they may lead over a bar line, `{g}|A`): abc2midi
        stops with "Malformed note" or "No note found to follow grace notes"."""
        if self.waiting and (self.waiting != GRACE_NOTES or where == TUNE_END_PLACE):
            self.fail(f"{self.waiting} with no note to follow, at {where}")

    def on_space(self, match: re.Match[str]) -> None:
        if self.chord is not None:
            self.fail("a space inside a chord [ ]")

    def on_comment(self, match: re.Match[str]) -> None:
        pass

    def on_continuation(self, match: re.Match[str]) -> None:
        pass

    def on_symbol(self, match: re.Match[str]) -> None:
        text = match["symbol"][1:-1]
        if not CHORD_SYMBOL.fullmatch(text) and text[:1] not in ANNOTATION_MARKS:
            self.fail(f'{match["symbol"]} is not a chord symbol the ABC tools know (such as "Am7" or "D/F#")')

    def on_decoration(self, match: re.Match[str]) -> None:
        pass  # !segno!, !D.C.! and the like may stand before a bar line

    def on_shorthand(self, match: re.Match[str]) -> None:
        if match[0] != ".":  # abc2midi reads `~|` or `T|` as a malformed note
            self.waiting = f"a decoration {match[0]}"

    # -- notes

    def on_note(self, match: re.Match[str]) -> None:
        octave = (1 if match["letter"].islower() else 0) + match["octave"].count("'") - match["octave"].count(",")
        if ("'" in match["octave"] and match["letter"].isupper()) or (
            "," in match["octave"] and match["letter"].islower()
        ):
            self.fail(f"{match['letter']}{match['octave']}: write octaves as C, (below) and c' (above)")
        letter = match["letter"].upper()
        pitch = self.pitch(letter, octave, match["accidental"])
        length = self.length(match["length"])
        if self.chord is not None:
            self.chord.append((pitch, length))
            self.note_key = (letter, octave)
            return
        self.tie_check((letter, octave))
        self.add_note(pitch, length, (letter, octave))

    def pitch(self, letter: str, octave: int, accidental: str | None) -> int:
        if accidental:
            self.bar_accidentals[(letter, octave)] = ACCIDENTALS[accidental]
        alter = self.bar_accidentals.get((letter, octave), self.key_alter.get(letter, 0))
        midi = 60 + 12 * octave + NOTE_OFFSETS[letter] + alter
        if not 0 <= midi <= 127:
            self.fail(f"a note beyond the MIDI range ({letter} in octave {octave + 4})", rule="range")
        return midi

    def length(self, text: str) -> Fraction:
        """A length suffix as quarter notes: '' 1 unit, '3' 3, '/' 1/2, '3/2', '//' 1/4.
        The few lengths a tune writes are read once (Fraction arithmetic was the check's
        largest cost, and the sampler checks every bar as it is written)."""
        key = (text, self.unit.numerator, self.unit.denominator)  # hashing a Fraction is slow
        known = _LENGTHS.get(key)
        if known is None:
            known = self._length(text)
            if len(_LENGTHS) < 4096:
                _LENGTHS[key] = known
        return known

    def _length(self, text: str) -> Fraction:
        if not text:
            return self.unit * 4
        numerator, slash, rest = text.partition("/")
        value = Fraction(int(numerator) if numerator else 1)
        if slash:
            digits = rest.lstrip("/")
            if digits and "/" in digits:
                self.fail(f"{text!r} is not a note length")
            divisor = int(digits) if digits else 2 ** (1 + len(rest))
            if divisor == 0:
                self.fail(f"a note length divided by zero ({text!r})")
            if divisor & (divisor - 1):  # abc2midi and abcm2ps refuse F/3 ("Bad length divisor")
                self.fail(f"a note length divided by {divisor}, not a power of 2 ({text!r})")
            value /= divisor
        if value == 0:
            self.fail(f"a note of length zero ({text!r})")
        return value * self.unit * 4

    def on_rest(self, match: re.Match[str]) -> None:
        self.tie_check(None)
        self.add_note(None, self.length(match["rest_length"]), None)

    def on_measure_rest(self, match: re.Match[str]) -> None:
        if self.notes or self.chord is not None:
            self.fail("a multi-bar rest (Z) must fill its bar alone")
        self.measure_rests = int(match["measures"] or 1)
        if self.measure_rests == 0:
            self.fail("a multi-bar rest of zero bars")

    def add_note(self, pitch: int | None, length: Fraction, key: _NoteKey | None) -> None:
        if self.grace:
            return
        self.waiting = ""
        if self.broken_next is not None:
            length, self.broken_next = length * self.broken_next, None
        if self.tuplet_left:
            length *= self.tuplet_ratio
            self.tuplet_left -= 1
        if not self.notes:
            self.bar_line = self.line
        self.notes.append((pitch, length))
        self.last_pitch_key = key
        self.pitched += pitch is not None

    def on_chord_open(self, match: re.Match[str]) -> None:
        if self.chord is not None:
            self.fail("a chord inside a chord")
        self.chord = []

    def on_chord_close(self, match: re.Match[str]) -> None:
        if self.chord is None:
            self.fail("a ] with no [ before it", rule="bracket")
        notes, self.chord = self.chord or [], None
        if not notes:
            self.fail("an empty chord []")
        keys = frozenset(self.chord_keys(notes))
        self.tie_check(keys)
        multiplier = self.length(match["chord_length"]) / (self.unit * 4)
        self.add_note(max(pitch for pitch, _ in notes), notes[0][1] * multiplier, keys)

    def chord_keys(self, notes: list[tuple[int, Fraction]]) -> list[tuple[int, int]]:
        return [(pitch // 12, pitch % 12) for pitch, _ in notes]

    def on_grace(self, match: re.Match[str]) -> None:
        opening = match["grace"].startswith("{")
        if opening == self.grace:
            self.fail("a grace note group inside another" if opening else "a } with no { before it", rule="bracket")
        self.grace = opening
        self.waiting = self.waiting if opening else GRACE_NOTES

    def on_slur(self, match: re.Match[str]) -> None:
        if match["slur"] == "(":
            self.slurs += 1
        elif self.slurs == 0:
            self.fail("a ) with no ( before it", rule="bracket")
        else:
            self.slurs -= 1

    def on_tuplet(self, match: re.Match[str]) -> None:
        if self.tuplet_left:  # abc2midi "nested tuples", abcm2ps "Bad nested tuplet"
            self.fail("a tuplet inside a tuplet", rule="bracket")
        p = int(match["tuplet_p"])
        compound = (
            self.bar_length is not None
            and (self.bar_length * 2).denominator == 1
            and (self.bar_length / Fraction(3, 2)).denominator == 1
            and self.meter not in ("3/4", "3/2")
        )
        q = int(match["tuplet_q"]) if match["tuplet_q"] else {2: 3, 3: 2, 4: 3, 6: 2, 8: 3}.get(p, 3 if compound else 2)
        r = int(match["tuplet_r"]) if match["tuplet_r"] else p
        self.tuplet_left, self.tuplet_ratio = r, Fraction(q, p)

    def on_broken(self, match: re.Match[str]) -> None:
        if not self.notes or self.grace:
            self.fail(f"{match['broken']!r} with no note before it")
        dots = len(match["broken"])
        longer, shorter = 2 - Fraction(1, 2**dots), Fraction(1, 2**dots)
        first, second = (longer, shorter) if match["broken"][0] == ">" else (shorter, longer)
        pitch, length = self.notes[-1]
        self.notes[-1] = (pitch, length * first)
        self.broken_next = second

    def on_tie(self, match: re.Match[str]) -> None:
        if self.tie_from is not None:
            self.fail("two ties (--) in a row", rule="tie")
        if self.last_pitch_key is None or not self.notes:
            self.fail("a tie (-) with no note before it", rule="tie")
        self.tie_from = self.last_pitch_key

    def tie_check(self, key: _NoteKey | None) -> None:
        """A note or chord after a tie: it must be the same pitch (a chord: share a note)."""
        if self.tie_from is None or self.grace:
            return
        source, self.tie_from = self.tie_from, None
        if key is None:
            self.fail("a tie (-) to a rest", rule="tie")
        if isinstance(source, frozenset) or isinstance(key, frozenset):
            first = source if isinstance(source, frozenset) else {self.pitch_key(source)}
            second = key if isinstance(key, frozenset) else {self.pitch_key(key)}
            if first & second:
                return
        elif source == key:
            return
        self.fail("a tie (-) between notes of different pitch", rule="tie")

    def pitch_key(self, key: tuple) -> tuple:
        letter, octave = key
        midi = 60 + 12 * octave + NOTE_OFFSETS[letter] + self.bar_accidentals.get(key, self.key_alter.get(letter, 0))
        return (midi // 12, midi % 12)

    # -- bar lines, endings and sections

    def on_bar(self, match: re.Match[str]) -> None:
        if self.chord is not None or self.grace:
            self.fail("a bar line inside a chord or a grace note group", rule="bracket")
        self.tuplet_check("a bar line")
        self.note_check("a bar line")
        symbol = match["bar"]
        ends = symbol.startswith(":")
        starts = symbol.endswith(":") and not match["bar_ending"]
        core = match["bar_core"] or ""
        self.close_bar()
        self.last_bar_symbol = "::" if ends and starts else (":|" if ends else (core or symbol))
        if ends:
            self.end_repeat()
        if core in ("||", "|]", "[|") and not ends and not starts:
            self.section_edge(closing="double")
        if starts:
            self.start_repeat()
        if match["bar_ending"]:
            self.start_ending(match["bar_ending"])

    def on_ending(self, match: re.Match[str]) -> None:
        if self.chord is not None:
            self.fail("an ending inside a chord")
        if self.notes:  # an ending may start in the middle of a bar (ABC 2.1 4.9)
            self.close_bar()
            self.short_ok.add(len(self.bars) - 1)
        self.start_ending(match["ending_numbers"])

    def start_ending(self, numbers: str) -> None:
        first = int(numbers[0])
        expected = len(self.endings_seen) + 1
        if first != expected:
            what = f"[{first} with no [{expected} before it" if first > expected else f"a second [{first}"
            self.fail(what, rule="ending")
        if first > 1 and self.last_bar_symbol not in (":|", "::"):
            self.fail(f"[{first} must follow an end repeat (:|)", rule="ending")
        self.endings_seen += range(first, 1 + max(int(n) for n in re.findall(r"\d", numbers)))
        if self.bars:
            self.short_ok.add(len(self.bars) - 1)
        self.sections[-1].endings.append([])
        self.in_ending = True
        self.starts_section = True

    def start_repeat(self) -> None:
        if self.repeat_open:
            self.fail("a |: inside a repeat that is still open", rule="repeat")
        self.section_edge(closing="repeat")
        self.repeat_open = True

    def end_repeat(self) -> None:
        if not self.repeat_open and self.repeats_closed and not self.endings_seen:
            self.fail("an end repeat (:|) with no |: before it", rule="repeat")
        self.repeat_open = False
        self.repeats_closed += 1
        self.sections[-1].repeated = True
        if self.in_ending:  # :| closes the first ending; the next ending follows
            if self.bars:
                self.short_ok.add(len(self.bars) - 1)
            self.starts_section = True
            return
        self.section_edge(closing="repeat")

    def section_edge(self, closing: str) -> None:
        """A section boundary: the bar before it and the bar after it may be short."""
        self.close_bar()
        if self.endings_seen == [1]:
            self.fail("a first ending [1 with no second ending", rule="ending")
        if self.bars:
            self.short_ok.add(len(self.bars) - 1)
        self.starts_section = True
        self.in_ending = False
        self.endings_seen = []
        if self.sections[-1].bars or self.sections[-1].endings:
            self.sections.append(Section())

    def close_bar(self) -> None:
        if self.measure_rests:
            for _ in range(self.measure_rests):
                self.bars.append(
                    Bar(
                        len(self.bars) + 1,
                        ((None, self.bar_length or Fraction(4)),),
                        self.meter,
                        self.bar_length,
                        self.tonic,
                        line=self.line,
                    )
                )
                self.place_bar()
            self.measure_rests = 0
            return
        if not self.notes:
            return
        bar = Bar(len(self.bars) + 1, tuple(self.notes), self.meter, self.bar_length, self.tonic, line=self.bar_line)
        self.bars.append(bar)
        self.place_bar()
        self.notes, self.bar_accidentals = [], {}

    def place_bar(self) -> None:
        index = len(self.bars) - 1
        section = self.sections[-1]
        (section.endings[-1] if self.in_ending and section.endings else section.bars).append(index)
        if self.starts_section:
            self.short_ok.add(index)
            self.starts_section = False

    # -- the end

    def finish(self, complete: bool) -> Tune:
        if self.chord is not None:
            self.fail("a chord [ never closed", rule="bracket")
        if complete and self.pitched:
            if self.grace:
                self.fail("a grace note group { never closed", rule="bracket")
            if self.slurs:
                self.fail("a slur ( never closed", rule="bracket")
            if self.tie_from is not None:
                self.fail("a tie (-) at the end of the tune", rule="tie")
            self.tuplet_check("the end of the tune")
            self.note_check(TUNE_END_PLACE)
            if self.notes and self.last_bar_symbol:
                self.fail("the tune does not end with a bar line", rule="end")
            if self.last_bar_symbol not in FINAL_BARS and not self.notes:
                self.fail("the tune does not end with a final or repeat bar line (|], ||, :|)", rule="end")
        self.close_bar()
        if complete and self.pitched:
            if self.repeat_open:
                self.fail("a |: never closed by a :|", rule="repeat")
            self.section_edge(closing="end")
        if self.bars:
            self.short_ok.update({0, len(self.bars) - 1} if complete else {0})
        bars = [_tolerant(bar) if index in self.short_ok else bar for index, bar in enumerate(self.bars)]
        sections = [section for section in self.sections if section.bars or section.endings]
        for section in sections:
            section.length = _section_length(section, bars)
        return Tune(self.header, bars, _join_pickups(sections))


_SUBGROUPS = {
    "inline_name",
    "inline_value",
    "ending_numbers",
    "bar_end",
    "bar_core",
    "bar_start",
    "bar_ending",
    "tuplet_p",
    "tuplet_q",
    "tuplet_r",
    "accidental",
    "letter",
    "octave",
    "length",
    "rest_length",
    "measures",
    "chord_length",
}


def _kind(match: re.Match[str]) -> str:
    return next(name for name, value in match.groupdict().items() if value is not None and name not in _SUBGROUPS)


def _tolerant(bar: Bar) -> Bar:
    return Bar(bar.number, bar.notes, bar.meter, bar.expected, bar.tonic, True, bar.line)


def _section_length(section: Section, bars: list[Bar]) -> Fraction:
    """Bars in a section: the common part and its first ending, as fractions of full bars;
    also notes how much longer its last ending is than its first."""

    def length(indices: list[int]) -> Fraction:
        measured = ((bars[i].duration, bars[i].expected) for i in indices)
        return sum((duration / whole for duration, whole in measured if whole), Fraction(0))

    if section.endings:
        section.last_ending = length(section.endings[-1]) - length(section.endings[0])
    if section.bars and length(section.bars[:1]) < 1:
        section.pickup = length(section.bars[:1])
    return length(section.bars + (section.endings[0] if section.endings else []))


def _join_pickups(sections: list[Section]) -> list[Section]:
    """A section of less than one bar (a pickup before |:) joins the section after it."""
    joined: list[Section] = []
    for section in sections:
        if joined and 0 < joined[-1].length < 1 and not joined[-1].repeated and not joined[-1].endings:
            pickup = joined.pop()
            section.bars = pickup.bars + section.bars
            section.length += pickup.length
            section.pickup = pickup.length if section.pickup == 0 else section.pickup
        joined.append(section)
    return joined


# ---------------------------------------------------------------- the check


def failure_kind(reason: str, after_count: bool = False) -> str:
    """A check failure (CheckResult.reason) in a few words, for summaries: "a bar of the
    wrong length"; after_count phrases it to follow a number of tunes ("3 with no notes")."""
    if reason.startswith("bar "):
        return "with a bar of the wrong length" if after_count else "a bar of the wrong length"
    if reason == "it has no notes":
        return "with no notes" if after_count else "has no notes"
    return reason


def check_tune(text: str, complete: bool = True) -> CheckResult:
    """Check one ABC tune strictly (see the module doc).

    complete=False checks the beginning of a tune that is still being written (see read_tune).
    Returns a CheckResult whose `reason` is one short phrase naming the bar and the rule.
    """
    header = header_fields(text)
    facts: dict[str, Any] = dict(meter=header.get("M"), key=header.get("K"), title=header.get("T"))
    try:
        tune = read_tune(text, complete)
    except AbcParseError as error:
        return CheckResult(False, str(error), bad_bar=error.bar, rule=error.rule, **facts)
    except (ValueError, RecursionError) as error:  # never a traceback for a tune, however broken
        return CheckResult(False, f"unreadable: {error}", rule="syntax", **facts)
    facts.update(n_notes=len(tune.pitches), n_bars=len(tune.bars), tune=tune)
    bad_bar = _bad_bar(tune)
    if not tune.pitches:
        return CheckResult(False, "it has no notes", rule="empty", **facts)
    if bad_bar is not None:
        return CheckResult(False, _bar_problem(tune.bars[bad_bar]), bad_bar=bad_bar, rule="bar length", **facts)
    if complete:
        section = _broken_section(tune.sections)
        if section is not None:
            first = tune.bars[(section.bars or section.endings[0])[0]].number
            return CheckResult(
                False,
                f"bar {first}: the section starting here has {_bars(section.length)} bars, not a whole number",
                rule="section",
                **facts,
            )
        joint = _broken_joint(tune)
        if joint is not None:
            return CheckResult(False, _joint_problem(*joint), bad_bar=joint[1].number - 1, rule="pickup", **facts)
    return CheckResult(True, **facts)


def _broken_section(sections: list[Section]) -> Section | None:
    """The first section that is not a whole number of bars on its own, nor ends on a
    whole bar counted from the tune's start (a pickup into the next part may sit at the
    end of the part before it)."""
    pickup = sections[0].pickup if sections else Fraction(0)
    done = Fraction(0)
    for section in sections:
        done += section.length + section.last_ending
        if not section.whole and (done - pickup).denominator != 1 and done.denominator != 1:
            return section
    return None


def _section_edges(section: Section) -> tuple[int, int] | None:
    """The indices of a section's first bar and of the bar it closes with (its last
    ending's last), or None when it has no bars."""
    body = section.bars or (section.endings[0] if section.endings else [])
    closing = section.endings[-1] if section.endings else section.bars
    return (body[0], closing[-1]) if body and closing else None


def _broken_joint(tune: Tune) -> tuple[Bar, Bar] | None:
    """The first joint between sections (a bar closing one, the next one's first bar) out
    of step: a short closing bar and the pickup after it must make one bar, as they are
    played (`efe d2:|` then `|:A|`); a short bar followed by a full one, or a pickup after
    a full bar, is a beat lost or gained (abc2midi counts such a joint as one bar of the
    wrong length). A bar split by `|:` (`d4 |:e2f2|`) counts as the full bar it makes. Not
    judged: a tune whose header P: sets an order to play the parts in, and a joint after a
    one-bar ending that completes a bar begun before it (`BAG [1 A3:|[2 AAB||`)."""
    if "P" in tune.header:
        return None
    sections = tune.sections
    for section, following in zip(sections, sections[1:]):
        before, after = _section_edges(section), _section_edges(following)
        split_ending = bool(section.endings) and len(section.endings[-1]) == 1 and _short(tune, section.bars[-1:])
        if before is None or after is None or split_ending:
            continue
        closing, first = tune.bars[before[1]], tune.bars[after[0]]
        if closing.expected is None or closing.expected != first.expected or closing.meter != first.meter:
            continue
        played = first.duration
        if following.bars[1:2] and following.bars[0] == after[0]:
            second = tune.bars[following.bars[1]]
            if second.meter == first.meter and first.duration + second.duration == first.expected:
                played = first.expected  # one bar, split by the repeat sign
        short = closing.duration < closing.expected or played < closing.expected
        if short and closing.duration + played != closing.expected:
            return closing, first
    return None


def _short(tune: Tune, indices: list[int]) -> bool:
    return any(bar.expected and bar.duration < bar.expected for bar in (tune.bars[i] for i in indices))


def _joint_problem(closing: Bar, first: Bar) -> str:
    lengths = [format_length(bar.duration, _denominator(bar)) for bar in (closing, first)]
    if closing.duration == closing.expected:
        return f"bar {first.number}: a pickup of {lengths[1]} after a full closing bar adds beats"
    return (
        f"bar {first.number}: the part before closes on {lengths[0]} of a bar and this one begins with "
        f"{lengths[1]}: a short closing bar and the pickup after it make one bar"
    )


def _bars(length: Fraction) -> str:
    return f"{float(length):.3g}"


def _bad_bar(tune: Tune) -> int | None:
    """The index of the first bar whose duration breaks the rule; None when all are right."""
    for index, bar in enumerate(tune.bars):
        if bar.expected is None or bar.duration == bar.expected:
            continue
        if bar.duration < bar.expected and bar.may_be_short:
            continue
        return index
    return None


def _bar_problem(bar: Bar) -> str:
    denominator = _denominator(bar)
    return (
        f"bar {bar.number} has {format_length(bar.duration, denominator)}, "
        f"meter {bar.meter} asks for {format_length(bar.expected or Fraction(0), denominator)}"
    )


def _denominator(bar: Bar) -> int:
    """The note value its meter counts in (8 in 6/8), for writing its lengths."""
    return int(bar.meter.split("/")[1]) if bar.meter else 8


def check_tunes(tunes: list[str]) -> list[CheckResult]:
    """check_tune over a list of tunes."""
    return [check_tune(tune) for tune in tunes]


# ---------------------------------------------------------------- form


@dataclass
class Form:
    """The form of a tune, as `abcgen evaluate` counts it for generated and corpus tunes."""

    repeats_paired: bool
    section_lengths: list[int | None]  # whole bars per section (None: not a whole number)
    ends_on_tonic: bool

    @property
    def regular_sections(self) -> bool:
        return bool(self.section_lengths) and all(n in (4, 8, 16) for n in self.section_lengths)

    @property
    def folk_form(self) -> bool:
        return self.repeats_paired and self.regular_sections and self.ends_on_tonic


def tune_form(text: str) -> Form:
    """The form of a tune. A tune the reader cannot finish (a repeat or tie that breaks the
    rules, a character that is not ABC) has no sections and does not end on the tonic."""
    result = check_tune(text)
    if result.tune is None:
        return Form(result.rule not in ("repeat", "ending"), [], False)
    return Form(True, _lengths(result.tune), ends_on_tonic(result.tune))


def _lengths(tune: Tune) -> list[int | None]:
    return [s.bar_count for s in tune.sections]


def ends_on_tonic(tune: Tune, keyless: bool = False) -> bool:
    """Whether the last note is the tonic of the key in force; keyless: the answer for a key
    with no tonic (K:none), which the sampler's rules accept and the Form count does not."""
    last = next((bar for bar in reversed(tune.bars) if bar.pitches), None)
    if last is None:
        return False
    return keyless if last.tonic is None else last.pitches[-1] % 12 == last.tonic
