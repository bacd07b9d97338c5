"""Read ABC files, split them into tunes, normalise each tune to standard ABC 2.1,
and split the corpus into train/validation/test by a stable hash of each tune.

What normalisation keeps and rewrites (the Nottingham "cleaned" files differ from
ABC 2.1 in a few places; the model should learn music, not bookkeeping):

- Header: X:1, T: (every title line), P: (part order), M:, L:, Q:, K:, in that order.
  S: (source), N: (notes), R:, and other bookkeeping fields are dropped.
- `Y:` holds the part order in these files; ABC 2.1 writes it as a header `P:`.
- A field placed right after K: but before the first note (the files often say
  `M:4/4 ... K:G` and then `M:6/8`) is the tune's real value: it is folded into the header.
- One unit note length for every tune: L:1/8. Tunes written with L:1/4 or L:1/16 (or
  no L:, whose ABC 2.1 default is 1/16 below a meter of 3/4) have every note, rest and
  chord length rewritten, so the same rhythm is always spelt the same way (`A/2B/2`
  under L:1/4 becomes `AB`); body L: fields are folded in the same way.
- Chord symbols: `Gd` -> `Gdim`, `Ea`/`Fa7` -> `Eaug`/`Faug7`, bass notes `/f+` -> `/F#`
  and `/bb` -> `/Bb`, spaces and the parentheses of optional chords removed, empty ones dropped.
- `[+GB]` (an ABC 1.x chord marker inside brackets) -> `[GB]`; spaces inside a chord go.
- Comment lines (`%`), blank lines, trailing comments and runs of spaces are removed;
  line breaks, line continuations (`\\`) and in-tune fields (P:, K:, M:) are kept.

- Multi-voice tunes (V: fields) keep their first voice only; the others' music is dropped.

Tunes without K: or without a single note are dropped, and the reason counted.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from abcgen.abc import check_tune, header_fields, key_name, split_tunes
from abcgen.errors import AbcgenError

HEADER_ORDER = ["X", "T", "P", "M", "L", "Q", "K"]
FIELD_LINE = re.compile(r"^([A-Za-z]):\s*(.*)$")
CHORD_SYMBOL = re.compile(r'"([^"]*)"')
# A note letter outside chord symbols and fields: what makes a tune have music in it.
NOTE = re.compile(r"[A-Ga-g]")
SPLIT_NAMES = ("train", "val", "test")
UNIT_LENGTH = Fraction(1, 8)
# Pieces of a music line: the ones that carry a length, and the ones to copy untouched
# (chord symbols and annotations, decorations, inline fields, tuplet marks).
MUSIC_TOKEN = re.compile(
    r'(?P<skip>"[^"]*"|![^!]*!|\[[A-Za-z]:[^\]]*\]|\(\d(?::\d*)*)'
    r"|(?P<note>(?:\^{1,2}|_{1,2}|=)?[A-Ga-gzx][,']*)(?P<length>\d*/*\d*)"
)


@dataclass
class Corpus:
    """Normalised tunes of one corpus, split by tune."""

    name: str
    train: list[str]
    val: list[str]
    test: list[str]
    dropped: Counter = field(default_factory=Counter)
    files: int = 0

    @property
    def tunes(self) -> list[str]:
        return self.train + self.val + self.test

    @property
    def fingerprint(self) -> str:
        """A short hash of every normalised tune: changes when the corpus does."""
        digest = hashlib.sha256()
        for tune in sorted(self.tunes):
            digest.update(tune.encode())
            digest.update(b"\0")
        return digest.hexdigest()[:16]

    def split(self, name: str) -> list[str]:
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}, expected one of {SPLIT_NAMES}")
        return getattr(self, name)

    def text(self, split: str = "train") -> str:
        """The split as one ABC text, tunes separated by a blank line."""
        return join_tunes(self.split(split))


# ---------------------------------------------------------------- reading


def read_text(path: Path) -> str:
    """Read a file as ABC text (see decode_text); refuse binary files."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise AbcgenError(f"cannot read {path}: {error.strerror or error}") from error
    return decode_text(data, str(path))


