"""Export ABC tunes as MIDI, MusicXML and engraved sheet music (SVG, and PDF when possible).

    >>> from abcgen.export import export_tunes
    >>> report = export_tunes(Path("tunes.abc").read_text(), "out/")
    >>> report.written            # [PosixPath('out/001-the-first.mid'), ...]

music21 reads the ABC and writes MusicXML; abcgen writes the MIDI from music21's score with
mido; verovio engraves the MusicXML as SVG, one file per page. PDF needs MuseScore or
LilyPond on the PATH. Export time grows in proportion to a tune's length (where music21 took
time quadratic in it, abcgen does that work itself or calls a narrower part of music21: see
_linear_translation, play_order, to_midi, to_musicxml); a tune longer than MAX_TUNE_BARS
bars is refused, to keep memory bounded.

Each output is named from the tune's X: number and a slug of its title:
`003-the-american-dwarf.mid`, `.musicxml`, `.svg` and `.pdf`. A tune longer than one page
gets `003-the-american-dwarf-1.svg`, `-2.svg`, ...; two tunes with the same number and
title get `-b`, `-c`, ... after the second one's name.

The MIDI plays the tune as a musician would: repeats and first/second endings expanded,
grace notes sounded, the tempo from Q: or DEFAULT_TEMPI, and, when asked, the chord symbols
as a second track. music21's ABC reader has quirks; prepare_abc lists the ones worked around.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import unicodedata
from collections.abc import Collection, Generator, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from tqdm import tqdm

from abcgen.abc import AbcParseError, header_fields, parse_meter, split_tunes
from abcgen.corpus import INLINE_VOICE, VOICE_FIELD, decode_text, first_voice_only, normalise_chord
from abcgen.errors import AbcgenError
from abcgen.files import write_bytes_atomic as write_atomic

if TYPE_CHECKING:  # types only: music21, mido and verovio are imported where they are used
    import mido
    import verovio
    from music21 import base, chord, clef, harmony, note, spanner, stream, tempo

T = TypeVar("T")
# what converting one tune gives: (outputs, None, warnings), or (None, why it failed, warnings)
_Converted = tuple[dict[str, list[bytes]] | None, str | None, list[str]]

FORMATS = ("midi", "musicxml", "svg", "pdf")
DEFAULT_FORMATS = ("midi", "musicxml", "svg")
EXTENSIONS = {"midi": "mid", "musicxml": "musicxml", "svg": "svg", "pdf": "pdf"}

# Tempo of a tune without Q:, by meter: (beats per minute, beat in quarter notes). Jigs and
# slip jigs are felt in dotted quarters; reels, hornpipes, polkas and waltzes in quarters;
# a steady dance pace rather than a session race.
DEFAULT_TEMPI = {
    "6/8": (110, 1.5),
    "9/8": (110, 1.5),
    "12/8": (110, 1.5),
    "2/4": (120, 1.0),
    "3/4": (140, 1.0),
}
FALLBACK_TEMPO = (110, 1.0)  # 4/4, 2/2 (C, C|) and any other meter

LOWEST_NOTE = 12  # C0: music21 misreads ABC notes below it (C-1 becomes C flat 1)
GRACE_LENGTH = Fraction(1, 8)  # of each sounded grace note, in quarter notes (a 32nd note)
MELODY_VELOCITY = 90  # music21's default
CHORD_VELOCITY = 60  # the accompaniment sits under the melody
MELODY_PROGRAM = 0  # General MIDI acoustic grand piano
CHORD_PROGRAM = 24  # General MIDI acoustic (nylon) guitar
TICKS_PER_QUARTER = 10080  # music21's: divisible by 2 to 10, so tuplets and graces land on ticks
SVG_OPTIONS = {
    "pageWidth": 2100,  # A4, in verovio's tenths of a millimetre
    "pageHeight": 2970,
    "scale": 40,
    "adjustPageHeight": True,  # a tune shorter than a page gets a page as tall as its music
    "footer": "none",
    "svgViewBox": True,  # the SVG scales to the width of a browser window
}
MUSESCORE_PROGRAMS = ("mscore", "musescore", "mscore4portable", "musescore4", "mscore3", "musescore3")
PDF_HELP = (
    "PDF export needs LilyPond or MuseScore: install one (`apt-get install lilypond`, "
    "`brew install lilypond`, or MuseScore from musescore.org) so that `lilypond` and "
    "`musicxml2ly`, or `mscore`, are on the PATH; or leave pdf out of --format"
)


@dataclass(frozen=True)
class TuneText:
    """One tune of an ABC text: its X: number, title and ABC."""

    number: int
    title: str
    abc: str

    @property
    def stem(self) -> str:
        """The file name without extension: `003-the-american-dwarf`."""
        return f"{self.number:03d}-{slugify(self.title)}"


@dataclass(frozen=True)
class Failure:
    """A tune that could not be exported, and why."""

    number: int
    title: str
    reason: str

    def __str__(self) -> str:
        return f"X:{self.number} ({self.title}): {self.reason}"


@dataclass
class ExportReport:
    """What export_tunes did: the files written, the tunes that failed, warnings."""

    tunes: int = 0
    written: list[Path] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


# ---- reading ABC -------------------------------------------------------------------------------


def slugify(title: str) -> str:
    """`The American Dwarf` -> `the-american-dwarf`: ASCII, at most 60 characters."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    return slug[:60].rstrip("-") or "untitled"


def read_tunes(abc_text: str) -> list[TuneText]:
    """Split ABC text into tunes at their X: lines (text with none but a K: line is one tune)."""
    abc_text = abc_text.removeprefix("\ufeff")  # a byte-order mark read as UTF-8
    texts = split_tunes(abc_text)
    if not texts and re.search(r"(?m)^K:", abc_text):
        texts = ["X:1\n" + abc_text.strip()]
    tunes = []
    for position, text in enumerate(texts, start=1):
        fields = header_fields(text)
        number = re.match(r"\s*(\d+)", fields.get("X", ""))
        title = fields.get("T", "").strip() or "untitled"
        tunes.append(TuneText(int(number[1]) if number else position, title, text + "\n"))
    return tunes


# ---- working around music21's ABC reader -------------------------------------------------------

_QUOTED = re.compile(r'"([^"\n]*)"')
_CHORD_NAME = re.compile(r"[A-G][#b]?(?:maj|min|m|M|dim|aug|sus|add|\+|o|[0-9]|[#b](?=[0-9]))*(?:/[A-G][#b]?)?")
_NO_CHORD = {"N.C.", "NC", "No Chord", "None"}
# A field line with no musical meaning, placed before K:, M: and Q: lines (see prepare_abc).
_GUARD = "N:abcgen"


