"""Reading ABC tunes: split a text into tunes, read header fields, and check a tune.

The check is shared by `abcgen sample --check` and `abcgen evaluate`. A tune is valid when

1. music21's ABC reader (music21.abcFormat) tokenises it without error,
2. it has at least one note (rests alone do not count), and
3. every full bar has exactly the duration its meter asks for.

Rule 3 follows ABC practice, which is tolerant at the edges of a section and strict elsewhere.
A bar may be *shorter* than its meter (never longer) when it is

- the first bar of the tune (a pickup, or anacrusis), or the last one;
- next to a section boundary: just before or just after a repeat sign (`|:`, `:|`, `::`),
  a double or final barline (`||`, `|]`, `[|`), or a field line in the body (`P:`, `M:`, `K:`,
  also inline as `[M:3/4]`); so the short last bar of a repeated part and the pickup into
  the next part pass, whether or not they add up to a full bar;
- just before a first or second ending (`[1`, `[2`, `|1`, `:|2`): where the common part of
  a section stops short.

Every other bar must be full. Meter changes in the body (an `M:` line or inline `[M:3/4]`)
apply from the bar that follows them; a bar under `M:none` is never checked. Grace notes take
no time; tuplets and broken rhythm (`>`, `<`) do.

Bar durations come from music21's tokens (each note's quarterLength, tuplet ratio and grace
flag), not from a hand-written ABC parser. Building a full music21 score takes 30-100 ms per
tune, most of it chord symbols and beaming; reading the tokens takes 1-3 ms, which lets the
check run on hundreds of tunes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
from dataclasses import dataclass, field
from fractions import Fraction

# An inline field such as [M:3/4] or [K:Ador]; music21's tokeniser would read it as a chord.
INLINE_FIELD = re.compile(r"\[([A-Za-z]):([^\]\n]*)\]")
NOTE_BEFORE_COLONS = re.compile(r"([A-Z])::")
FIELD_LINE = re.compile(r"^([A-Za-z+]):\s?(.*)$")
# Body fields that mark the edge of a section: a new part, meter or key.
SECTION_FIELDS = {"P", "M", "K"}
# Barlines that end a section (music21 writes `::` as `:|` then `|:`).
SECTION_BARS = {":|", "|:", "||", "|]", "[|"}
ENDING_BARS = {"[1", "[2"}


@dataclass(frozen=True)
class Bar:
    """One bar of a tune, as music21 read it.

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

    @property
    def duration(self) -> Fraction:
        return sum((length for _, length in self.notes), Fraction(0))

    @property
    def pitches(self) -> list[int]:
        return [pitch for pitch, _ in self.notes if pitch is not None]


@dataclass
class Tune:
    """A tune read by music21: its header fields and its bars in the order written."""

    header: dict[str, str]
    bars: list[Bar]

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
    bad_bar: int | None = None  # index into tune.bars of the first bar of the wrong length

    def __bool__(self) -> bool:
        return self.ok


class AbcParseError(ValueError):
    """music21 could not read a tune."""


# ---------------------------------------------------------------- text helpers


def split_tunes(text: str) -> list[str]:
    """Split an ABC text into tunes, each starting at its X: line.

    Anything before the first X: line (a file header, comments) is dropped, and so is
    trailing blank space of each tune.
    """
    starts = [match.start() for match in re.finditer(r"^X:", text, flags=re.MULTILINE)]
    ends = starts[1:] + [len(text)]
    tunes = (text[start:end].strip() for start, end in zip(starts, ends))
    return [tune for tune in tunes if tune]


def header_fields(tune: str) -> dict[str, str]:
    """The header fields of a tune (X, T, M, L, K, ...) up to and including the first K: line.

    Each field keeps its first value; comment lines are skipped.
    """
    fields: dict[str, str] = {}
    for line in tune.splitlines():
        line = line.strip()
        if not line or line.startswith("%"):
            continue
        match = FIELD_LINE.match(line)
        if not match:
            break
        name, value = match.group(1), match.group(2).split("%")[0].strip()
        fields.setdefault(name, value)
        if name == "K":
            break
    return fields


def prepare_for_music21(tune: str) -> str:
    """Rewrite two spellings that music21's ABC reader misreads, without changing the music.

    - An inline field ([M:3/4], [K:G]) goes on a line of its own, as ABC 2.1 allows;
      music21 would read it as a chord.
    - `A::` (a note, then a double repeat) gets a space: music21 reads `A:` as a field line.
    """
    tune = INLINE_FIELD.sub(lambda m: f"\n{m.group(1)}:{m.group(2)}\n", tune)
    return NOTE_BEFORE_COLONS.sub(r"\1 ::", tune)