def decode_text(data: bytes, name: str) -> str:
    """ABC text from bytes: UTF-16 or UTF-8 after a byte-order mark (the mark dropped),
    else UTF-8, falling back to latin-1. Bytes with NUL in them are refused as binary."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as error:
            raise AbcgenError(f"{name} starts as UTF-16 but is not: {error.reason}; save it as UTF-8") from error
    if b"\0" in data:
        raise AbcgenError(f"{name} is a binary file, not ABC text")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def abc_files(path: Path) -> list[Path]:
    """The .abc files that PATH names: itself (a file or a pipe), or every *.abc below a folder."""
    if not path.exists():
        raise AbcgenError(
            f"{path} does not exist; run `abcgen download` to fetch the Nottingham corpus, "
            "or name a corpus from `abcgen corpus --list`"
        )
    if path.is_file() or path.is_fifo():
        return [path]
    if not path.is_dir():
        raise AbcgenError(
            f"{path} is neither a folder nor a file; point at a folder of .abc "
            "files or one .abc file (- reads standard input)"
        )
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() == ".abc" and p.is_file())
    if not files:
        what = "is empty" if not any(path.iterdir()) else "has no .abc files"
        raise AbcgenError(f"{path} {what}; point at a folder of .abc files or one .abc file")
    return files


# ---------------------------------------------------------------- normalising


def default_unit_length(meter: str) -> str:
    """ABC 2.1's default L: for a meter: 1/16 below 3/4, else 1/8."""
    match = re.fullmatch(r"(\d+)/(\d+)", meter.strip())
    if match and int(match[1]) / int(match[2]) < 0.75:
        return "1/16"
    return "1/8"


def parse_length(text: str) -> Fraction:
    """An ABC length suffix as a multiple of the unit: '' 1, '3' 3, '/' 1/2, '3/2', '//' 1/4.

    Raises ValueError for a zero denominator ('/0'), which no ABC reader can play."""
    numerator, _, rest = text.partition("/")
    value = Fraction(int(numerator) if numerator else 1)
    if _:
        slashes = 1 + len(rest) - len(rest.lstrip("/"))
        digits = rest.lstrip("/")
        if digits and int(digits) == 0:
            raise ValueError(f"a note length with a zero denominator ({text!r})")
        value /= int(digits) if digits else 2**slashes
    return value


def format_length_suffix(value: Fraction) -> str:
    if value == 1:
        return ""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator if value.numerator != 1 else ''}/{value.denominator}"


def rescale_lengths(line: str, factor: Fraction) -> str:
    """Multiply every note and rest length on a music line by factor.

    Notes inside a chord are rescaled and the chord's own multiplier ([GB]2) kept, which
    rescales the chord as a whole."""
    if factor == 1:
        return line

    def rescale(match: re.Match[str]) -> str:
        if match["skip"]:
            return match["skip"]
        if match["note"]:
            return match["note"] + format_length_suffix(parse_length(match["length"]) * factor)
        return match[0]

    return MUSIC_TOKEN.sub(rescale, line)