def prepare_abc(abc: str) -> tuple[str, list[str]]:
    """Rewrite one tune so that music21 reads it as ABC 2.1 means it; returns (abc, warnings).

    - Inline fields ([K:D], [M:3/4], [L:1/4]) become field lines of their own; music21
      would read them as chords. So does `A::` (a note before a double repeat), which it
      reads as a field `A:`.
    - A K:, M: or Q: line standing alone between two bars is lost by music21: the pitches
      follow the new key, but no key signature, meter or tempo change reaches the score.
      Each such line is preceded by a field line that means nothing, `N:abcgen`.
    - A tune with neither L: nor M: gets ABC 2.1's default L:1/8 (music21 gives up).
    - Q: is written `Q:1/4=120` (music21 fails on `Q: 1/4 = 120`; see _tempo_field);
      M:(2+3)/8 becomes M:2+3/8, which music21 reads as 5/8 (it would make 23/8 of it).
    - A tune with V: fields keeps its first voice only, with a warning (music21 loses the
      notes of voices named in the header, and sounds the strains of [V:] blocks at once).
    - Decorations: `H` becomes `!fermata!` (music21 drops the note after an H); `+name+`
      (ABC 2.0) becomes `!name!` (music21 would play the letters of the name as notes).
    - Rests music21 drops: `x` (invisible) becomes `z`; `Z4` (four bars of rest) becomes
      four bars of `z`, from the meter and unit length in force.
    - Endings other than 1 and 2 (`[3`, `[1,3`, `|4`) become `[1`/`[2`, which music21
      reads; their real numbers are given back to the score by parse_tune.
    - Annotations ("^text", "_text", "<text", ">text", "@text") are removed: music21 cannot
      show them, and it drops the note that follows a ">text" annotation.
    - Chord symbols are spelled as abcgen.corpus spells them ("Gd" -> "Gdim", "D/f+" ->
      "D/F#"; music21 would drop the first in silence and read the second as an augmented
      chord). What is still no chord name music21 reads is removed, with a warning.
    """
    return _prepare(abc)[:2]


def _prepare(abc: str) -> tuple[str, list[str], list[str]]:
    """prepare_abc, plus the ending numbers as written, in order ("1", "2", "3", "1,3")."""
    state = _BodyState()
    abc = _first_voice(abc, state)
    header, body = _split_after_key(_inline_fields_to_lines(abc))
    header = "\n".join(_prepare_field(line, state) if _is_field(line) else line for line in header.split("\n"))
    if not re.search(r"(?m)^[LM]:", header):  # ABC 2.1's default; music21 has none
        header = re.sub(r"(?m)^K:", "L:1/8\nK:", header, count=1)
        state.unit = Fraction(1, 8)
    body = _BODY_TOKEN.sub(lambda match: _prepare_token(match, state), body)
    names = [f'"{name}"' for name in dict.fromkeys(state.skipped)]
    listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    warnings = [f"left out chord symbols music21 cannot read: {listed}"] if state.skipped else []
    warnings += state.warnings
    return header + body.rstrip("\n") + "\n", warnings, state.endings


def _first_voice(abc: str, state: _BodyState) -> str:
    """The tune with its first voice only (as abcgen.corpus keeps it), and a warning, when it
    has V: fields: music21 loses the notes of voices named in the header, and sounds the
    strains of [V:] blocks at once."""
    lines = abc.split("\n")
    voices = [match[1] for line in lines for match in [VOICE_FIELD.match(line), *INLINE_VOICE.finditer(line)] if match]
    if not voices:
        return abc
    others = len(dict.fromkeys(voices)) - 1
    if others:
        left_out = "the other voice" if others == 1 else f"the {others} other voices"
        state.warnings.append(
            f"exported its first voice (V:{voices[0]}) only, without {left_out}: music21 cannot read several voices"
        )
    return "\n".join(first_voice_only(lines))


def _split_after_key(abc: str) -> tuple[str, str]:
    match = re.search(r"(?m)^K:.*(\n|$)", abc)
    return (abc[: match.end()], abc[match.end() :]) if match else (abc, "")


_INLINE_FIELD = re.compile(r"\[([A-Za-z]):([^\]\n]*)\]")
_NOTE_BEFORE_COLONS = re.compile(r"([A-Ga-gz][,'\d/]*)::")


def _inline_fields_to_lines(abc: str) -> str:
    """[M:3/4] on a line of its own (as ABC 2.1 allows); `A::` -> `A ::`."""
    abc = _INLINE_FIELD.sub(lambda m: f"\n{m[1]}:{m[2]}\n", abc)
    abc = re.sub(r"\n[ \t]*\n", "\n", abc)  # no blank line where an inline field was
    return _NOTE_BEFORE_COLONS.sub(r"\1 ::", abc)


def _is_field(line: str) -> bool:
    return bool(re.match(r"[A-Za-z]:", line))


@dataclass
class _BodyState:
    """What _prepare_token needs to know as it goes through a tune body."""

    bar: Fraction | None = None  # length of a bar in whole notes; None under a free meter
    unit: Fraction | None = None  # L:, as a fraction of a whole note
    skipped: list[str] = field(default_factory=list)  # chord symbols music21 cannot read
    warnings: list[str] = field(default_factory=list)
    endings: list[str] = field(default_factory=list)

    def unit_length(self) -> Fraction:
        if self.unit is not None:
            return self.unit
        return Fraction(1, 16) if self.bar is not None and self.bar < Fraction(3, 4) else Fraction(1, 8)


# One piece of a tune body that prepare_abc may rewrite; the order matters.
_BODY_TOKEN = re.compile(
    r"""
  (?P<field>^[A-Za-z]:[^\n]*)
| (?P<comment>%[^\n]*)
| (?P<quoted>"[^"\n]*")
| (?P<bang>![^!\n]*!)
| (?<!\[)\+(?P<plus>[A-Za-z0-9^<>().]+)\+
| (?P<ending>(?P<ending_bar>:*\|+:*|\[)(?P<ending_numbers>[0-9]+(?:[-,][0-9]+)*))
| (?P<fermata>H)
| (?P<octaves>[A-Ga-g][,']+)
| Z(?P<bars>[0-9]*)
| x(?P<spacer>[0-9]*/*[0-9]*)
""",
    re.VERBOSE | re.MULTILINE,
)


def _prepare_token(match: re.Match[str], state: _BodyState) -> str:
    kind, text = match.lastgroup, match[0]
    if kind == "field":
        return f"{_GUARD}\n{_prepare_field(text, state)}" if text[0] in "KMQ" else _prepare_field(text, state)
    if kind == "quoted":
        return _prepare_quoted(text[1:-1], state.skipped)
    if kind == "plus":
        return f"!{match['plus']}!"
    if kind == "fermata":
        return "!fermata!"
    if kind == "ending":
        return _prepare_ending(match, state)
    if kind == "octaves":
        return _playable(text)
    if kind == "bars":
        return _bar_rests(int(match["bars"] or 1), state)
    if kind == "spacer":
        return "z" + match["spacer"]
    return text  # comments and !decorations! as they are


def _prepare_field(line: str, state: _BodyState) -> str:
    """A field line as music21 should read it; M: and L: are noted in state."""
    name, value = line[0], line[2:].split("%")[0].strip()
    if name == "Q":
        return _tempo_field(value, state)
    if name == "L":
        unit = re.fullmatch(r"(\d+)\s*/\s*(\d+)", value)
        state.unit = Fraction(int(unit[1]), int(unit[2])) if unit and int(unit[1]) and int(unit[2]) else state.unit
    if name == "M":
        return "M:" + _meter_field(value, state)
    return line


MAX_METER = 64  # beats in a bar, and their note value: music21 takes a second to set up 64/16


def _meter_field(value: str, state: _BodyState) -> str:
    """The M: value music21 reads as ABC means it: `(2+3)/8` and `3/8+2/8` -> `5/8`
    (music21 would make 23/8 of the first and cannot read the second)."""
    value = value.replace(" ", "")
    if value in ("C", "C|"):
        state.bar = Fraction(1)
        return value
    try:
        quarters, ratio = parse_meter(value)
    except AbcParseError:
        raise AbcgenError(f"M:{value} is not a meter (such as 6/8, 3/4, C)") from None
    if ratio is not None and max(map(int, ratio.split("/"))) > MAX_METER:
        raise AbcgenError(
            f"M:{value} is beyond the meters abcgen exports (numbers up to {MAX_METER}): "
            "music21 takes minutes to set up so long a bar"
        )
    state.bar = quarters / 4 if quarters is not None else None
    return ratio if ratio is not None and "+" in value else value