def format_length(quarters: Fraction, denominator: int = 8) -> str:
    """A duration in quarter notes as a fraction of a whole note: 2.5 -> '5/8'.

    Uses the meter's denominator when it can, so that a 6/8 bar reads '6/8', not '3/4'.
    """
    whole = Fraction(quarters) / 4
    units = whole * denominator
    if units.denominator == 1:
        return f"{units.numerator}/{denominator}"
    return f"{whole.numerator}/{whole.denominator}"


# ---------------------------------------------------------------- reading with music21


def read_tune(text: str, complete: bool = True) -> Tune:
    """Read a tune with music21's ABC tokeniser into bars of (pitch, duration) notes.

    complete=False reads the beginning of a tune still being written: its last bar is
    not the tune's last bar, so it gets no end-of-tune tolerance.
    Raises AbcParseError when music21 cannot read it.
    """
    from music21 import abcFormat

    handler = abcFormat.ABCHandler()
    try:
        # music21 writes its warnings straight to stderr; keep the command line clean.
        with contextlib.redirect_stderr(io.StringIO()):
            handler.process(prepare_for_music21(text))
            bars = _BarReader().read(handler.tokens, complete)
    except Exception as error:  # music21 raises many kinds of error on malformed text
        raise AbcParseError(_short_message(error)) from error
    return Tune(header=header_fields(text), bars=bars)


def _short_message(error: Exception) -> str:
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if message.startswith("no active default note length"):
        return "no usable L: or M: field before the first note"
    return message if len(message) <= 100 else message[:97] + "..."


class _BarReader:
    """Walks music21's ABC tokens and cuts them into bars, noting section edges."""

    def __init__(self):
        self.bars: list[Bar] = []
        self.notes: list[tuple[int | None, Fraction]] = []
        self.meter = None  # music21 TimeSignature in force, or None
        self.tonic: int | None = None
        self.bar_meter = None  # meter and tonic in force when the current bar began
        self.bar_tonic: int | None = None
        self.starts_section = True  # the tune's first bar counts as a section start
        self.in_grace = False
        self.short_ok: set[int] = set()  # indices of bars allowed to be short

    def read(self, tokens, complete: bool = True) -> list[Bar]:
        from music21 import abcFormat

        for token in tokens:
            if isinstance(token, abcFormat.ABCMetadata):
                self.on_field(token)
            elif isinstance(token, abcFormat.ABCBar):
                self.on_barline(token.src.strip())
            elif isinstance(token, abcFormat.ABCGraceStart):
                self.in_grace = True
            elif isinstance(token, abcFormat.ABCGraceStop):
                self.in_grace = False
            elif isinstance(token, abcFormat.ABCNote) and not token.inGrace:
                self.on_note(token)
        self.close_bar()
        if self.bars:
            self.short_ok.update({0, len(self.bars) - 1} if complete else {0})
        return [self._with_tolerance(index, bar) for index, bar in enumerate(self.bars)]

    def _with_tolerance(self, index: int, bar: Bar) -> Bar:
        if index not in self.short_ok:
            return bar
        return Bar(bar.number, bar.notes, bar.meter, bar.expected, bar.tonic, may_be_short=True)

    def on_field(self, token) -> None:
        if token.isMeter():
            self.meter = _time_signature(token.data)
        elif token.isKey():
            self.tonic = _tonic_pitch_class(token.data)
        if token.tag in SECTION_FIELDS and self.bars_started():
            self.section_edge()

    def on_barline(self, symbol: str) -> None:
        self.close_bar()
        if symbol in SECTION_BARS:
            self.section_edge()
        elif symbol in ENDING_BARS and self.bars:
            self.short_ok.add(len(self.bars) - 1)

    def on_note(self, token) -> None:
        if not self.notes:
            self.bar_meter, self.bar_tonic = self.meter, self.tonic
        length = Fraction(token.quarterLength)
        if token.activeTuplet is not None:
            length *= Fraction(token.activeTuplet.tupletMultiplier())
        self.notes.append((_note_pitch(token), length))

    def bars_started(self) -> bool:
        return bool(self.bars or self.notes)

    def section_edge(self) -> None:
        """A section boundary here: the bar before it and the bar after it may be short.

        A field line in the middle of a bar ends that bar, as music21's own measures do.
        """
        self.close_bar()
        if self.bars:
            self.short_ok.add(len(self.bars) - 1)
        self.starts_section = True

    def close_bar(self) -> None:
        if not self.notes or sum(length for _, length in self.notes) == 0:
            self.notes = []
            return
        meter = self.bar_meter
        expected = Fraction(meter.barDuration.quarterLength) if meter is not None else None
        name = meter.ratioString if meter is not None else None
        self.bars.append(Bar(len(self.bars) + 1, tuple(self.notes), name, expected, self.bar_tonic))
        if self.starts_section:
            self.short_ok.add(len(self.bars) - 1)
            self.starts_section = False
        self.notes = []


