"""Generating tunes: batched sampling with temperature and top-k, header priming,
tune endings, bars of the right length, and the ABC check with retries.

Each tune is written as a sequence of segments: fixed text that is fed to the model
as it is (the X: line, a title or meter the user asked for, a --prime) and free text
that the model writes (a header value up to its line end, then the tune body up to
the blank line that ends a tune in the training text). All n tunes advance together,
one character per step, in one batch.

Bars are checked as they are written (fix_bars): when a bar is complete, the tune so
far goes through the same ABC check as whole tunes, and a bar of the wrong length is
written again from its first character, from the model state saved there. The
shipped model miscounts about one bar in forty; resampling that bar, rather than the
whole tune, keeps the other bars and costs a few steps. Header values get the same care:
a meter or key that the model's training tunes never used (M:4/8, M:A/4) is written again,
as a tune written in it would be guesswork.

In tune bodies the temperature applies within classes of characters (keep_rhythm; see
class_tempered): it sharpens the choice among pitches and among note lengths, while
the kind of character that comes next keeps the model's own odds. Among pitches, the
unlikeliest tail is left out (pitch_top_p; see pitch_nucleus).
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from abcgen.checkpoint import Checkpoint, load_checkpoint
from abcgen.errors import AbcgenError
from abcgen.form import FormTracker, encode_text
from abcgen.structure import BODY_CHARACTERS, BodyRules, check_structure_option, choose_structure

PRETRAINED = Path(__file__).parent / "pretrained" / "nottingham.pt"
TUNE_END = "\n\n"
MAX_BAR_REWINDS = 50  # per tune: past this, the tune is left as the model writes it
BAR_TRIES = 8  # tries at one bar before going back one bar further
LINE_TRIES = 8  # tries at a header value the model writes (M:, L:, K:)
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 10.0
PITCH_TOP_P = 0.9  # see pitch_nucleus
MIN_MAX_CHARS = 100
UNIT_LENGTH_VALUE = re.compile(r"1/(1|2|4|8|16|32|64)")  # an L: value
# A K: value: a tonic and a mode (then perhaps explicit accidentals or a clef), or none/HP.
ABC_KEY = re.compile(r"(?i:none|hp)$|[A-G][#b]?(?i:m|min|minor|maj|major|ion|ionian|dor|dorian|phr|"
                     r"phrygian|lyd|lydian|mix|mixolydian|aeo|aeolian|loc|locrian)?(\s.*)?$")
# Between two bars: barline characters, ending numbers, spaces and line breaks. Any other
# character begins a bar, except a letter that begins a field line (P:B) in the body.
BETWEEN_BARS = set("|:]0123456789 \t\n\\")
MUSIC_LETTERS = set("ABCDEFGabcdefgzxZ")
# Characters that the temperature sharpens among themselves (see class_tempered); the
# pitch letters are class PITCH_CLASS.
SHARPENED_GROUPS = ("ABCDEFGabcdefg", "0123456789/")
PITCH_CLASS = 0
BODY_METER_OR_LENGTH = re.compile(r"(^|\[)[ML]:", re.M)


def default_model_path() -> Path:
    return Path(os.environ.get("ABCGEN_MODEL") or PRETRAINED)


def load_model(path=None, device="cpu") -> "TuneModel":
    """The model at path, or ABCGEN_MODEL, or the shipped Nottingham model."""
    from abcgen.train import pick_device

    return TuneModel(load_checkpoint(path or default_model_path(), device=pick_device(device)))


def read_prime(prime: str | None) -> str | None:
    """--prime TEXT, or @FILE for the contents of FILE (read as corpus files are: UTF-8 or
    latin-1, a byte-order mark dropped), normalised as the corpus normalises tunes (see
    normalise_prime)."""
    if prime and prime.startswith("@"):
        from abcgen.corpus import read_text

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


# A note, rest or chord and its length, on each side of a broken rhythm (A>B, c<d, [FA]>>G),
# the right one perhaps after decorations or a chord symbol; chord symbols and decorations
# elsewhere are copied as they are.
_BROKEN_NOTE = r"(?:\^{1,2}|_{1,2}|=)?[A-Ga-gz][,']*|\[[^\]\[:\"]*\]"
_BROKEN_RHYTHM = re.compile(
    r'"[^"]*"|![^!]*!'
    rf"|(?P<left>{_BROKEN_NOTE})(?P<left_length>\d*/*\d*)\s*(?P<marks>>+|<+)\s*"
    r'(?P<decorations>(?:"[^"]*"|![^!]*!|[~.])*)'
    rf"(?P<right>{_BROKEN_NOTE})(?P<right_length>\d*/*\d*)")
# Title characters that ABC tunebooks often hold and a model trained on plain ASCII lacks.
_TITLE_ASCII = {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"', "\u2013": "-",
                "\u2014": "-", "\u2026": "...", "\u00e6": "ae", "\u00c6": "AE", "\u0153": "oe",
                "\u0152": "OE", "\u00df": "ss", "\u00f8": "o", "\u00d8": "O", "\u00a0": " "}


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
    from abcgen.corpus import HEADER_ORDER, first_voice_only, normalise_music_line, to_unit_length, tune_lines

    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("X:")]
    if starts:
        lines = lines[starts[0]: starts[1] if len(starts) > 1 else None]
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
    import unicodedata

    plain = "".join(_TITLE_ASCII.get(ch, ch) for ch in title)
    plain = unicodedata.normalize("NFKD", plain)
    plain = "".join(ch for ch in plain if ch.isascii() and ch.isprintable())
    return re.sub(r" {2,}", " ", plain).strip()


def _spell_broken_rhythm(line: str) -> str:
    """A music line with each broken rhythm written as lengths: A>B -> A3/2B/2,
    A<B -> A/2B3/2, A>>B -> A7/4B/4 (an unreadable length is left as it is)."""
    from fractions import Fraction

    from abcgen.corpus import format_length_suffix, parse_length

    def spell(match):
        if not match["marks"]:
            return match[0]
        try:
            left, right = parse_length(match["left_length"]), parse_length(match["right_length"])
        except (ValueError, ArithmeticError):
            return match[0]
        short = Fraction(1, 2 ** len(match["marks"]))
        long = 2 - short
        left, right = (left * long, right * short) if match["marks"][0] == ">" else (left * short, right * long)
        return (match["left"] + format_length_suffix(left) + match["decorations"]
                + match["right"] + format_length_suffix(right))

    return _BROKEN_RHYTHM.sub(spell, line)


def check_temperature(temperature: float) -> None:
    if not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
        raise AbcgenError(f"--temperature must be between {MIN_TEMPERATURE:g} and {MAX_TEMPERATURE:g}")


def check_header_values(**values) -> None:
    """One clear line for a --meter, --key, --title or --length that cannot be written."""
    from abcgen.abc import AbcParseError, parse_meter

    for name, value in values.items():
        if value is not None and (not value.strip() or "\n" in value):
            raise AbcgenError(f"--{name} must be one line of text, not {value!r}")
    length = values.get("length")
    if length is not None and not UNIT_LENGTH_VALUE.fullmatch(length.strip()):
        raise AbcgenError(f"--length must be a unit note length such as 1/8 or 1/4, not {length!r}")
    meter, key = values.get("meter"), values.get("key")
    if meter is not None:
        try:
            parse_meter(meter)
        except AbcParseError:
            raise AbcgenError(f"--meter {meter!r} is not an ABC meter (such as 6/8, 3/4, C)") from None
    if key is not None and not ABC_KEY.match(key.strip()):
        raise AbcgenError(f"--key {key!r} is not an ABC key (such as D, Ador, Emin, Bb)")


def in_unit_length(tune: str, length: str | None) -> str:
    """A finished tune (written in L:1/8) rewritten in another unit note length."""
    from abcgen.corpus import parse_unit, to_unit_length

    if not length:
        return tune
    head, sep, rest = tune.partition("\nK:")
    key_line, _, body = rest.partition("\n")
    header = {"L": ["1/8"]}
    lines = to_unit_length(header, body.split("\n"), parse_unit(length))
    head = re.sub(r"^L:.*$", f"L:{header['L'][0]}", head, flags=re.M)
    return f"{head}{sep}{key_line}\n" + "\n".join(lines)


@dataclass
class Stream:
    """One tune being written: what is still to be forced, and what is done."""

    plan: list  # remaining segments: ("fixed", text) or ("line", None) or ("body", None)
    text: str = ""
    forced: str = ""
    mode: str = "fixed"
    done: bool = False
    cut: bool = False
    bars: "BarWatch | None" = None  # follows the body, with fix_bars
    line_start: "Snapshot | None" = None  # the model before a header value, with fix_bars
    line_tries: int = 0
    form: FormTracker | None = None  # where the tune stands, for a model that reads form classes
    form_class: int = 0  # of the text so far
    rules: BodyRules | None = None  # the structure the body is written to (see abcgen.structure)
    closing: bool = False  # the rules are writing a part's closing bar line

    def next_segment(self):
        if not self.plan:
            self.done = True
            return
        self.mode, value = self.plan.pop(0)
        if self.mode == "fixed":
            self.forced = value
            if not value:
                self.next_segment()

    def feed(self, sampled: str, max_chars: int) -> str:
        """The character this stream takes this step (forced or sampled)."""
        if self.forced:
            ch, self.forced = self.forced[0], self.forced[1:]
        else:
            ch = sampled
        self.text += ch
        if self.form is not None:
            self.form_class = self.form.feed(self.text)
        if self.mode == "fixed" and not self.forced:
            self.next_segment()
        elif self.mode == "line" and ch == "\n":
            self.next_segment()
        elif self.mode == "body" and self.text.endswith(TUNE_END):
            self.text = self.text[: -len(TUNE_END)]
            self.done = True
        if not self.done and len(self.text) >= max_chars:
            self.done = self.cut = True
        return ch

    def reopen_line(self, length: int):
        """Write the header value that has just ended again, from text[:length]."""
        self.plan.insert(0, (self.mode, self.forced if self.mode == "fixed" else None))
        self.mode, self.forced, self.text = "line", "", self.text[:length]


@dataclass
class SamplingOptions:
    temperature: float
    top_k: int | None
    pitch_top_p: float
    max_chars: int
    fix_bars: bool
    keep_rhythm: bool
    generator: torch.Generator
    structure: str | None = None  # a form such as AABB, "auto" or None (see abcgen.structure)


@dataclass
class Snapshot:
    """The model just before it wrote a character: what it needs to write it again."""

    length: int  # characters of the tune before that character
    state: object
    logits: torch.Tensor


@dataclass
class BarWatch:
    """Follows a tune body, character by character, to see where each bar begins.

    After a barline the watch is "between" bars (barline characters, ending numbers,
    spaces, line breaks, field lines such as P:B); the first character of music starts
    a bar. A `[` is decided one character later: `[1` is an ending and `[|` a barline,
    while `[CEG]` and `[M:3/4]` start a bar.
    """

    body_start: Snapshot | None = None  # to write again a tune that ends before any bar
    starts: list = field(default_factory=list)  # a Snapshot at each bar's first character
    rewinds: int = 0
    tries_here: int = 0  # rewinds to the current last start
    mode: str = "between"  # or "bar", or "field" (a field line in the body)
    depth: int = 0  # [ brackets open inside the bar
    in_quote: bool = False  # inside a "chord symbol"
    bracket: Snapshot | None = None  # taken at a [ between bars until it is decided
    line_start: bool = True

    def step(self, ch: str, snapshot) -> Snapshot | None:
        """Take the next character; return the Snapshot of a bar that begins with it.

        snapshot() gives the model as it was before ch; it is called only when needed.
        """
        started = None
        if self.mode == "field":
            self.mode = "between" if ch == "\n" else "field"
        elif self.mode == "between":
            started = self.between(ch, snapshot)
        else:
            self.in_bar(ch)
        self.line_start = ch == "\n"
        return started

    def between(self, ch, snapshot):
        if self.bracket is not None:
            bracket, self.bracket = self.bracket, None
            if ch.isdigit() or ch == "|":
                return None
            self.mode, self.depth = "bar", 1
            self.in_bar(ch)
            return bracket
        if ch == "[":
            self.bracket = snapshot()
        elif self.line_start and ch.isalpha() and ch not in MUSIC_LETTERS:
            self.mode = "field"
        elif ch not in BETWEEN_BARS:
            self.mode, self.depth = "bar", 0
            self.in_bar(ch)
            return snapshot()
        return None

    def in_bar(self, ch):
        if self.in_quote or ch == '"':
            self.in_quote = self.in_quote != (ch == '"')
        elif ch == "[":
            self.depth += 1
        elif ch == "]" and self.depth:
            self.depth -= 1
        elif ch in "|:" and not self.depth:
            self.mode = "between"

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
        self.mode, self.bracket, self.in_quote, self.depth = "between", None, False, 0
        self.line_start = line_start
        self.rewinds += 1
        return to


def header_plan(title=None, meter=None, length=None, key=None, prime=None) -> list:
    """Segments that write X:, T:, M:, L:, K: in order, then the body."""
    if prime and prime.lstrip().startswith("X:"):
        return [("fixed", prime), ("body", None)]
    plan = [("fixed", "X:1\n")]
    for name, value in (("T", title), ("M", meter), ("L", length), ("K", key)):
        if value:
            plan.append(("fixed", f"{name}:{value}\n"))
        else:
            plan += [("fixed", f"{name}:"), ("line", None)]
    if prime:
        plan.append(("fixed", prime))
    plan.append(("body", None))
    return plan


def close_cut_tune(text: str) -> str:
    """A tune cut at --max-chars: keep complete bars only, end with a final barline."""
    head, sep, body = text.partition("\nK:")
    key_line, _, music = body.partition("\n")
    last_bar = music.rfind("|")
    music = music[: last_bar + 1] if last_bar >= 0 else ""
    if music.endswith("|") and not music.endswith(("||", "|]", ":|")):
        opened = music.rfind("|:") > music.rfind(":|")  # a repeat still open: close it
        music = music[:-1] + ":|" if opened else music + "]"
    return f"{head}{sep}{key_line}\n{music}".rstrip()


def finish_tune(text: str, cut: bool, number: int) -> str:
    """Number the tune and make its header standard: X, T, ..., M, L, K, each on a line."""
    from abcgen.corpus import normalise_tune

    text = close_cut_tune(text) if cut else text.strip()
    tune, _ = normalise_tune(text)
    tune = tune or text
    return re.sub(r"^X:.*$", f"X:{number}", tune, count=1, flags=re.M)


@dataclass
class TuneModel:
    """A trained model ready to write tunes: `abcgen.load_model().generate(n=4)`."""

    checkpoint: Checkpoint
    warnings: list = field(default_factory=list)

    @property
    def model(self):
        return self.checkpoint.model

    @property
    def vocab(self):
        return self.checkpoint.vocab

    @functools.cached_property
    def masks(self) -> dict:
        return {}

    @functools.cached_property
    def classes(self) -> torch.Tensor:
        return character_classes(self.vocab.chars)

    def generate(self, n=1, temperature=0.8, top_k=None, seed=None, meter=None, key=None,
                 title=None, length=None, prime=None, max_chars=1500, check=True, retries=5,
                 fix_bars=True, keep_rhythm=True, pitch_top_p=PITCH_TOP_P, structure="auto",
                 report=None) -> list[str]:
        """Write n tunes as ABC text.

        keep_rhythm: apply the temperature among pitches and among lengths only, not to
        what kind of character comes next (see class_tempered); and write a pitch only
        from the likeliest ones that hold pitch_top_p of the pitch odds (1: any).
        fix_bars: write again any bar of the wrong length as soon as it is complete.
        structure: the form to write to (AABB, A16B16, ...), "auto" to draw one from the
        training tunes' forms in the tune's meter, or "none" (see abcgen.structure); the
        structure rules need fix_bars.
        check: afterwards, regenerate whole tunes that fail the ABC check (up to retries
        times); report, if given, is called with one line about them.
        """
        check_temperature(temperature)
        if top_k is not None and top_k < 1:
            raise AbcgenError("--top-k must be at least 1")
        if not 0 < pitch_top_p <= 1:
            raise AbcgenError("--pitch-top-p must be greater than 0 and at most 1")
        if n < 1:
            raise AbcgenError("-n/--num must be at least 1")
        if max_chars < MIN_MAX_CHARS:
            raise AbcgenError(f"--max-chars must be at least {MIN_MAX_CHARS} (room for a header and a bar)")
        check_header_values(meter=meter, key=key, title=title, length=length)
        check_structure_option(structure)
        if retries < 0:
            raise AbcgenError("--retries must be at least 0")
        prime = read_prime(prime)
        if prime and prime.lstrip().startswith("X:") and any((meter, key, title, length)):
            raise AbcgenError("--prime starts with its own header (X:...); put the meter, key, "
                              "title or length in it instead of --meter, --key, --title, --length")
        # The model has only seen L:1/8 (the corpus is normalised to it): it writes in 1/8,
        # and the finished tune is rewritten in the unit length asked for.
        plan = header_plan(title, meter, length and "1/8", key, prime)
        # A title may use letters the model never saw (they are fed to it as spaces);
        # anything else it is asked to continue from must be in its vocabulary.
        self.vocab.encode("".join(v for v in (prime, meter, key) if v))
        self.warn_unseen(meter, key, report)
        generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        options = SamplingOptions(temperature, top_k, pitch_top_p, max_chars, fix_bars, keep_rhythm,
                                  generator, structure if fix_bars and structure != "none" else None)
        check_prime_structure(prime, options.structure)
        if options.structure and prime_closes_parts(prime):
            options.structure = None
            self.warnings.append("the prime writes its own repeat or final bar lines: no structure rules")
        tunes = self.sample_batch(n, plan, options)
        if check:
            tunes = self.regenerate_failures(tunes, plan, options, retries, report)
        return [in_unit_length(finish_tune(text, cut, i), length) for i, (text, cut) in enumerate(tunes, 1)]

    def warn_unseen(self, meter, key, report=None):
        seen = self.checkpoint.meta
        for name, value, known in (("meter", meter, seen.get("meters")), ("key", key, seen.get("keys"))):
            if value and known and value not in known:
                self.warnings.append(f"the model has never seen the {name} {value}; expect odd tunes")
                if report:
                    report(f"Warning: {self.warnings[-1]}")

    def regenerate_failures(self, tunes, plan, options, retries, report):
        from abcgen.abc import check_tune

        pending, failures = list(range(len(tunes))), Counter()
        for attempt in range(retries + 1):
            results = {i: check_tune(finish_tune(*tunes[i], number=1)) for i in pending}
            pending = [i for i in pending if not results[i].ok]
            failures.update(failure_kind(results[i].reason) for i in pending)
            if not pending or attempt == retries:
                break
            fresh = self.sample_batch(len(pending), plan, options)
            for i, tune in zip(pending, fresh):
                tunes[i] = tune
        if report and failures:
            kinds = ", ".join(f"{count} {kind}" for kind, count in failures.most_common())
            regenerated = sum(failures.values()) - (len(pending) if pending else 0)
            report(f"regenerated {regenerated} tune(s) that failed the ABC check ({kinds})")
            if pending:
                report(f"{len(pending)} tune(s) still fail the ABC check after {retries} "
                       "retries; they are kept (use --retries to try harder)")
        return tunes

    @torch.no_grad()
    def sample_batch(self, n, plan, options: "SamplingOptions"):
        """Sample n tunes side by side; returns (text, cut at max_chars) pairs."""
        with one_cpu_thread():
            return self._sample_batch(n, plan, options)

    def _sample_batch(self, n, plan, options):
        model, vocab = self.model, self.vocab
        device = next(model.parameters()).device
        model.eval()
        streams = [Stream(plan=list(plan), form=FormTracker(model.config.form, model.config.form_count)) for _ in range(n)]
        for stream in streams:
            stream.next_segment()
        active = list(range(n))
        fallback = vocab.index.get(" ", 0)
        # The training text separates tunes by a blank line: start as if after one.
        start, _ = encode_text(TUNE_END, vocab, model.config.form, model.config.form_count)
        logits, state = model(start.expand(n, -1).to(device))
        logits = logits[:, -1]
        outside = torch.tensor([ch not in BODY_CHARACTERS for ch in vocab.chars])
        while active:
            for i in active:
                stream = streams[i]
                if stream.mode == "body" and stream.rules is None and options.structure and not stream.bars:
                    stream.rules = self.body_rules(stream, options)
            logits = self.mask_forbidden(logits, [streams[i] for i in active], outside)
            probs = next_char_probs(logits, options.temperature, options.top_k)
            if options.keep_rhythm:  # in tune bodies; header values keep the plain temperature
                body = torch.tensor([streams[i].mode == "body" for i in active], device=device)
                if body.any():
                    probs[body] = next_char_probs(logits[body], options.temperature, options.top_k,
                                                  self.classes, options.pitch_top_p)
            sampled = torch.multinomial(probs.cpu(), 1, generator=options.generator)
            sampled = sampled.squeeze(1).tolist()
            chars, rewinds = [], {}
            for row, (i, s) in enumerate(zip(active, sampled)):
                stream = streams[i]
                mode, before = stream.mode, len(stream.text)  # forced text is never rewritten
                chars.append(stream.feed(vocab.chars[s], options.max_chars))
                if options.fix_bars and mode in ("body", "line"):
                    def snapshot(row=row, before=before):
                        return Snapshot(before, model.select_state(state, torch.tensor([row], device=device)),
                                        logits[row])
                    if mode == "body":
                        target = watch_bars(stream, chars[-1], snapshot)
                        chars[-1] = stream.text[-1] if stream.text and target is None else chars[-1]
                    else:
                        target = watch_header_value(stream, snapshot, self.checkpoint.meta)
                    if target is not None:
                        rewinds[i] = target
            keep = [row for row, i in enumerate(active) if not streams[i].done]
            if not keep:
                break
            if len(keep) < len(active):
                state = model.select_state(state, torch.tensor(keep, device=device))
                active = [active[row] for row in keep]
                chars = [chars[row] for row in keep]
            ids = torch.tensor([[vocab.index.get(c, fallback) + len(vocab) * streams[i].form_class]
                                for c, i in zip(chars, active)], device=device)
            logits, state = model(ids, state)
            logits = logits[:, -1]
            if rewinds:
                rows = {row: rewinds[i] for row, i in enumerate(active) if i in rewinds}
                state = replace_rows(model, state, {row: t.state for row, t in rows.items()}, len(active))
                for row, target in rows.items():
                    logits[row] = target.logits
        return [(s.text, s.cut) for s in streams]

    def body_rules(self, stream: Stream, options: SamplingOptions) -> BodyRules | None:
        """The structure rules for a tune whose header is written (None under a free meter)."""
        head_end = stream.text.find("\n", stream.text.find("\nK:") + 1) + 1
        head = stream.text[:head_end] if head_end > 0 else stream.text
        meter = (re.search(r"^M:(.*)$", head, re.M) or [None, "none"])[1].strip()
        if meter.lower() in ("none", ""):
            return None
        structure = choose_structure(options.structure, meter, self.checkpoint.meta.get("forms", {}),
                                     options.generator)
        rules = BodyRules(structure, head)
        rules.start(len(head))
        rules.replay(stream.text)
        return rules

    def mask_forbidden(self, logits: torch.Tensor, streams: list[Stream], outside: torch.Tensor) -> torch.Tensor:
        """Logits with the characters the structure rules forbid set to -inf."""
        rows = [(row, s) for row, s in enumerate(streams) if s.rules is not None and not s.forced and s.mode == "body"]
        if not rows:
            return logits
        mask = torch.zeros(logits.shape, dtype=torch.bool)
        mask[[row for row, _ in rows]] = torch.stack([self.mask_row(s.rules, outside) for _, s in rows])
        return logits.masked_fill(mask.to(logits.device), float("-inf"))

    def mask_row(self, rules: BodyRules, outside: torch.Tensor) -> torch.Tensor:
        """The characters one tune may not write next, as a vocabulary mask; the few
        distinct masks are built once (a mask per step and tune cost 40% of sampling)."""
        key = (rules.lexer.in_quote, frozenset(rules.forbidden()))
        row = self.masks.get(key)
        if row is None:
            row = outside.clone() if not key[0] else torch.zeros_like(outside)
            row[[self.vocab.index[ch] for ch in key[1] if ch in self.vocab.index]] = True
            if row.all():  # never leave nothing to choose
                row[:] = False
            row = self.masks[key] = row
        return row

    def score(self, tunes: list[str]) -> dict:
        """Next-character loss (nats), bits per character and accuracy on some tunes."""
        from abcgen.train import evaluate, known_tunes

        usable = known_tunes(tunes, self.vocab)
        if not usable:
            raise AbcgenError("none of these tunes can be scored: all have unknown characters")
        inputs, ids = encode_text("".join(t + TUNE_END for t in usable), self.vocab, self.model.config.form,
                                   self.model.config.form_count)
        result = evaluate(self.model, ids, inputs)
        return {"loss": result["loss"], "bpc": result["bpc"], "accuracy": result["acc"],
                "tunes_scored": len(usable)}


def watch_bars(stream: Stream, ch: str, snapshot) -> Snapshot | None:
    """Follow the body as ch is added. When a bar turns out to have the wrong length,
    cut it from the text and return the Snapshot to write it again from."""
    from abcgen.abc import check_tune

    watch = stream.bars = stream.bars or BarWatch(body_start=snapshot())
    if stream.rules is not None and not stream.cut:
        return watch_structure(stream, watch, ch, snapshot)
    if stream.cut or watch.rewinds >= MAX_BAR_REWINDS:
        return None
    if stream.done:  # the tune has ended, so its last bar is complete
        if not watch.starts:  # and it has none: write the body again
            stream.text, stream.done = (stream.text + TUNE_END)[: watch.body_start.length], False
            return watch.rewind(watch.body_start, line_start=True)
        result = check_tune(last_bars(stream.text, watch.starts, len(stream.text)))
    else:
        begun = watch.step(ch, snapshot)
        if begun is None or (watch.starts and watch.starts[-1].length == begun.length):
            return None
        if watch.starts:
            result = check_tune(last_bars(stream.text, watch.starts, begun.length), complete=False)
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
    stream.text, stream.done = stream.text[: target.length], False
    return watch.rewind(target, line_start=stream.text.endswith("\n"))


def watch_structure(stream: Stream, watch: BarWatch, ch: str, snapshot) -> Snapshot | None:
    """Follow the body under the structure rules: at each bar's end, go on, write the
    part's closing bar line, or cut the bar and return the Snapshot to write it from."""
    rules = stream.rules
    if stream.done:
        return None
    ends_bar = ch == "|" and rules.lexer.ends_bar() and not stream.closing
    if ends_bar and watch.starts:
        action, _ = rules.bar_end(stream.text, may_rewrite=watch.rewinds < MAX_BAR_REWINDS)
        if action == "rewrite":
            target = watch.rewind_target()
            stream.text, stream.done = stream.text[: target.length], False
            rules.replay(stream.text)
            return watch.rewind(target, line_start=stream.text.endswith("\n"))
        if action == "close":
            closing = _
            stream.text = stream.text[:-1] + closing[0]
            stream.forced, stream.closing = closing[1:], True
            ch = closing[0]
            if stream.form is not None:
                stream.form_class = stream.form.feed(stream.text)
    rules.lexer.feed(ch)
    begun = watch.step(ch, snapshot)
    if begun is not None and not (watch.starts and watch.starts[-1].length == begun.length):
        watch.starts.append(begun)
        watch.tries_here = 0
    if stream.closing and not stream.forced:
        stream.closing = False
        rules.closed(len(stream.text))
    return None