_TEMPO = re.compile(
    r'\s*(?P<text>"[^"]*")?\s*(?:(?P<beats>(?:\d+/\d+\s*)+)=\s*(?P<bpm>\d+)'
    r'|(?:C\s*=\s*)?(?P<bare>\d+))?\s*(?P<after>"[^"]*")?\s*'
)


def _tempo_field(value: str, state: _BodyState) -> str:
    """`Q:1/4=120` from the spellings of ABC 2.1 and before: `1/4 = 120`, `"Allegro" 3/8=60`,
    `1/4 1/8=60` (a beat of 3/8), `120` or `C=120` (beats of the unit length)."""
    match = _TEMPO.fullmatch(value)
    if not match or not (match["bpm"] or match["bare"]):
        state.warnings.append(f"left out the tempo Q:{value}, which music21 cannot read")
        return f"N:Q:{value}" if value else "N:"
    if match["bare"]:
        beat, bpm = state.unit_length(), match["bare"]
    else:
        beat = sum((Fraction(part) for part in match["beats"].split()), Fraction(0))
        bpm = match["bpm"]
    text = match["text"] or match["after"] or ""
    return f"Q:{text}{beat.numerator}/{beat.denominator}={int(bpm)}"


_REPEAT_END = re.compile(r":\||::")


def _prepare_ending(match: re.Match[str], state: _BodyState) -> str:
    """An ending music21 reads: `[1` when a repeat closes it (it spans up to the :|), else
    `[2` (one bar, like a last ending); the number written goes into state.endings."""
    numbers, bar = match["ending_numbers"], match["ending_bar"]
    state.endings.append(numbers)
    if numbers in ("1", "2"):
        return match[0]
    body = match.string
    closing = _REPEAT_END.search(body, match.end())
    following = _BODY_TOKEN.search(body, match.end())
    while following and following.lastgroup != "ending":
        following = _BODY_TOKEN.search(body, following.end())
    closed = closing and (following is None or closing.start() < following.start())
    prefix = "" if bar == "[" else bar + " "
    return prefix + ("[1" if closed else "[2")


def _playable(note: str) -> str:
    """The note, when its octave is one MIDI can play and music21 can read (C0 to G9):
    music21 would move a note beyond them by octaves in silence (C,,,,,,,, becomes Cb4)."""
    octave = (4 if note[0].isupper() else 5) + note.count("'") - note.count(",")
    number = 12 * (octave + 1) + "C D EF G A B".index(note[0].upper())
    if not LOWEST_NOTE <= number <= 127:
        raise AbcgenError(
            f"the note {note} (octave {octave}) is beyond the range of MIDI "
            "that abcgen exports (C0 to G9); write it an octave nearer"
        )
    return note


def _bar_rests(count: int, state: _BodyState) -> str:
    """Z4: four bars of rest, each `z` as long as a bar of the meter in force."""
    if state.bar is None:
        raise AbcgenError(f"a bar rest Z{count if count > 1 else ''} needs a meter (M:) to know its length")
    if count > 10_000:
        raise AbcgenError(f"a rest of {count} bars (Z{count}) is too long to export")
    units = state.bar / state.unit_length()
    length = str(units.numerator) + (f"/{units.denominator}" if units.denominator > 1 else "")
    return "|".join([f"z{length}"] * count)


def _prepare_quoted(text: str, skipped: list[str]) -> str:
    if not text.strip() or text[0] in "^_<>@":
        return ""
    if text.strip() in _NO_CHORD:
        return f'"{text.strip()}"'
    name = normalise_chord(text)  # the corpus's spellings: "Gd" -> "Gdim", "D/f+" -> "D/F#"
    if not (_CHORD_NAME.fullmatch(name) and _music21_reads_chord(name)):
        skipped.append(text)
        return ""
    return f'"{name}"'


@functools.lru_cache(maxsize=1024)
def _music21_reads_chord(name: str) -> bool:
    from music21 import common, harmony

    try:
        return bool(harmony.ChordSymbol(common.cleanedFlatNotation(name)).pitches)
    except Exception:  # music21 raises several kinds of error on names it cannot read
        return False


# The longest tune exported: music21 holds about 60 kB a bar (a 5,000-bar reel peaks near
# 450 MB, with its MusicXML and engraving), so that a tune within both limits stays well
# under 1 GB of memory and a few minutes of work. See bench/results/time-memory.md.
MAX_TUNE_BARS = 5_000
MAX_TUNE_CHARACTERS = 100_000  # for a tune whose bars are few but very long
_BAR_LINE = re.compile(r"::|:*\|+\]?:*|\[\|")


def count_bars(abc: str) -> int:
    """The bars of a tune as written (a pickup counts as one; repeats are not expanded)."""
    body = re.sub(r'"[^"\n]*"|![^!\n]*!|%[^\n]*|^[A-Za-z]:[^\n]*', "", _split_after_key(abc)[1], flags=re.M)
    return sum(1 for bar in _BAR_LINE.split(body) if re.search(r"[A-Ga-gzZx]", bar))


def _refuse_too_long(abc: str) -> None:
    """AbcgenError when the tune is beyond MAX_TUNE_BARS or MAX_TUNE_CHARACTERS."""
    if len(abc) > MAX_TUNE_CHARACTERS:
        raise AbcgenError(
            f"it is too long to export ({len(abc):,} characters; the limit is "
            f"{MAX_TUNE_CHARACTERS:,}): split it into tunes of its parts"
        )
    if (bars := count_bars(abc)) > MAX_TUNE_BARS:
        raise AbcgenError(
            f"it is too long to export ({bars:,} bars; the limit is "
            f"{MAX_TUNE_BARS:,}): split it into tunes of its parts"
        )


def parse_tune(tune: TuneText, warnings: list[str] | None = None) -> stream.Score:
    """Read one tune into a music21 Score (after prepare_abc); warnings go into the list.

    Accidentals carry to the end of the bar (ABC 2.1; music21 defaults to ABC 1.3, where
    they do not). Raises AbcgenError when music21 cannot read the tune or it has no notes.
    """
    from music21 import abcFormat
    from music21.abcFormat import translate

    _refuse_too_long(tune.abc)
    text, notes, endings = _prepare(tune.abc)
    if warnings is not None:
        warnings.extend(notes)
    try:
        with _quiet_stderr(), _linear_translation():
            handler = abcFormat.ABCHandler(abcVersion=(2, 1, 0))
            handler.process(text)
            score = translate.abcToStreamScore(handler)
    except Exception as error:  # music21 raises many kinds of error on malformed ABC
        raise AbcgenError(f"music21 cannot read it: {_one_line(error)}") from error
    for part in score.parts:
        part.__dict__.pop("makeBeams", None)  # set by _rebar for the translation only
    if not score.parts or not score.parts[0].recurse().notes:
        raise AbcgenError("it has no notes")
    for part in score.parts:
        _number_endings(part, endings)
        _tidy_measures(part)
    return score


_TRANSLATION_LOCK = threading.Lock()


