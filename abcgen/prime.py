"""Reading a --prime (the first lines of a tune, given as text or @FILE) the way the corpus
reads tunes, and checking it against the structure rules before sampling goes on from it.
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction
from pathlib import Path

from abcgen.abc import check_tune
from abcgen.corpus import (
    HEADER_ORDER,
    first_voice_only,
    format_length_suffix,
    normalise_music_line,
    parse_length,
    read_text,
    to_unit_length,
    tune_lines,
)
from abcgen.errors import AbcgenError

# A note, rest or chord and its length, on each side of a broken rhythm (A>B, c<d, [FA]>>G),
# the right one perhaps after decorations or a chord symbol; chord symbols and decorations
# elsewhere are copied as they are.
_BROKEN_NOTE = r"(?:\^{1,2}|_{1,2}|=)?[A-Ga-gz][,']*|\[[^\]\[:\"]*\]"
_BROKEN_RHYTHM = re.compile(
    r'"[^"]*"|![^!]*!'
    rf"|(?P<left>{_BROKEN_NOTE})(?P<left_length>\d*/*\d*)\s*(?P<marks>>+|<+)\s*"
    r'(?P<decorations>(?:"[^"]*"|![^!]*!|[~.])*)'
    rf"(?P<right>{_BROKEN_NOTE})(?P<right_length>\d*/*\d*)"
)
# Title characters that ABC tunebooks often hold and a model trained on plain ASCII lacks.
_TITLE_ASCII = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u2033": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u2026": "...",
    "\u00e6": "ae",
    "\u00c6": "AE",
    "\u0153": "oe",
    "\u0152": "OE",
    "\u00df": "ss",
    "\u00f8": "o",
    "\u00d8": "O",
    "\u00a0": " ",
}


def read_prime(prime: str | None) -> str | None:
    """--prime TEXT, or @FILE for the contents of FILE (read as corpus files are: UTF-8 or
    latin-1, a byte-order mark dropped), normalised as the corpus normalises tunes (see
    normalise_prime)."""
    if prime and prime.startswith("@"):
        path = Path(prime[1:])
        if path.is_dir():
            raise AbcgenError(f"prime file {path} is a folder; give --prime @FILE one .abc file")
        if not path.exists():
            raise AbcgenError(f"prime file {path} does not exist")
        prime = read_text(path)
    if prime:
        prime = normalise_prime(prime)
    if prime and prime.endswith("\n"):  # a blank line would end the tune before it starts
        prime = prime.rstrip() + "\n"
    return prime


def normalise_prime(text: str) -> str:
    """A --prime as the corpus normalises tunes (abcgen.corpus.normalise_tune), so that
    what the model is asked to continue looks like what it was trained on.

    Text before the first X: line and any second tune are left out. Header fields the
    model does not use (N:, S:, R:, C:, Z:, w: ...) and comments go; a prime with a K: line
    gets the corpus's header (X:1, T:, P:, M:, L:1/8, Q:, K: in that order, its music
    rewritten in L:1/8), and of several voices only the first. Titles are written in ASCII (Caf\u00e9 -> Cafe, curly quotes straight);
    music lines go through normalise_music_line, and broken rhythms (A>B, A<B), which the
    corpus spells out, are written as lengths (A3/2B/2). No closing bar line is added: the
    model goes on from the prime."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("X:")]
    if starts:
        lines = lines[starts[0] : starts[1] if len(starts) > 1 else None]
    has_key = any(line.strip().startswith("K:") for line in first_voice_only(lines))
    header: dict[str, list[str]] = {}
    body: list[str] = []
    in_header = has_key
    for name, value in tune_lines(lines):
        if name:
            value = _ascii_title(value) if name == "T" else value
            if in_header and name in HEADER_ORDER and value:
                header[name] = header.get(name, []) + [value] if name == "T" else [value]
                in_header = name != "K"
            elif not in_header and name in ("K", "M", "L", "P", "Q") and value:
                body.append(f"{name}:{value}")
            continue
        music = _spell_broken_rhythm(normalise_music_line(value))
        if music:
            body.append(music)
    if not has_key:
        return "\n".join(body) + ("\n" if text.endswith("\n") else "")
    header["X"] = ["1"]
    header.setdefault("T", ["Untitled"])
    header.setdefault("M", ["4/4"])
    body = to_unit_length(header, body)
    lines = [f"{name}:{value}" for name in HEADER_ORDER for value in header.get(name, [])]
    return "\n".join(lines + body) + "\n"


def _ascii_title(title: str) -> str:
    """A title in ASCII: accents dropped, curly quotes and dashes made plain, other
    letters outside ASCII left out."""
    plain = "".join(_TITLE_ASCII.get(ch, ch) for ch in title)
    plain = unicodedata.normalize("NFKD", plain)
    plain = "".join(ch for ch in plain if ch.isascii() and ch.isprintable())
    return re.sub(r" {2,}", " ", plain).strip()


def _spell_broken_rhythm(line: str) -> str:
    """A music line with each broken rhythm written as lengths: A>B -> A3/2B/2,
    A<B -> A/2B3/2, A>>B -> A7/4B/4 (an unreadable length is left as it is)."""

    def spell(match: re.Match[str]) -> str:
        if not match["marks"]:
            return match[0]
        try:
            left, right = parse_length(match["left_length"]), parse_length(match["right_length"])
        except (ValueError, ArithmeticError):
            return match[0]
        short = Fraction(1, 2 ** len(match["marks"]))
        long = 2 - short
        left, right = (left * long, right * short) if match["marks"][0] == ">" else (left * short, right * long)
        return (
            match["left"]
            + format_length_suffix(left)
            + match["decorations"]
            + match["right"]
            + format_length_suffix(right)
        )

    return _BROKEN_RHYTHM.sub(spell, line)


def check_prime_structure(prime: str | None, structure: str | None) -> None:
    """One line for a --prime whose music breaks the ABC rules the structure is held to."""
    if not prime or not structure:
        return
    text = prime if prime.lstrip().startswith("X:") else "X:1\nM:4/4\nL:1/8\nK:C\n" + prime
    if "\nK:" not in text or not text.split("\nK:", 1)[1].partition("\n")[2].strip():
        return
    result = check_tune(text.rstrip("\n"), complete=False)
    # its bar lengths are the musician's (and the meter may come from --meter): not judged
    if result.tune is None and result.rule not in ("bar length", "section"):
        raise AbcgenError(f"--prime breaks the ABC rules: {result.reason}")


def prime_closes_parts(prime: str | None) -> bool:
    """Whether a --prime writes repeat or final bar lines itself: the structure rules,
    which write those, then stand aside for the tune."""
    body = (prime or "").split("\nK:", 1)[-1] if prime and "\nK:" in prime else (prime or "")
    if prime and prime.lstrip().startswith("X:"):
        body = body.partition("\n")[2]
    return re.search(r":\||\|:|\|\]|::|\|\|", body) is not None