def read_unit(value: str) -> Fraction | None:
    """An L: value of a tune being normalised, or None when it is no fraction (the default
    unit then applies). Unlike abcgen.abc.parse_unit, which refuses it, a zero denominator
    raises ZeroDivisionError here: the tune is dropped with that reason (see _reason)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    return Fraction(int(match[1]), int(match[2])) if match else None


def to_unit_length(header: dict, body: list[str], target: Fraction = UNIT_LENGTH) -> list[str]:
    """Rewrite the body for L:1/8, or another target (see the module doc); body L: lines
    are folded in."""
    unit = read_unit(header.get("L", [""])[0]) or Fraction(default_unit_length(header["M"][0]))
    rewritten = []
    for line in body:
        if line.startswith("L:"):
            unit = read_unit(line[2:]) or unit
            continue
        if FIELD_LINE.match(line):
            rewritten.append(line)
        else:
            rewritten.append(rescale_lengths(line, unit / target))
    header["L"] = [f"{target.numerator}/{target.denominator}"]
    return rewritten


def normalise_chord(symbol: str) -> str:
    """Rewrite one chord symbol (without quotes) to standard chord-symbol text."""
    symbol = symbol.replace(" ", "").strip("()")
    if not symbol:
        return ""
    main, _, bass = symbol.partition("/")
    match = re.fullmatch(r"([A-G][#b]?)(m(?!aj)|d(?!im)|a(?!ug|dd))?(.*)", main)
    if match:
        root, quality, rest = match.groups()
        quality = {"d": "dim", "a": "aug"}.get(quality, quality or "")
        main = root + quality + rest
    if bass:
        bass_match = re.fullmatch(r"([a-gA-G])(\+|b|#)?", bass)
        if bass_match:
            letter, accidental = bass_match.groups()
            bass = letter.upper() + {"+": "#", None: ""}.get(accidental, accidental)
        return f"{main}/{bass}"
    return main


NOTE_CHORD = re.compile(r"\[[A-Ga-g^_=,'/0-9 ]+\]")  # a chord of notes, perhaps with spaces


def normalise_music_line(line: str) -> str:
    line = line.split("%", 1)[0].rstrip()
    line = CHORD_SYMBOL.sub(lambda m: f'"{normalise_chord(m[1])}"' if normalise_chord(m[1]) else "", line)
    line = line.replace("[+", "[").replace("+]", "]")
    line = NOTE_CHORD.sub(lambda m: m[0].replace(" ", ""), line)  # abcm2ps: "Not a note"
    return re.sub(r" {2,}", " ", line).strip()


def has_notes(line: str) -> bool:
    return bool(NOTE.search(CHORD_SYMBOL.sub("", line)))


def tune_lines(lines: list[str]) -> Iterator[tuple[str | None, str]]:
    """The first voice's lines of a tune, stripped, blank lines and comments left out:
    (field name, value) for a field (Y: read as P:, a comment after a value cut), or
    (None, line) for music."""
    for line in first_voice_only(lines):
        line = line.strip()
        if not line or line.startswith("%"):
            continue
        field_match = FIELD_LINE.match(line)
        if field_match:
            name = "P" if field_match[1] == "Y" else field_match[1]
            yield name, field_match[2].split("%", 1)[0].strip()
        else:
            yield None, line


def normalise_tune(raw: str) -> tuple[str | None, str | None]:
    """Return (normalised tune, None) or (None, reason it was dropped)."""
    header: dict[str, list[str]] = {}
    body: list[str] = []
    in_header = True  # until the first line with notes, even after K:
    for name, value in tune_lines(raw.split("\n")):
        if name:
            if in_header and name in HEADER_ORDER and value and not (name == "P" and "K" in header):
                header[name] = header.get(name, []) + [value] if name == "T" else [value]
            elif name in ("K", "M", "L", "P", "Q") and value:
                body.append(f"{name}:{value}")
            continue
        music = normalise_music_line(value)
        if music:
            body.append(music)
            in_header = in_header and not has_notes(music)
    if "K" not in header:
        return None, "no K: field"
    if in_header:
        return None, "no notes"
    header["X"] = ["1"]
    header.setdefault("T", ["Untitled"])
    header.setdefault("M", ["4/4"])
    music = repair_bar_lines("\n".join(to_unit_length(header, body)))
    lines = [f"{name}:{value}" for name in HEADER_ORDER for value in header.get(name, [])]
    return "\n".join([*lines, music]), None


VOICE_FIELD = re.compile(r"^\s*V:\s*(\S*)")
INLINE_VOICE = re.compile(r"\[V:\s*([^\]\s]*)[^\]]*\]")


def first_voice_only(lines: list[str]) -> list[str]:
    """The lines of a tune with the music of its first voice only (the first voice its
    V: fields name, or the music before any V:): the model writes one melody, and the
    voices of a multi-voice tune joined one after the other are no melody. V: lines and
    inline [V:...] fields go; a tune with no V: field is returned as it is."""
    if not any(VOICE_FIELD.match(line) or INLINE_VOICE.search(line) for line in lines):
        return lines
    kept, current, after_key, out = None, None, False, []
    for line in lines:
        voice = VOICE_FIELD.match(line)
        if voice:
            kept = kept if kept is not None else voice[1]
            if after_key:
                current = voice[1]
            continue
        if not after_key:
            out.append(line)
            after_key = line.lstrip().startswith("K:")
            continue
        if FIELD_LINE.match(line.strip()) and not INLINE_VOICE.search(line):
            if current is None or current == kept:
                out.append(line)
            continue
        pieces, start = [], 0
        for match in INLINE_VOICE.finditer(line):
            if current is None or current == kept:
                pieces.append(line[start : match.start()])
            kept = kept if kept is not None else match[1]
            current, start = match[1], match.end()
        if current is None or current == kept:
            pieces.append(line[start:])
        if "".join(pieces).strip():
            out.append("".join(pieces))
    return out


# Bar lines outside chord symbols, with the field lines that also end a section.
BAR_LINE = re.compile(r'"[^"\n]*"|(?P<bar>:*(?:\[\||\|\]|\|\||\|):*|::+)|(?P<field>^[A-Za-z]:.*$)', re.M)


def repair_bar_lines(body: str) -> str:
    """Rewrite the corpus's repeat spellings that ABC tools misread, music unchanged:
    `|: || |:` is one `|:`; `:|:` is `::`; a part that ends with `:|` after an earlier
    repeat gets the `|:` it leaves out (abc2midi: "Assuming repeat"); a body that does not
    end with a final or repeat bar line gets `|]`."""
    body = re.sub(r"\|:\s*\|\|\s*\|:", "|:", body)
    body = re.sub(r"(?<![|:]):\|:(?![|:])", "::", body)
    inserts, open_at, closed, section_start = [], False, 0, 0
    for match in BAR_LINE.finditer(body):
        bar = match["bar"]
        if match["field"] is not None:
            section_start = match.end()
        if not bar:
            continue
        if bar.startswith(":"):
            if not open_at and closed:
                inserts.append(section_start)
            open_at, closed = False, closed + 1
        if bar.endswith(":"):
            open_at = True
        if bar.startswith(":") or bar.strip(":") in ("||", "|]"):
            section_start = match.end()
    for position in reversed(inserts):
        start = len(body[position:]) - len(body[position:].lstrip())
        body = body[: position + start] + "|:" + body[position + start :]
    if not body.rstrip().endswith(("|]", "||", ":|", "::")):
        body = body.rstrip() + ("]" if body.rstrip().endswith("|") else "|]")
    return body


# ---------------------------------------------------------------- splitting


def split_of(tune: str) -> str:
    """train/val/test (90/5/5) from a stable hash of the normalised tune."""
    bucket = int(hashlib.sha256(tune.encode()).hexdigest()[:8], 16) % 100
    return "train" if bucket < 90 else "val" if bucket < 95 else "test"


def join_tunes(tunes: list[str], renumber: bool = False) -> str:
    """Tunes as one ABC text, separated by one blank line (X: renumbered 1..n if asked)."""
    if renumber:
        tunes = [renumber_tune(tune, i) for i, tune in enumerate(tunes, 1)]
    return "".join(tune + "\n\n" for tune in tunes)


def renumber_tune(tune: str, number: int) -> str:
    return re.sub(r"^X:.*$", f"X:{number}", tune, count=1, flags=re.M)


def check_failure(tune: str) -> str | None:
    """Why a normalised tune fails the strict check, as a counted drop reason (the rule
    broken, not the bar), or None. Training on such tunes would teach the model to write
    what the sampler then has to refuse."""
    result = check_tune(tune)
    return None if result.ok else f"fails the ABC check ({result.rule})"


def parse_tunes(texts: list[str], name: str, files: int = 0) -> Corpus:
    """Normalise the tunes in some ABC texts and split them."""
    corpus = Corpus(name=name, train=[], val=[], test=[], files=files)
    for text in texts:
        for raw in split_tunes(text):
            tune, reason = normalise_tune(raw)
            if tune is not None:
                reason = check_failure(tune)
                tune = None if reason else tune
            if tune is None:
                corpus.dropped[reason] += 1
            else:
                corpus.split(split_of(tune)).append(tune)
    if not corpus.tunes:
        raise AbcgenError(f"{name}: no tunes found (an ABC tune starts with an X: line)")
    return corpus


def load_corpus(path: str | Path) -> Corpus:
    """Read a folder of .abc files, one .abc file, '-' (stdin), or a corpus abcgen knows by
    name (`oneills-1850`, `essen`: see `abcgen corpus --list`) into a Corpus.

    A tune that cannot be read as it stands (a note length such as `A/0`, a meter `M:3/0`)
    is dropped and counted with a reason that names it (X: and title); the others go through."""
    if str(path) == "-":
        texts, name, files = [_read_stdin()], "stdin", 1
    else:
        path = Path(path)
        named = None if path.exists() else _named_corpus(str(path))
        name, found = named or (path.stem or path.name, abc_files(path))
        texts, files = [read_text(f) for f in found], len(found)
    raws = [raw for text in texts for raw in split_tunes(text)]
    unreadable = Counter(f"{_tune_label(raw)}: {ZERO_DENOMINATOR}" for raw in raws if _zero_length(raw))
    readable = [raw for raw in raws if not _zero_length(raw)] if unreadable else raws
    try:
        corpus = _parse_readable_tunes(readable, name, files)
    except AbcgenError as error:
        raise _no_readable_tunes(error, name, unreadable) from None
    corpus.dropped.update(unreadable)
    return corpus


def _named_corpus(name: str) -> tuple[str, list] | None:
    """(name, files) of a corpus abcgen knows by name (abcgen.download.known_corpora) and
    that is no path here; None for any other name."""
    # Here, not at the top: abcgen.download imports requests, which reading a file never needs.
    from abcgen.download import corpus_files

    return corpus_files(name)


ZERO_DENOMINATOR = "a note length with a zero denominator (such as A/0)"
# Chord symbols, decorations, inline fields and comments: where a `/0` is no note length.
_NOT_LENGTHS = re.compile(r'"[^"]*"|![^!]*!|\+[^+\s]*\+|\[[A-Za-z]:[^\]]*\]|%.*')


def _zero_length(raw: str) -> bool:
    """Whether a music line of the tune writes a length such as A/0, z3/0 or [CE]//0."""
    music = (line for line in raw.split("\n") if not FIELD_LINE.match(line.strip()))
    return any(re.search(r"/0+(?!\d)", _NOT_LENGTHS.sub("", line)) for line in music)