@contextlib.contextmanager
def _linear_translation() -> Iterator[None]:
    """music21's ABC translation with its two whole-part passes made linear in tune length,
    and its chord symbols made once per name.

    Its reBar indexes a live iterator of the measures (each index walks the part), and its
    makeBeams looks up the time signature and clef of each bar and beam group through the
    part, whose search tree each lookup rebuilds: both took time quadratic in the number of
    bars (minutes at 1,000 bars). translate.reBar is swapped for _rebar while the lock is
    held, and _rebar gives the part being translated a makeBeams of its own (_make_beams).
    translate's harmony module is swapped for _CachedHarmony, whose ChordSymbol is a copy
    of one made before (half of the time of reading a tune with chord symbols went into
    working out the pitches of each one anew).
    """
    from music21.abcFormat import translate

    with _TRANSLATION_LOCK:
        originals = translate.reBar, translate.harmony
        translate.reBar, translate.harmony = _rebar, _CachedHarmony  # type: ignore[assignment]  # a stand-in module
        try:
            yield
        finally:
            translate.reBar, translate.harmony = originals


class _CachedHarmony:
    """What music21's ABC translation uses of music21.harmony, with ChordSymbol(name) a deep
    copy of the first ChordSymbol of that name (a tenth of the time of making one)."""

    @staticmethod
    def ChordSymbol(name: str):  # noqa: N802 (music21's name)
        made = _chord_symbol(name)
        if isinstance(made, ValueError):
            raise ValueError(*made.args)  # music21 leaves out a chord symbol it cannot read
        return copy.deepcopy(made)

    @staticmethod
    def NoChord(name: str):  # noqa: N802
        from music21 import harmony

        return harmony.NoChord(name)


@functools.lru_cache(maxsize=1024)
def _chord_symbol(name: str) -> harmony.ChordSymbol | ValueError:
    """music21's ChordSymbol of this name, never put into a stream, or the ValueError it raised."""
    from music21 import harmony

    try:
        return harmony.ChordSymbol(name)
    except ValueError as error:
        return error


def _rebar(part: stream.Part, *, inPlace: bool = False) -> stream.Part | None:
    """What music21's reBar does (split each bar longer than its meter; the rest of it
    becomes a bar of its own with a meter that fits), over a list instead of an iterator.

    Like music21 it visits as many bars as there were at the start, the split-off ones
    included, so that the tunes it reads come out the same.
    """
    from music21 import common, exceptions21, stream
    from music21.abcFormat.translate import ABCTranslateException

    if not inPlace:
        part = copy.deepcopy(part)
    measures = list(part.getElementsByClass(stream.Measure))
    signature, renumber = None, 0
    for index in range(len(measures)):
        measure = measures[index]
        signature = measure.timeSignature or signature
        if signature is None:
            raise ABCTranslateException("No time signature found in this Part")
        bar = signature.barDuration.quarterLength
        measure.number += renumber
        if common.opFrac(measure.highestTime) > bar:
            first, rest = measure.splitAtQuarterLength(bar)
            rest.timeSignature = None
            if bar != rest.highestTime:
                try:
                    rest.timeSignature = rest.bestTimeSignature()
                except exceptions21.StreamException as error:
                    raise ABCTranslateException(f"Problem with measure {measure.number}: {error}")
                if index != len(measures) - 1 and measures[index + 1].timeSignature is None:
                    measures[index + 1].timeSignature = signature
            rest.keySignature = None
            rest.clef = None
            rest.number = first.number + 1
            renumber += 1
            part.insert(common.opFrac(first.offset + first.highestTime), rest)
            measures.insert(index + 1, rest)
    part.makeBeams = functools.partial(_make_beams, part)  # type: ignore[method-assign]  # for this part only
    return part if not inPlace else None


def _make_beams(part: stream.Part, **_: Any) -> None:
    """Beams and stem directions as music21's makeBeams sets them, in one walk of the part:
    the meter and clef in force are carried along instead of looked up for each bar, and
    the beams of a rhythm met before are taken from _BEAMS (tunes repeat their rhythms, and
    music21's getBeams takes half a millisecond a bar)."""
    from music21 import beam, clef, meter, note, stream
    from music21.common import opFrac

    signature, sequences = None, {}  # type: ignore[var-annotated]
    for measure in part.getElementsByClass(stream.Measure):
        in_force = measure.timeSignature or signature
        signature = measure.getElementsByClass(meter.TimeSignature).last() or in_force
        if in_force is None:
            continue
        containers = list(measure.voices) if measure.hasVoices() else [measure]
        for container in containers:
            notes = container.notesAndRests.stream()
            if len(notes) <= 1:
                continue
            for grace in [element for element in notes if element.duration.isGrace]:
                notes.remove(grace)
            bar = in_force.barDuration.quarterLength
            if opFrac(opFrac(sum(element.duration.quarterLength for element in notes))) > bar:
                continue  # music21 leaves a bar longer than its meter unbeamed
            offset = 0.0
            if measure.paddingLeft != 0.0:
                offset = opFrac(measure.paddingLeft)
            elif measure.paddingRight == 0.0 and notes.highestTime < bar:
                offset = bar - notes.highestTime
            sequence = sequences.setdefault(id(in_force), repr(in_force.beamSequence))
            rhythm = (
                sequence,
                offset,
                getattr(notes, "paddingRight", None),
                tuple(
                    (element.offset, element.duration.quarterLength, element.duration.type, element.isRest)
                    for element in notes
                ),
            )
            if rhythm not in _BEAMS:
                if len(_BEAMS) > 10_000:
                    _BEAMS.clear()
                _BEAMS[rhythm] = [
                    tuple((each.type, each.direction) for each in beams.beamsList) if beams is not None else ()
                    for beams in in_force.getBeams(notes, measureStartOffset=offset)
                ]
            for element, beams in zip(notes, _BEAMS[rhythm]):
                element.beams = beam.Beams()
                for kind, direction in beams:
                    element.beams.append(kind, direction)

    # stems: one direction for each beam group, from the clef in force at its first note
    current_clef, group, group_clef, in_group = None, [], None, False  # type: ignore[var-annotated]
    for element in part.recurse().getElementsByClass((clef.Clef, note.NotRest)):
        if isinstance(element, clef.Clef):
            current_clef = element
            continue
        first = element.beams.getTypeByNumber(1) if element.beams and element.beams.getByNumber(1) else None
        if first == "start":
            in_group = True
            if not group:
                group_clef = current_clef
        if in_group:
            group.append(element)
        if first == "stop":
            _set_stems(group, group_clef)
            group, in_group = [], False
    if group:
        _set_stems(group, group_clef)
    part.streamStatus.beams = True


# rhythm (beam sequence of the meter, start offset, padding, each element's offset, length,
# note value and rest or not) -> for each element, (type, direction) of each of its beams
_BEAMS: dict[tuple, list[tuple]] = {}


def _set_stems(group: list[note.NotRest], group_clef: clef.Clef | None) -> None:
    """music21's rule: stems of a beam group point the way the clef gives for its pitches,
    except notes whose stems are set already, when all of those agree."""
    if group_clef is None:
        return
    directions = {element.stemDirection for element in group if element.stemDirection in ("up", "down", "unspecified")}
    consistent = "unspecified" not in directions and len(directions) < 2
    pitches = [pitch for element in group for pitch in element.pitches]
    if not pitches:
        return
    direction = group_clef.getStemDirectionForPitches(pitches)
    for element in group:
        if element.stemDirection in ("up", "down") and consistent:
            continue
        if element.stemDirection in ("up", "down", "unspecified"):
            element.stemDirection = direction


def _number_endings(part: stream.Part, endings: list[str]) -> None:
    """Give the endings their numbers as written: prepare_abc wrote `[3` as `[1` or `[2`."""
    from music21 import spanner

    brackets = list(part.spannerBundle.getByClass(spanner.RepeatBracket))
    if len(brackets) != len(endings):
        return  # music21 joined or dropped an ending: leave its numbers
    for bracket, numbers in zip(brackets, endings):
        if numbers not in ("1", "2"):
            bracket.number = numbers


