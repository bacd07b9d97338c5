"""How to write tunes: SamplingOptions, the one place where sampling's settings, their
defaults and their checks live. `TuneModel.generate` and `evaluate_model` take them, and the
command line takes its defaults from them (abcgen.cli). Also the device and precision names
that the command line offers (abcgen.device picks among them).

Nothing here imports torch, so the command line can read the defaults and still start quickly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from abcgen.abc import AbcParseError, parse_meter
from abcgen.errors import AbcgenError

DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "bf16", "fp32")
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 10.0
MIN_MAX_CHARS = 100  # room for a header and a bar
UNIT_LENGTH_VALUE = re.compile(r"1/(1|2|4|8|16|32|64)")  # an L: value
# A K: value: a tonic and a mode (then perhaps explicit accidentals or a clef), or none/HP.
ABC_KEY = re.compile(
    r"(?i:none|hp)$|[A-G][#b]?(?i:m|min|minor|maj|major|ion|ionian|dor|dorian|phr|"
    r"phrygian|lyd|lydian|mix|mixolydian|aeo|aeolian|loc|locrian)?(\s.*)?$"
)


class OptionError(AbcgenError):
    """A parameter given a value it cannot take. The message names the parameter as Python
    spells it (`top_k must be at least 1`); the command line names its flag instead
    (`--top-k must be at least 1`, see flag_message). A problem that names other
    parameters writes them as {name} (`must be a multiple of {heads}`)."""

    def __init__(self, option: str, problem: str):
        super().__init__(f"{option} {_named(problem, str)}")
        self.option, self.problem = option, problem

    def flag_message(self) -> str:
        return f"{flag(self.option)} {_named(self.problem, flag)}"


def flag(option: str) -> str:
    """The command line's flag for a parameter: top_k -> --top-k."""
    return "-n" if option == "n" else "--" + option.replace("_", "-")


def _named(problem: str, name: Callable[[str], str]) -> str:
    return re.sub(r"\{([a-z_]+)\}", lambda match: name(match[1]), problem)


@dataclass(frozen=True, kw_only=True)
class SamplingOptions:
    """How `TuneModel.generate` writes tunes (see abcgen.sample for what each one does).

    temperature, top_k: the plain sampling temperature and top-k.
    keep_rhythm: apply the temperature among pitches only, not to note lengths or to what
    kind of character comes next; and write a pitch only from the likeliest ones that hold
    pitch_top_p of the pitch odds (1: any).
    fix_bars: write again any bar of the wrong length as soon as it is complete.
    structure: the form to write to (AABB, A16B16, ...), "auto" to draw one from the training
    tunes' forms in the tune's meter, or "none" (see abcgen.structure); needs fix_bars.
    meter, key, title, length: header values to write instead of the model's own; prime: ABC to
    start from (a header or first bars), or @FILE.
    max_chars: the longest tune; a longer one is cut after its last complete bar.
    check, retries: afterwards, write again whole tunes that fail the ABC check, up to retries times.
    max_seconds: the wall-clock bound (default: sample.time_limit(n)); past it the tunes being
    written are cut where they stand and none is written again.
    """

    temperature: float = 0.8
    top_k: int | None = None
    seed: int | None = None
    keep_rhythm: bool = True
    pitch_top_p: float = 0.9  # see abcgen.shaping.pitch_nucleus
    fix_bars: bool = True
    structure: str = "auto"
    meter: str | None = None
    key: str | None = None
    title: str | None = None
    length: str | None = None
    prime: str | None = None
    max_chars: int = 1500
    check: bool = True
    retries: int = 5
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        if self.top_k is not None and self.top_k < 1:
            raise OptionError("top_k", "must be at least 1")
        if not 0 < self.pitch_top_p <= 1:
            raise OptionError("pitch_top_p", "must be greater than 0 and at most 1")
        if self.max_chars < MIN_MAX_CHARS:
            raise OptionError("max_chars", f"must be at least {MIN_MAX_CHARS} (room for a header and a bar)")
        check_header_values(meter=self.meter, key=self.key, title=self.title, length=self.length)
        if self.structure not in (None, "auto", "none"):
            # Here, not at the top: abcgen.structure is a later module, and "auto" needs no parsing.
            from abcgen.structure import check_structure_option

            check_structure_option(self.structure)
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise OptionError("seed", "must be a whole number from 0 up")
        if self.retries < 0:
            raise OptionError("retries", "must be at least 0")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise OptionError("max_seconds", "must be more than 0")


def check_temperature(temperature: float) -> None:
    if not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
        raise OptionError("temperature", f"must be between {MIN_TEMPERATURE:g} and {MAX_TEMPERATURE:g}")


def check_count(n: int) -> None:
    """How many tunes to write: at least one."""
    if n < 1:
        raise OptionError("n", "must be at least 1")


def check_header_values(**values: str | None) -> None:
    """One clear line for a meter, key, title or length that cannot be written."""
    for name, value in values.items():
        if value is not None and (not value.strip() or "\n" in value):
            raise OptionError(name, f"must be one line of text, not {value!r}")
    length = values.get("length")
    if length is not None and not UNIT_LENGTH_VALUE.fullmatch(length.strip()):
        raise OptionError("length", f"must be a unit note length such as 1/8 or 1/4, not {length!r}")
    meter, key = values.get("meter"), values.get("key")
    if meter is not None:
        try:
            parse_meter(meter)
        except AbcParseError:
            raise OptionError("meter", f"{meter!r} is not an ABC meter (such as 6/8, 3/4, C)") from None
    if key is not None and not ABC_KEY.match(key.strip()):
        raise OptionError("key", f"{key!r} is not an ABC key (such as D, Ador, Emin, Bb)")


SAMPLING_DEVICE = "cpu"  # where sample and evaluate run: a step is a few small matrix products
EVALUATION_TUNES = 200  # tunes that evaluate and experiment sample per model
SAMPLE_TUNES = 1  # tunes that `abcgen sample` writes