def check_prime_structure(prime: str | None, structure: str | None) -> None:
    """One line for a --prime whose music breaks the ABC rules the structure is held to."""
    from abcgen.abc import check_tune

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


LOCAL_RULES = {"bar length", "syntax", "tie", "bracket", "range"}


def bars_fail(result) -> bool:
    """Whether a check of the last bars found them unreadable or of the wrong length (two
    bars of rests are fine there: the whole tune has notes). Repeats, endings and sections
    span more than two bars: the whole tune's check judges them."""
    return not result.ok and result.rule in LOCAL_RULES


def watch_header_value(stream: Stream, snapshot, meta: dict) -> Snapshot | None:
    """Follow a header value the model writes. When it ends and is not one the model's
    training tunes used (M:4/8, M:A/4, L:1/7), return the Snapshot to write it again from."""
    if stream.line_start is None:
        stream.line_start = snapshot()
    if stream.mode == "line" or stream.done:
        return None
    start, stream.line_start = stream.line_start, None
    line = stream.text[start.length:].strip()
    field_name = stream.text[: start.length].rstrip(":").rsplit("\n", 1)[-1]
    if header_value_ok(field_name, line, meta) or stream.line_tries >= LINE_TRIES:
        stream.line_tries = 0
        return None
    stream.line_tries += 1
    stream.reopen_line(start.length)
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


