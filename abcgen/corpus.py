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
- `[+GB]` (an ABC 1.x chord marker inside brackets) -> `[GB]`.
- Comment lines (`%`), blank lines, trailing comments and runs of spaces are removed;
  line breaks, line continuations (`\\`) and in-tune fields (P:, K:, M:) are kept.

Tunes without K: or without a single note are dropped, and the reason counted.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from abcgen.errors import AbcgenError
from abcgen.files import write_text_atomic  # noqa: F401  (re-exported)

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
    """Read a file as UTF-8, falling back to latin-1; refuse binary files."""
    data = path.read_bytes()
    if b"\0" in data:
        raise AbcgenError(f"{path} is a binary file, not ABC text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def abc_files(path: Path) -> list[Path]:
    """The .abc files that PATH names: itself, or every *.abc below a folder."""
    if not path.exists():
        raise AbcgenError(
            f"{path} does not exist; run `abcgen download` to fetch the Nottingham corpus"
        )
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() == ".abc" and p.is_file())
    if not files:
        what = "is empty" if not any(path.iterdir()) else "has no .abc files"
        raise AbcgenError(f"{path} {what}; point at a folder of .abc files or one .abc file")
    return files


def split_raw_tunes(text: str) -> list[str]:
    """Cut ABC text into tunes at X: lines; text before the first X: is ignored."""
    tunes, current = [], None
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line.startswith("X:"):
            if current is not None:
                tunes.append("\n".join(current))
            current = [line]
        elif current is not None:
            current.append(line)
    if current is not None:
        tunes.append("\n".join(current))
    return tunes


# ---------------------------------------------------------------- normalising


def default_unit_length(meter: str) -> str:
    """ABC 2.1's default L: for a meter: 1/16 below 3/4, else 1/8."""
    match = re.fullmatch(r"(\d+)/(\d+)", meter.strip())
    if match and int(match[1]) / int(match[2]) < 0.75:
        return "1/16"
    return "1/8"


def parse_length(text: str) -> Fraction:
    """An ABC length suffix as a multiple of the unit: '' 1, '3' 3, '/' 1/2, '3/2', '//' 1/4."""
    numerator, _, rest = text.partition("/")
    value = Fraction(int(numerator) if numerator else 1)
    if _:
        slashes = 1 + len(rest) - len(rest.lstrip("/"))
        digits = rest.lstrip("/")
        value /= int(digits) if digits else 2 ** slashes
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

    def rescale(match):
        if match["skip"]:
            return match["skip"]
        if match["note"]:
            return match["note"] + format_length_suffix(parse_length(match["length"]) * factor)
        return match[0]

    return MUSIC_TOKEN.sub(rescale, line)


def parse_unit(value: str) -> Fraction | None:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    return Fraction(int(match[1]), int(match[2])) if match else None


def to_unit_length(header: dict, body: list[str], target: Fraction = UNIT_LENGTH) -> list[str]:
    """Rewrite the body for L:1/8, or another target (see the module doc); body L: lines
    are folded in."""
    unit = parse_unit(header.get("L", [""])[0]) or Fraction(default_unit_length(header["M"][0]))
    rewritten = []
    for line in body:
        if line.startswith("L:"):
            unit = parse_unit(line[2:]) or unit
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


def normalise_music_line(line: str) -> str:
    line = line.split("%", 1)[0].rstrip()
    line = CHORD_SYMBOL.sub(
        lambda m: f'"{normalise_chord(m[1])}"' if normalise_chord(m[1]) else "", line
    )
    line = line.replace("[+", "[").replace("+]", "]")
    return re.sub(r" {2,}", " ", line).strip()


def has_notes(line: str) -> bool:
    return bool(NOTE.search(CHORD_SYMBOL.sub("", line)))


def normalise_tune(raw: str) -> tuple[str | None, str | None]:
    """Return (normalised tune, None) or (None, reason it was dropped)."""
    header: dict[str, list[str]] = {}
    body: list[str] = []
    in_header = True  # until the first line with notes, even after K:
    for line in raw.split("\n"):
        line = line.strip()
        if not line or line.startswith("%"):
            continue
        field_match = FIELD_LINE.match(line)
        if field_match:
            name, value = field_match[1], field_match[2].split("%", 1)[0].strip()
            name = "P" if name == "Y" else name
            if in_header and name in HEADER_ORDER and value and not (name == "P" and "K" in header):
                header[name] = header.get(name, []) + [value] if name == "T" else [value]
            elif name in ("K", "M", "L", "P", "Q") and value:
                body.append(f"{name}:{value}")
            continue
        music = normalise_music_line(line)
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
    body = to_unit_length(header, body)
    lines = [f"{name}:{value}" for name in HEADER_ORDER for value in header.get(name, [])]
    return "\n".join(lines + body), None


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


def parse_tunes(texts: list[str], name: str, files: int = 0) -> Corpus:
    """Normalise the tunes in some ABC texts and split them."""
    corpus = Corpus(name=name, train=[], val=[], test=[], files=files)
    for text in texts:
        for raw in split_raw_tunes(text):
            tune, reason = normalise_tune(raw)
            if tune is None:
                corpus.dropped[reason] += 1
            else:
                corpus.split(split_of(tune)).append(tune)
    if not corpus.tunes:
        raise AbcgenError(f"{name}: no tunes found (an ABC tune starts with an X: line)")
    return corpus


def load_corpus(path: str | Path) -> Corpus:
    """Read a folder of .abc files, one .abc file, or '-' (stdin) into a Corpus."""
    if str(path) == "-":
        return parse_tunes([sys.stdin.read()], name="stdin", files=1)
    path = Path(path)
    files = abc_files(path)
    return parse_tunes([read_text(f) for f in files], name=path.stem or path.name, files=len(files))


# ---------------------------------------------------------------- statistics


def header_value(tune: str, name: str) -> str | None:
    match = re.search(rf"^{name}:(.*)$", tune, flags=re.M)
    return match[1].strip() if match else None


def summary(corpus: Corpus) -> dict:
    """What `abcgen corpus` reports, as plain data."""
    from abcgen.vocab import Vocab

    vocab = Vocab.from_text(corpus.text("train"))
    return {
        "name": corpus.name,
        "fingerprint": corpus.fingerprint,
        "files": corpus.files,
        "tunes": len(corpus.tunes),
        "characters": sum(len(t) + 2 for t in corpus.tunes),
        "vocabulary_size": len(vocab),
        "splits": {name: len(corpus.split(name)) for name in SPLIT_NAMES},
        "dropped": dict(corpus.dropped),
        "meters": dict(Counter(header_value(t, "M") for t in corpus.tunes).most_common()),
        "keys": dict(Counter(header_value(t, "K") for t in corpus.tunes).most_common()),
    }