def _tidy_measures(part: stream.Part) -> None:
    """Undo what music21 does to bars that ABC does not mean (see the functions called)."""
    from music21 import stream
    from music21.stream.makeNotation import makeAccidentalsInMeasureStream

    measures = list(part.getElementsByClass(stream.Measure))
    _unshare_elements(measures)
    _number_bars(measures)
    _drop_doubled_barlines(measures)
    # music21 leaves undecided whether to print an accidental carried through the bar, and
    # MusicXML then prints it again; this decides, keeping every accidental the ABC writes.
    makeAccidentalsInMeasureStream(part)


def _unshare_elements(measures: list[stream.Measure]) -> None:
    # Splitting a bar that is too long, music21 puts one time signature into two bars.
    seen = set()
    for measure in measures:
        for element in list(measure.elements):
            if id(element) in seen:
                measure.replace(element, copy.deepcopy(element))
            seen.add(id(element))


def _number_bars(measures: list[stream.Measure]) -> None:
    """A pickup is bar 0 (<measure implicit="yes"> in MusicXML); otherwise count from 1.
    music21 numbers a full first bar 0 as well."""
    from music21 import stream

    if not measures or measures[0].number != 0:
        return
    if measures[0].paddingLeft > 0:
        measures[0].showNumber = stream.enums.ShowNumber.NEVER
    else:
        for measure in measures:
            measure.number += 1


def _drop_doubled_barlines(measures: list[stream.Measure]) -> None:
    # music21 gives a || at the end of a line to both bars around it: it would be drawn twice.
    from music21 import bar

    for previous, measure in zip(measures, measures[1:]):
        left, right = measure.leftBarline, previous.rightBarline
        if left is not None and right is not None and not isinstance(left, bar.Repeat) and left.type == right.type:
            measure.leftBarline = None


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    # music21 prints its warnings straight to stderr; they would break the one-line messages.
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# ---- MIDI --------------------------------------------------------------------------------------


def to_midi(score: stream.Score, chords: bool = False) -> bytes:
    """A standard MIDI file of the tune as played: repeats and endings expanded (play_order),
    grace notes sounded, tied notes joined, the tempo from Q: or default_tempo(); with
    chords=True a further track holds the chord symbols.

    The file is laid out as music21's MIDI writer lays it out (a tempo track, then one
    track per ABC voice, all on channel 1, and the chords on channel 2, TICKS_PER_QUARTER
    ticks a quarter note) and written with mido, from one pass over the notes: music21's
    writer takes time quadratic in the number of notes.
    """
    import mido
    from music21 import key, meter, tempo

    voices: list[list[_Sound]] = []
    accompaniment: list[_Sound] = []
    marks: dict[type, list] = {tempo.MetronomeMark: [], key.KeySignature: [], meter.TimeSignature: []}
    for part in score.parts:
        sounds: list = []
        start, chord_symbol = Fraction(0), None
        for measure in play_order(part):
            _perform(measure, start, sounds, marks)
            if chords and not voices:
                chord_symbol = _accompany(measure, start, chord_symbol, accompaniment)
            start += Fraction(measure.duration.quarterLength)
        voices.append(_join_ties(sounds))
    tempi = marks[tempo.MetronomeMark]
    if not tempi or tempi[0][0] > 0:
        tempi.insert(0, (Fraction(0), default_tempo(score)))
    if not marks[meter.TimeSignature]:
        marks[meter.TimeSignature].append((Fraction(0), meter.TimeSignature("4/4")))
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_QUARTER)
    midi.tracks.append(_conductor_track(marks))
    midi.tracks += [_note_track("Piano", 0, MELODY_PROGRAM, sounds) for sounds in voices]
    if chords:
        midi.tracks.append(_note_track("Acoustic Guitar", 1, CHORD_PROGRAM, accompaniment))
    data = io.BytesIO()
    midi.save(file=data)
    return data.getvalue()


@dataclass
class _Sound:
    """A note to sound: start and end in quarter notes, MIDI pitch, velocity, tie type."""

    start: Fraction
    end: Fraction
    pitch: int
    velocity: int = MELODY_VELOCITY
    tie: str | None = None


def _perform(measure: stream.Measure, start: Fraction, sounds: list, marks: dict) -> None:
    """Add the measure's notes to sounds, and its meters, keys and tempi to marks, at start.

    Chord symbols stay out: they are the accompaniment's. Grace notes get GRACE_LENGTH
    each, taken from the start of the note they lead into (music21 gives them no length).
    A mark goes in only when it comes later than the last of its kind, from any voice.
    """
    from music21 import chord, note

    graces = []
    for element in measure:
        offset = start + Fraction(element.offset)
        kind = next((kind for kind in marks if isinstance(element, kind)), None)
        if kind is not None:
            if not marks[kind] or offset > marks[kind][-1][0]:
                marks[kind].append((offset, element))
        elif isinstance(element, (note.Note, chord.Chord)) and not _is_chord_symbol(element):
            if element.duration.isGrace:
                graces.append(element)
                continue
            length = Fraction(element.quarterLength)
            each = min(GRACE_LENGTH, length / (2 * len(graces))) if graces else Fraction(0)
            for index, grace in enumerate(graces):
                _sound(grace, offset + index * each, each, sounds)
            _sound(element, offset + len(graces) * each, length - len(graces) * each, sounds)
            graces = []


def _sound(element: note.Note | chord.Chord, start: Fraction, length: Fraction, sounds: list) -> None:
    tie = element.tie.type if element.tie is not None else None
    for pitch in element.pitches:
        if not 0 <= pitch.ps <= 127:  # music21's pitch.midi would move it by octaves in silence
            raise AbcgenError(
                f"the note {pitch.nameWithOctave.replace('-', 'b')} is beyond the range "
                "of MIDI (C-1 to G9); write it an octave nearer"
            )
        sounds.append(_Sound(start, start + length, pitch.midi, tie=tie))


def _join_ties(sounds: list) -> list:
    """One sound for each run of tied notes: a tied note is held on through the next note of
    its pitch that starts as it ends (as music21's stripTies does, which also joins the last
    note of an A part, tied into its first ending, to its second ending)."""
    joined: list = []
    open_ties: dict = {}
    for sound in sounds:
        held = open_ties.pop(sound.pitch, None)
        if held is not None and held.end == sound.start:
            held.end = sound.end
        else:
            held = sound
            joined.append(sound)
        if sound.tie in ("start", "continue"):
            open_ties[sound.pitch] = held
    return joined


def _is_chord_symbol(element: base.Music21Object) -> bool:
    from music21 import harmony

    return isinstance(element, harmony.Harmony)


def _accompany(
    measure: stream.Measure, start: Fraction, current: harmony.Harmony | None, accompaniment: list
) -> harmony.Harmony | None:
    """Add the measure's chords to the accompaniment: each chord symbol held until the next,
    the one in force struck again at the bar line. Returns the chord symbol in force."""
    from music21 import harmony

    changes = {Fraction(0): current} if current is not None else {}
    for symbol in measure.getElementsByClass(harmony.Harmony):
        changes[Fraction(symbol.offset)] = current = symbol
    starts = sorted(changes)
    for begin, end in zip(starts, starts[1:] + [Fraction(measure.duration.quarterLength)]):
        pitches = _voicing(changes[begin].figure) if changes[begin].pitches else ()
        if end > begin:
            accompaniment.extend(_Sound(start + begin, start + end, pitch, CHORD_VELOCITY) for pitch in pitches)
    return current