def last_bars(text: str, starts: list, end: int) -> str:
    """The header and the last two bars of text[:end]: enough to judge the last bar, as
    the one before it shows the barline that opens it. The whole text when the body
    changes meter or unit length, or is still at its first bar.
    """
    key_at = text.find("\nK:") + 1
    head_end = text.find("\n", key_at) + 1
    if len(starts) < 2 or key_at <= 0 or head_end <= 0 or BODY_METER_OR_LENGTH.search(text, head_end, end):
        return text[:end]
    return text[:head_end] + text[starts[-2].length : end]


def replace_rows(model, state, replacements: dict, batch: int):
    """The batch state with some rows replaced by saved one-row states."""
    device = next(model.parameters()).device
    pieces, start = [], 0
    for row in sorted(replacements) + [batch]:
        if row > start:
            pieces.append(model.select_state(state, torch.arange(start, row, device=device)))
        if row < batch:
            pieces.append(replacements[row])
        start = row + 1
    return model.merge_states(pieces)


@contextmanager
def one_cpu_thread():
    """Run on one CPU thread: a sampling step is a few small matrix products, and
    a second thread costs more in hand-over than it saves (10x slower on a busy
    2-core machine, measured in bench/RESULTS.md)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def failure_kind(reason: str) -> str:
    """A check failure in a few words, for the summary line."""
    if reason.startswith("bar "):
        return "with a bar of the wrong length"
    if reason.startswith("music21"):
        return "that music21 could not parse"
    if reason == "it has no notes":
        return "with no notes"
    return reason


def character_classes(chars) -> torch.Tensor:
    """A class number per vocabulary character: the pitch letters are one class
    (PITCH_CLASS), the characters that write note lengths another, and every other
    character is its own."""
    numbers, classes = {group: number for number, group in enumerate(SHARPENED_GROUPS)}, []
    for ch in chars:
        group = next((group for group in SHARPENED_GROUPS if ch in group), ch)
        classes.append(numbers.setdefault(group, len(numbers)))
    return torch.tensor(classes)


def next_char_probs(logits, temperature, top_k, classes=None, pitch_top_p=1.0):
    """Next-character probabilities: logits/temperature, or with classes, the temperature
    applied within each class only (see class_tempered) and the pitches cut to their
    nucleus (see pitch_nucleus)."""
    logits = logits.float()
    if classes is None:
        probs = torch.softmax(logits / temperature, dim=-1)
    else:
        probs = class_tempered(logits, temperature, classes.to(logits.device), pitch_top_p)
    if top_k is not None and top_k < probs.shape[-1]:
        threshold = torch.topk(probs, top_k, dim=-1).values[:, -1:]
        probs = probs.masked_fill(probs < threshold, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def class_tempered(logits, temperature, classes, pitch_top_p=1.0):
    """Which kind of character comes next at the model's own odds; which one of that kind
    sharpened (or flattened) by the temperature.

    A plain temperature below 1 favours whatever single character is likeliest. After a
    note that is often the length `2`, whose rivals (the next pitch) are spread over a
    dozen letters: at 0.8 the shipped model wrote 47% quarter notes where the corpus has
    25%. Keeping the odds between classes leaves rhythm, bar lines and tune endings as
    the model learned them, and the temperature still chooses among pitches and lengths.
    """
    batch, count = logits.shape[0], int(classes.max()) + 1
    index = classes.expand(batch, -1)
    class_odds = torch.zeros(batch, count, device=logits.device).index_add_(
        1, classes, torch.softmax(logits, dim=-1))
    scaled = logits / temperature
    class_max = torch.full((batch, count), float("-inf"), device=logits.device).scatter_reduce(
        1, index, scaled, "amax")
    weights = torch.exp(scaled - class_max.gather(1, index))
    class_sums = torch.zeros(batch, count, device=logits.device).index_add_(1, classes, weights)
    # a class whose every character is masked (-inf) gives 0/0: it keeps no share
    within = torch.nan_to_num(weights / class_sums.gather(1, index), nan=0.0)
    if pitch_top_p < 1:
        pitches = classes == PITCH_CLASS
        within[:, pitches] = pitch_nucleus(within[:, pitches], pitch_top_p)
    return within * class_odds.gather(1, index)


def pitch_nucleus(shares, top_p):
    """The likeliest pitches whose shares (rows summing to 1) add up to top_p, the rest
    left out, renormalised: nucleus sampling (Holtzman et al. 2020) among pitches.

    A tune writes about 150 pitches, and its range is set by the most extreme one, so
    rare pitches the model gives a few percent add up: at temperature 0.8 without the cut,
    the models' tunes spanned about 2 semitones more than the training tunes of the same
    length (bench/RESULTS.md). Leaving out the tail of each choice brings the range back
    while every common step of a melody stays possible.
    """
    ordered, order = shares.sort(dim=-1, descending=True)
    outside = ordered.cumsum(dim=-1) - ordered > top_p
    kept = shares.scatter(-1, order, ordered.masked_fill(outside, 0.0))
    return torch.nan_to_num(kept / kept.sum(dim=-1, keepdim=True), nan=0.0)