def _read_stdin() -> str:
    """Standard input as bytes, decoded as files are (decode_text)."""
    stream = getattr(sys.stdin, "buffer", None)
    return decode_text(stream.read(), "standard input") if stream else sys.stdin.read()


def _parse_readable_tunes(raws: list[str], name: str, files: int) -> Corpus:
    """parse_tunes over raw tunes; when normalising one fails, over the tunes that normalise
    without error, the others dropped with one reason each that names the tune."""
    try:
        return parse_tunes(["\n".join(raws)], name=name, files=files)
    except (ArithmeticError, ValueError, LookupError):  # normalising a tune failed
        pass
    readable: list[str] = []
    unreadable: Counter[str] = Counter()
    for raw in raws:
        try:
            normalise_tune(raw)
            readable.append(raw)
        except (ArithmeticError, ValueError, LookupError) as error:
            unreadable[f"{_tune_label(raw)}: {_reason(error)}"] += 1
    try:
        corpus = parse_tunes(["\n".join(readable)], name=name, files=files)
    except AbcgenError as error:
        raise _no_readable_tunes(error, name, unreadable) from None
    corpus.dropped.update(unreadable)
    return corpus


def _no_readable_tunes(error: AbcgenError, name: str, unreadable: Counter) -> AbcgenError:
    if not unreadable:
        return error
    return AbcgenError(
        f"{name}: no readable tunes ({sum(unreadable.values())} unreadable, e.g. {next(iter(unreadable))})"
    )