@functools.lru_cache(maxsize=256)
def _voicing(figure: str) -> tuple[int, ...]:
    """The MIDI pitches of a chord symbol, moved by octaves so that the lowest is in C3-B3."""
    from music21 import harmony

    pitches = harmony.ChordSymbol(figure).pitches
    octaves = -((min(pitch.midi for pitch in pitches) - 48) // 12)
    return tuple(pitch.midi + 12 * octaves for pitch in pitches)


def default_tempo(score: stream.Score) -> tempo.MetronomeMark:
    """The MetronomeMark for a tune without Q:, from its first meter (see DEFAULT_TEMPI)."""
    from music21 import duration, meter, tempo

    signature = score.recurse().getElementsByClass(meter.TimeSignature).first()
    number, beat = DEFAULT_TEMPI.get(signature.ratioString if signature else "", FALLBACK_TEMPO)
    return tempo.MetronomeMark(number=number, referent=duration.Duration(beat))


def _ticks(quarters: Fraction) -> int:
    return round(quarters * TICKS_PER_QUARTER)


_SLOWEST_TEMPO = 0xFFFFFF  # microseconds a quarter note: the most MIDI holds (3.6 a minute)
# MIDI key signatures by sharps (negative: flats), -7 to 7, as mido names them
_MAJOR_KEYS = "Cb Gb Db Ab Eb Bb F C G D A E B F# C#".split()
_MINOR_KEYS = [name + "m" for name in "Ab Eb Bb F C G D A E B F# C# G# D# A#".split()]


def _conductor_track(marks: dict) -> mido.MidiTrack:
    """Track 1 of the file: tempi, key signatures and meters, in time order. A mark MIDI
    cannot hold is left out (a tempo in words only, over 7 sharps or flats, a meter's
    numerator over 255 or a denominator no power of 2), a tempo slower than it holds is its
    slowest; modes other than minor are written as major, as music21 does."""
    import mido
    from music21 import key, tempo

    events = []
    for order, (kind, found) in enumerate(marks.items()):
        for offset, mark in found:
            if kind is tempo.MetronomeMark:
                if mark.number is None and mark.numberSounding is None:
                    continue
                bpm = mark.getSoundingMetronomeMark().getQuarterBPM()
                event = ("set_tempo", {"tempo": min(_SLOWEST_TEMPO, mido.bpm2tempo(bpm))})
            elif kind is key.KeySignature:
                if not -7 <= mark.sharps <= 7:
                    continue
                minor = isinstance(mark, key.Key) and mark.mode == "minor"
                event = ("key_signature", {"key": (_MINOR_KEYS if minor else _MAJOR_KEYS)[mark.sharps + 7]})
            else:
                if mark.numerator > 255 or mark.denominator & (mark.denominator - 1):
                    continue
                event = ("time_signature", {"numerator": mark.numerator, "denominator": mark.denominator})
            events.append((_ticks(offset), order, mido.MetaMessage, *event))
    return _track(events)


def _note_track(name: str, channel: int, program: int, sounds: list) -> mido.MidiTrack:
    """A track of notes: its name, its instrument, then note on and off, offs first."""
    import mido

    events = [
        (0, -2, mido.MetaMessage, "track_name", {"name": name}),
        (0, -1, mido.Message, "program_change", {"channel": channel, "program": program}),
    ]
    for sound in sounds:
        start, end = _ticks(sound.start), _ticks(sound.end)
        if end > start:
            events.append(
                (
                    start,
                    1,
                    mido.Message,
                    "note_on",
                    {"channel": channel, "note": sound.pitch, "velocity": sound.velocity},
                )
            )
            events.append((end, 0, mido.Message, "note_off", {"channel": channel, "note": sound.pitch, "velocity": 0}))
    return _track(events)


def _track(events: list) -> mido.MidiTrack:
    """A mido track from (tick, order, message class, type, attributes): sorted by time, then
    order, then as given; it ends a quarter note after its last event, as music21's do.

    mido's checks of each value are skipped (they took most of the time): the callers give
    only values MIDI holds (_sound refuses notes beyond it)."""
    import mido

    events.sort(key=lambda event: event[:2])  # stable: a chord's notes keep their order
    track, now = mido.MidiTrack(), 0
    for tick, _, message, kind, attributes in events:
        track.append(message(kind, skip_checks=True, time=tick - now, **attributes))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=TICKS_PER_QUARTER))
    return track


def play_order(part: stream.Part) -> list[stream.Measure]:
    """The part's measures in the order they are played, repeats and endings expanded.

    One walk along the bars, as abc2midi plays them: a :| goes back to the |: before it
    (or to the start), once more for each ending the section has (or as many times as the
    repeat sign says); an ending bar is played on the passes its numbers name, and skipped
    on the others. music21's expandRepeats did this in time quadratic in the number of bars
    (it regroups every ending bracket of the part for each repeat it expands).
    """
    from music21 import stream

    measures = list(part.getElementsByClass(stream.Measure))
    if not measures:  # music21 makes no measures for a tune of one or two bars
        return list(part.makeMeasures().getElementsByClass(stream.Measure))
    starts, ends, times = _repeat_signs(measures)
    passes_of, last_pass = _endings(part, measures)
    _drop_reopened(starts, ends)
    _start_sections(starts, ends, passes_of, len(measures))

    order, index, section, passing = [], 0, 0, 1
    while index < len(measures):
        if index in passes_of and passing not in passes_of[index]:
            index += 1  # an ending for another pass
            continue
        if index in starts and index > section:
            section, passing = index, 1
        order.append(measures[index])
        if index in ends:
            passes = last_pass.get(index) or times.get(index) or 2
            if passing < passes:
                index, passing = section, passing + 1
                continue
            section, passing = index + 1, 1
        index += 1
    return order


def _repeat_signs(measures: list[stream.Measure]) -> tuple[set[int], set[int], dict[int, int]]:
    """The bars that begin with |:, the bars that end with :|, and the times of each :|
    that says how often (from the bar lines on either side of each bar line)."""
    from music21 import bar as barline

    starts, ends, times = set(), set(), {}
    for index, measure in enumerate(measures):
        for line, after in ((measure.leftBarline, False), (measure.rightBarline, True)):
            if not isinstance(line, barline.Repeat):
                continue
            if line.direction == "start":
                starts.add(index + 1 if after else index)
            elif after or index > 0:
                ends.add(index if after else index - 1)
                if line.times:
                    times[index if after else index - 1] = int(line.times)
    return starts, ends, times


def _endings(part: stream.Part, measures: list[stream.Measure]) -> tuple[dict[int, set[int]], dict[int, int]]:
    """For each bar under an ending bracket, the passes it is played on; and for each bar
    of a run of endings, the number of passes the run asks for (its highest number)."""
    from music21 import spanner

    position = {id(measure): index for index, measure in enumerate(measures)}
    passes_of: dict[int, set[int]] = {}
    for bracket in part.spannerBundle.getByClass(spanner.RepeatBracket):
        numbers = set(bracket.numberRange) or {1}
        # music21's ABC reader gives a bracket its first and last bar only
        spanned = [position[id(measure)] for measure in bracket.getSpannedElements() if id(measure) in position]
        for index in range(min(spanned, default=0), max(spanned, default=-1) + 1):
            passes_of.setdefault(index, set()).update(numbers)
    last_pass: dict[int, int] = {}
    run: list[int] = []
    for bar_index in [*sorted(passes_of), None]:
        if run and (bar_index is None or bar_index != run[-1] + 1):
            highest = max(max(passes_of[bar]) for bar in run)
            last_pass.update(dict.fromkeys(run, highest))
            run = []
        if bar_index is not None:
            run.append(bar_index)
    return passes_of, last_pass