def _note_pitch(token) -> int | None:
    """MIDI pitch of a note token; the top note of a chord; None for a rest."""
    from music21 import abcFormat

    if isinstance(token, abcFormat.ABCChord):
        names = [sub.pitchName for sub in token.subTokens
                 if isinstance(sub, abcFormat.ABCNote) and sub.pitchName]
        return max((_midi(name) for name in names), default=None)
    if token.isRest or not token.pitchName:
        return None
    return _midi(token.pitchName)


@functools.lru_cache(maxsize=512)
def _midi(pitch_name: str) -> int:
    from music21 import pitch

    return int(pitch.Pitch(pitch_name).midi)


@functools.lru_cache(maxsize=256)
def _time_signature(meter_field: str):
    """music21's TimeSignature for an M: value (None for M:none); only read, so shared."""
    from music21 import abcFormat

    token = abcFormat.ABCMetadata(f"M:{meter_field}")
    token.preParse()
    return token.getTimeSignatureObject()


@functools.lru_cache(maxsize=256)
def _tonic_pitch_class(key_field: str) -> int | None:
    """Pitch class of the tonic named by a K: value ('G', 'Ador', 'Bbm'); None for K:none/HP."""
    from music21 import abcFormat

    token = abcFormat.ABCMetadata(f"K:{key_field}")
    token.preParse()
    try:
        key = token.getKeySignatureObject()
    except Exception:  # an unreadable key: no tonic rather than no tune
        return None
    tonic = getattr(key, "tonic", None)
    if tonic is None or key_field.strip().lower() in ("", "none"):
        return None
    return tonic.pitchClass


@functools.lru_cache(maxsize=256)
def key_name(key_field: str) -> str:
    """A K: value spelled one way: 'G' -> 'G major', 'Ador' -> 'A dorian', 'Em' -> 'E minor'."""
    from music21 import abcFormat

    token = abcFormat.ABCMetadata(f"K:{key_field}")
    token.preParse()
    try:
        key = token.getKeySignatureObject()
    except Exception:  # not a key music21 knows: keep what was written
        return key_field.strip()
    tonic, mode = getattr(key, "tonic", None), getattr(key, "mode", None)
    if tonic is None or key_field.strip().lower() in ("", "none"):
        return key_field.strip() or "none"
    return f"{tonic.name.replace('-', 'b').capitalize()} {mode}"


# ---------------------------------------------------------------- the check


def check_tune(text: str, complete: bool = True) -> CheckResult:
    """Check one ABC tune: music21 reads it, it has notes, its full bars are full.

    complete=False checks the beginning of a tune that is still being written (see read_tune).
    Returns a CheckResult whose `reason` is one short phrase when the tune fails.
    """
    header = header_fields(text)
    facts = dict(meter=header.get("M"), key=header.get("K"), title=header.get("T"))
    try:
        tune = read_tune(text, complete)
    except AbcParseError as error:
        return CheckResult(False, f"music21 could not parse it: {error}", **facts)
    facts.update(n_notes=len(tune.pitches), n_bars=len(tune.bars), tune=tune)
    bad_bar = _bad_bar(tune)
    reason = _header_problem(header) or (_bar_problem(tune.bars[bad_bar]) if bad_bar is not None else None)
    if not tune.pitches:
        reason = "it has no notes"
    return CheckResult(reason is None, reason, bad_bar=bad_bar, **facts)


def _header_problem(header: dict[str, str]) -> str | None:
    """music21 reads X: as a whole number when it splits a file into tunes."""
    number = header.get("X")
    if number is not None and not number.isdigit():
        return f"X: should be a tune number, not {number!r}"
    return None


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
    denominator = int(bar.meter.split("/")[1]) if bar.meter else 8
    return (f"bar {bar.number} has {format_length(bar.duration, denominator)}, "
            f"meter {bar.meter} asks for {format_length(bar.expected, denominator)}")


def check_tunes(tunes: list[str]) -> list[CheckResult]:
    """check_tune over a list of tunes."""
    return [check_tune(tune) for tune in tunes]