def _tune_label(raw: str) -> str:
    """`X:3 (The Title)` for a raw tune."""
    header = header_fields(raw)
    return f"X:{header.get('X') or '?'} ({header.get('T') or 'untitled'})"


def _reason(error: Exception) -> str:
    if isinstance(error, ZeroDivisionError):
        return "a length or meter with a zero denominator"
    return str(error).splitlines()[0][:120] if str(error) else type(error).__name__


# ---------------------------------------------------------------- statistics


def meter_name(meter: str | None) -> str | None:
    """A meter spelled one way: `C` -> `4/4`, `C|` -> `2/2`, `3 / 4` -> `3/4`."""
    if meter is None:
        return None
    meter = re.sub(r"\s+", "", meter)
    return {"C": "4/4", "C|": "2/2"}.get(meter, meter)


def summary(corpus: Corpus) -> dict:
    """What `abcgen corpus` reports, as plain data. Keys and meters are counted by meaning:
    `D`, `Dmaj` and `Dmajor` are one key (`D major`), `C|` and `2/2` one meter."""
    headers = [header_fields(t) for t in corpus.tunes]
    keys = (header.get("K") for header in headers)
    return {
        "name": corpus.name,
        "fingerprint": corpus.fingerprint,
        "files": corpus.files,
        "tunes": len(corpus.tunes),
        "characters": sum(len(t) + 2 for t in corpus.tunes),
        "vocabulary_size": len(set(corpus.text("train"))),  # what abcgen.vocab.Vocab would hold
        "splits": {name: len(corpus.split(name)) for name in SPLIT_NAMES},
        "dropped": dict(corpus.dropped),
        "meters": dict(Counter(meter_name(header.get("M")) for header in headers).most_common()),
        "keys": dict(Counter(key_name(key) if key is not None else None for key in keys).most_common()),
    }