def _drop_reopened(starts: set[int], ends: set[int]) -> None:
    """A |: while a repeat is open replaces the earlier |: (as abc2midi plays it)."""
    open_start = None
    for index in sorted(starts | ends):
        if index in starts:
            if open_start is not None:
                starts.discard(open_start)
            open_start = index
        if index in ends:
            open_start = None


def _start_sections(starts: set[int], ends: set[int], passes_of: dict[int, set[int]], count: int) -> None:
    """Put a |: where a section that ends in :| but has no |: begins: just after the
    previous :| and the endings after it. That is how musicians read it; going back to the
    start of the tune would play an A part again with each B part."""
    section, has_start = 0, False
    for index in range(count):
        later_ending = index in passes_of and 1 not in passes_of[index]
        if index == section and later_ending:
            section += 1
        has_start = has_start or index in starts
        if index in ends:
            if not has_start and not later_ending and 0 < section < count:
                starts.add(section)
            section, has_start = index + 1, False


# ---- MusicXML, SVG and PDF ---------------------------------------------------------------------


def to_musicxml(score: stream.Score) -> bytes:
    """MusicXML 4.0; the chord symbols become <harmony> elements.

    music21's exporter runs with makeNotation off, on the score itself: parse_tune made the
    bars, beams and accidentals already, and the exporter's own notation pass takes time
    quadratic in tune length (it copies the score, and looks up the meter of each bar
    through the part to pad short bars with invisible rests, which a short bar of ABC, such
    as a first ending, does not need). What MusicXML still needs is done by _complete_notation
    with music21's own functions, bar by bar; the exporter finds each element's spanners
    through an index (_spanner_index). A score without bars (a tune of one or two bars) goes
    through music21's whole notation pass, which is quick at that length.
    """
    from music21 import stream
    from music21.musicxml import m21ToXml

    with _quiet_stderr():
        if not all(part.getElementsByClass(stream.Measure) for part in score.parts):
            xml = m21ToXml.GeneralObjectExporter(score).parse()
        else:
            _complete_notation(score)
            exporter = m21ToXml.ScoreExporter(score, makeNotation=False)
            exporter.spannerBundle = _spanner_index(score.spannerBundle)
            exporter.parse()
            xml = exporter.asBytes()
    if not score.metadata or not score.metadata.composer:
        # music21 names itself as the composer of a tune without C:
        xml = xml.replace(b'<creator type="composer">Music21</creator>', b"", 1)
    return xml


def _complete_notation(score: stream.Score) -> None:
    """The steps of music21's notation pass that a score from parse_tune still needs, in
    place, on the bars that need them: tuplets completed and bracketed, and notes whose
    length is no single note value (5/8) split into tied notes (they sound the same in
    to_midi)."""
    from music21 import stream
    from music21.stream import makeNotation

    for part in score.parts:
        split = False
        for measure in part.getElementsByClass(stream.Measure):
            containers = [measure, *measure.voices]
            lengths = [element.duration for container in containers for element in container.notesAndRests]
            if any(length.tuplets for length in lengths):
                makeNotation.splitElementsToCompleteTuplets(measure, recurse=True, addTies=True)
                makeNotation.consolidateCompletedTuplets(measure, recurse=True, onlyIfTied=True)
                for container in containers:
                    makeNotation.makeTupletBrackets(container, inPlace=True)
            split = split or any(length.type in ("complex", "inexpressible") for length in lengths)
        if split:
            part.splitAtDurations(recurse=True)


def _spanner_index(bundle: spanner.SpannerBundle) -> spanner.SpannerBundle:
    """The bundle, with a getBySpannedElement that reads an index of the spanners by the
    elements they span, made once: music21's searches every spanner of the part for each
    element exported, and a tune has a repeat bracket for every ending (quadratic time)."""
    from music21 import spanner

    class IndexedSpannerBundle(spanner.SpannerBundle):
        index: dict[int, list[spanner.Spanner]] | None = None

        def getBySpannedElement(self, spannedElement: base.Music21Object) -> spanner.SpannerBundle:
            if self.index is None:
                self.index = {}
                for each in self:
                    for element in each.getSpannedElements():
                        spanners = self.index.setdefault(id(element), [])
                        if not spanners or spanners[-1] is not each:
                            spanners.append(each)
            return spanner.SpannerBundle(self.index.get(id(spannedElement), []))

    indexed = IndexedSpannerBundle(list(bundle))
    indexed.index = None
    return indexed


@functools.lru_cache(maxsize=1)
def _toolkit() -> verovio.toolkit:
    import verovio

    verovio.enableLog(verovio.LOG_OFF)
    toolkit = verovio.toolkit()
    toolkit.setOptions(SVG_OPTIONS)
    return toolkit


def to_svg(musicxml: bytes) -> list[str]:
    """Engrave MusicXML with verovio: one SVG document per page."""
    toolkit = _toolkit()
    if not toolkit.loadData(musicxml.decode("utf-8")):
        raise AbcgenError("verovio cannot read the MusicXML")
    return [toolkit.renderToSVG(page) for page in range(1, toolkit.getPageCount() + 1)]


def pdf_engine() -> tuple[str, str] | None:
    """("musescore" or "lilypond", path of the program) for PDF export, or None."""
    for name in MUSESCORE_PROGRAMS:
        if path := shutil.which(name):
            return "musescore", path
    path = shutil.which("lilypond")
    return ("lilypond", path) if path and shutil.which("musicxml2ly") else None


def to_pdf(musicxml: bytes) -> bytes:
    """Engrave the MusicXML as PDF with MuseScore, or else with LilyPond."""
    engine = pdf_engine()
    if engine is None:
        raise AbcgenError(PDF_HELP)
    program, path = engine
    with tempfile.TemporaryDirectory(prefix="abcgen-pdf-") as folder:
        source = Path(folder) / "tune.musicxml"
        source.write_bytes(musicxml)
        if program == "musescore":
            return _musescore_pdf(path, source)
        return _lilypond_pdf(path, source)


def _musescore_pdf(program: str, source: Path) -> bytes:
    target = source.with_suffix(".pdf")
    environment = dict(os.environ, QT_QPA_PLATFORM="offscreen")  # no display needed
    _run([program, "-o", str(target), str(source)], "MuseScore", environment)
    return _read_output(target, "MuseScore")


def _lilypond_pdf(program: str, source: Path) -> bytes:
    """LilyPond's own musicxml2ly writes its input, LilyPond engraves it.

    Not music21's LilyPond writer: it drops repeat signs and endings, stops at chord
    symbols, and puts every line of music on a page of its own.
    """
    lilypond_input = source.with_suffix(".ly")
    _run(
        [shutil.which("musicxml2ly") or "musicxml2ly", "--loglevel=ERROR", "-o", str(lilypond_input), str(source)],
        "musicxml2ly",
    )
    # musicxml2ly writes major and minor chords as g:5 and a:m5, which LilyPond 2.20 and
    # later print as power chords, G5 and A5.
    text = lilypond_input.read_text(encoding="utf-8")
    text = re.sub(r"(?<=[a-g])((?:is|es)*\d*\.*)(?::5|(:m)5)(?![0-9])", r"\1\2", text)
    lilypond_input.write_text(text, encoding="utf-8")
    _run([program, "--loglevel=ERROR", "-o", str(source.with_suffix("")), str(lilypond_input)], "LilyPond")
    return _read_output(source.with_suffix(".pdf"), "LilyPond")


def _run(command: list[str], name: str, environment: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    if result.returncode:
        raise AbcgenError(f"{name} failed: {_last_line(result.stderr or result.stdout)}")


def _read_output(path: Path, name: str) -> bytes:
    if not path.exists():
        raise AbcgenError(f"{name} did not write {path.name}")
    return path.read_bytes()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else "no message"


# ---- converting and writing --------------------------------------------------------------------


def convert_tune(
    tune: TuneText, formats: Collection[str] = DEFAULT_FORMATS, chords: bool = False, warnings: list[str] | None = None
) -> dict[str, list[bytes]]:
    """The bytes of each requested format for one tune (for SVG, one item per page)."""
    score = parse_tune(tune, warnings)
    midi = to_midi(score, chords=chords) if "midi" in formats else b""
    # after the MIDI: to_musicxml completes the score's notation in place
    musicxml = to_musicxml(score) if {"musicxml", "svg", "pdf"} & set(formats) else b""
    outputs: dict[str, list[bytes]] = {}
    for name in formats:
        if name == "midi":
            outputs[name] = [midi]
        elif name == "musicxml":
            outputs[name] = [musicxml]
        elif name == "svg":
            outputs[name] = [page.encode("utf-8") for page in to_svg(musicxml)]
        elif name == "pdf":
            outputs[name] = [to_pdf(musicxml)]
    return outputs


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """Validate format names; pdf fails here, before any work, when no engraver is installed."""
    formats = tuple(dict.fromkeys(name.strip().lower() for name in formats))
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        raise AbcgenError(f"unknown format {', '.join(unknown) or '(none given)'}: choose from {', '.join(FORMATS)}")
    if "pdf" in formats and pdf_engine() is None:
        raise AbcgenError(PDF_HELP)
    return formats


def output_paths(out_dir: Path, stem: str, name: str, count: int = 1) -> list[Path]:
    """Where `count` outputs of one format go: stem.svg, or stem-1.svg, stem-2.svg, ..."""
    extension = EXTENSIONS[name]
    if count == 1:
        return [out_dir / f"{stem}.{extension}"]
    return [out_dir / f"{stem}-{page}.{extension}" for page in range(1, count + 1)]


def export_tunes(
    abc_text: str | bytes,
    out_dir: str | os.PathLike[str] = ".",
    formats: Iterable[str] = DEFAULT_FORMATS,
    force: bool = False,
    chords: bool = False,
    jobs: int | None = 1,
    progress: bool = False,
) -> ExportReport:
    """Export every tune in abc_text into out_dir: one file per tune and format.

    abc_text may be bytes, as read from a file: they are decoded as abcgen.corpus reads
    files (UTF-8 or latin-1, UTF-16 or UTF-8 after a byte-order mark).

    Existing files are not overwritten unless force is true: AbcgenError, before anything
    is written. A tune that cannot be converted goes into report.failed and the others
    are still exported. jobs: worker processes (None: one per CPU for a long input).
    progress: a progress bar on stderr when it is a terminal.
    """
    formats = check_formats(formats)
    if isinstance(abc_text, bytes):
        abc_text = decode_text(abc_text, "the input")
    tunes = read_tunes(abc_text)
    if not tunes:
        raise AbcgenError("no tunes found: each tune starts with an X: line and has a K: line")
    out_dir = Path(out_dir)
    stems = _unique_stems(tunes)
    if not force:
        _refuse_existing(out_dir, stems, formats)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ExportReport(tunes=len(tunes))
    with contextlib.closing(_convert_all(tunes, formats, chords, _job_count(jobs, len(tunes)))) as results:
        for tune, stem, (outputs, error, warnings) in _progress(zip(tunes, stems, results), len(tunes), progress):
            report.warnings += [f"X:{tune.number} ({tune.title}): {warning}" for warning in warnings]
            if error:
                report.failed.append(Failure(tune.number, tune.title, error))
                continue
            assert outputs is not None  # no error: converted
            for name, items in outputs.items():
                for path, data in zip(output_paths(out_dir, stem, name, len(items)), items):
                    write_atomic(path, data)
                    report.written.append(path)
    return report


def _convert_safely(tune: TuneText, formats: Collection[str], chords: bool) -> _Converted:
    """(outputs, None, warnings), or (None, reason, warnings): one bad tune must not stop the rest."""
    warnings: list[str] = []
    try:
        return convert_tune(tune, formats, chords, warnings), None, warnings
    except AbcgenError as error:
        return None, str(error), warnings
    except Exception as error:  # music21 and verovio raise many kinds of error
        return None, f"{type(error).__name__}: {_one_line(error)}", warnings


def _convert_all(
    tunes: list[TuneText], formats: Collection[str], chords: bool, jobs: int
) -> Generator[_Converted, None, None]:
    """Conversion results in tune order, from `jobs` worker processes or this one.

    Close the generator when done with it early (export_tunes does, on any exception): the
    workers are stopped then, rather than left to finish the tunes they have. While the
    workers run, SIGTERM exits this process as Python exits (SystemExit, status 143), so that
    the pool's queues are released: killed outright, it would leave its semaphores to
    multiprocessing's resource tracker, which warns of them.
    """
    if jobs <= 1:
        yield from (_convert_safely(tune, formats, chords) for tune in tunes)
        return
    # spawn, not fork: the caller may hold threads (torch does) that fork would not copy.
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_interrupts)
    finished = False
    try:
        with _exit_on_sigterm():
            yield from pool.map(_convert_safely, tunes, [formats] * len(tunes), [chords] * len(tunes))
        finished = True
    finally:
        if not finished:
            # ProcessPoolExecutor has no public way to stop its workers before Python 3.14
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _ignore_interrupts() -> None:
    """In a worker: Ctrl-C reaches the whole process group; the parent stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) in the main thread, which unwinds and cleans up."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a signal handler
        return

    def terminate(number: int, frame: FrameType | None) -> NoReturn:
        raise SystemExit(128 + number)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _job_count(jobs: int | None, tunes: int) -> int:
    if jobs is not None:
        return max(1, jobs)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, tunes // 10))  # a worker takes a second or two to start


def _unique_stems(tunes: list[TuneText]) -> list[str]:
    """File stems, with -b, -c, ..., -z, -aa, -ab, ... added when tunes share an X: number
    and a title (or when that would give the stem of another tune)."""
    taken = {tune.stem for tune in tunes}
    used: set[str] = set()
    stems = []
    for tune in tunes:
        stem, count = tune.stem, 1
        while stem in used or (count > 1 and stem in taken):
            count += 1
            stem = f"{tune.stem}-{_letters(count)}"
        used.add(stem)
        stems.append(stem)
    return stems


def _letters(number: int) -> str:
    """2 -> "b", 26 -> "z", 27 -> "aa": counting in the letters a-z."""
    letters = ""
    while True:
        number, digit = divmod(number - 1, 26)
        letters = chr(ord("a") + digit) + letters
        if number == 0:
            return letters


def _refuse_existing(out_dir: Path, stems: list[str], formats: Iterable[str]) -> None:
    existing = []
    for stem in stems:
        for name in formats:
            extension = EXTENSIONS[name]
            existing += [path for path in [out_dir / f"{stem}.{extension}"] if path.exists()]
            if name == "svg":
                existing += sorted(out_dir.glob(f"{stem}-[0-9]*.svg"))  # stems are [a-z0-9-]
    if existing:
        files = "1 output file exists" if len(existing) == 1 else f"{len(existing)} output files exist"
        raise AbcgenError(f"{files} already, e.g. {existing[0]}: use --force to overwrite, or another --out-dir")


def _progress(items: Iterable[T], total: int, enabled: bool) -> Iterable[T]:
    if not (enabled and sys.stderr.isatty()):
        return items
    return tqdm(items, total=total, desc="export", unit="tune", file=sys.stderr)
