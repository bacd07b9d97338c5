"""Evaluation: how valid, how close to the corpus and how original generated tunes are.

The methodology of the thesis this project follows (Mitroi, "Symbolic Music Generation using
Recurrent Neural Networks", University of Copenhagen, 2019), as plain functions over lists of ABC
strings; only `evaluate_model` needs a model.

- Validity: the share of tunes that pass the ABC check shared with `abcgen sample`.
- Musical statistics: one histogram per feature, pooled over a set of tunes (FEATURES). Two
  sets are compared by the overlap area of their normalised histograms (1 = identical, 0 =
  disjoint) and by the KL divergence KL(training || generated) in nats, with add-half
  smoothing over the labels either set uses (0 = identical). Beside each distance stands the
  same distance from the validation tunes to the training tunes: what a model that writes
  tunes like unseen real ones would reach.
- Originality: every bar becomes a transposition-invariant token (its pitches relative to its
  first note, with durations), and consecutive bars are linked by the interval between their
  first notes. For each tune, the longest run of consecutive bars that also occurs in some
  training tune; the share of tunes that copy 4 bars or more; the share whose whole sequence
  equals a training tune's; and the share of distinct bar n-grams across the set.

Statistics of the training and validation splits are cached in $XDG_CACHE_HOME/abcgen (or
~/.cache/abcgen), keyed by the corpus fingerprint.
"""

from __future__ import annotations

import io
import json
import math
import os
import statistics as stats
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

from tqdm import tqdm

from abcgen import abctools
from abcgen.abc import Tune, check_tune, failure_kind, key_name, tune_form
from abcgen.corpus import Corpus, load_corpus
from abcgen.errors import AbcgenError
from abcgen.files import write_bytes_atomic, write_text_atomic
from abcgen.options import EVALUATION_TUNES, SamplingOptions, check_count

if TYPE_CHECKING:  # types only: torch and matplotlib stay off the statistics' path
    from matplotlib.figure import Figure

    from abcgen.sample import TuneModel

CACHE_VERSION = 1  # bump whenever tune_features, bar_sequence or abcgen.abc.read_tune change
COPY_BARS = 4  # a tune that shares this many consecutive bars with a training tune copies it
NGRAM_SIZES = (1, 2, 4)
SMOOTHING = 0.5  # pseudo-count added to every label before the KL divergence

FEATURES = {
    "pitch_class": "pitch class (to tonic)",
    "pitch_range": "pitch range (semitones)",
    "note_duration": "note duration",
    "melodic_interval": "melodic interval",
    "notes_per_bar": "notes per bar",
    "length_bars": "tune length (bars)",
    "meter": "meter",
    "key": "key",
}
DEGREES = ["1", "b2", "2", "b3", "3", "4", "#4", "5", "b6", "6", "b7", "7"]
RANGE_BIN = 3  # semitones
LENGTH_BIN = 8  # bars
INTERVAL_LIMIT = 12  # larger leaps are pooled as "<-12" and ">+12"

BarToken = tuple[str, "int | None"]  # (bar content, interval from the previous bar's first note)


# ---------------------------------------------------------------- features of one tune


def tune_features(tune: Tune) -> dict[str, Counter]:
    """The histogram counts of every feature for one tune read by abcgen.abc.read_tune."""
    pitches = tune.pitches
    counts: dict[str, Counter] = {name: Counter() for name in FEATURES}
    for bar in tune.bars:
        if bar.tonic is not None:
            counts["pitch_class"].update(DEGREES[(p - bar.tonic) % 12] for p in bar.pitches)
        counts["notes_per_bar"][str(len(bar.pitches))] += 1
    counts["note_duration"].update(_duration_label(d) for p, d in tune.notes if p is not None)
    counts["melodic_interval"].update(_interval_label(b - a) for a, b in zip(pitches, pitches[1:]))
    if pitches:
        counts["pitch_range"][_bin_label(max(pitches) - min(pitches), RANGE_BIN)] += 1
    counts["length_bars"][_bin_label(len(tune.bars), LENGTH_BIN)] += 1
    meter = next((bar.meter for bar in tune.bars if bar.meter), tune.header.get("M", "none"))
    counts["meter"][meter] += 1
    counts["key"][key_name(tune.header.get("K", "none"))] += 1
    return counts


def _duration_label(quarters: Fraction) -> str:
    whole = Fraction(quarters) / 4
    return f"{whole.numerator}/{whole.denominator}"


def _interval_label(semitones: int) -> str:
    if semitones > INTERVAL_LIMIT:
        return f">+{INTERVAL_LIMIT}"
    if semitones < -INTERVAL_LIMIT:
        return f"<-{INTERVAL_LIMIT}"
    return f"{semitones:+d}" if semitones else "0"


def _bin_label(value: int, width: int) -> str:
    low = value // width * width
    return f"{low}-{low + width - 1}"


def ordered_labels(feature: str, labels: Iterable[str]) -> list[str]:
    """Labels in reading order: scale degrees, then numbers by value, then the rest by name."""
    if feature == "pitch_class":
        return [degree for degree in DEGREES if degree in set(labels)]
    return sorted(labels, key=lambda label: (_label_value(label), label))


def _label_value(label: str) -> float:
    """'<-12' -> -inf, '>+12' -> inf, '12-14' -> 12, '3/8' -> 0.375; names sort last."""
    if label.startswith("<"):
        return -math.inf
    if label.startswith(">"):
        return math.inf
    text = label.split("-")[0] if "-" in label[1:] else label
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return math.inf


# ---------------------------------------------------------------- distances between histograms


def _shares(counts: Counter, labels: Collection[str], alpha: float = 0.0) -> dict[str, float]:
    total = sum(counts.values()) + alpha * len(labels)
    return {label: (counts.get(label, 0) + alpha) / total for label in labels}


def overlap_area(p: Counter, q: Counter) -> float | None:
    """Shared area of two normalised histograms: 1 when identical, 0 when disjoint."""
    if not sum(p.values()) or not sum(q.values()):
        return None
    labels = set(p) | set(q)
    p_share, q_share = _shares(p, labels), _shares(q, labels)
    return sum(min(p_share[label], q_share[label]) for label in labels)


def kl_divergence(p: Counter, q: Counter, alpha: float = SMOOTHING) -> float | None:
    """KL(p || q) in nats, both histograms smoothed with alpha per label: 0 when identical."""
    if not sum(p.values()) or not sum(q.values()):
        return None
    labels = set(p) | set(q)
    p_share, q_share = _shares(p, labels, alpha), _shares(q, labels, alpha)
    return sum(p_share[x] * math.log(p_share[x] / q_share[x]) for x in labels)


# ---------------------------------------------------------------- a set of tunes, profiled


@dataclass
class TuneSetProfile:
    """What evaluation needs from a set of tunes: validity, feature counts, bar sequences."""

    tunes: int = 0
    readable: int = 0
    valid: int = 0
    has_notes: int = 0
    failures: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # a few reasons, as check_tune gave them
    features: dict[str, Counter] = field(default_factory=lambda: {f: Counter() for f in FEATURES})
    sequences: list[tuple[BarToken, ...]] = field(default_factory=list)

    def to_json(self) -> dict:
        data = {k: getattr(self, k) for k in ("tunes", "readable", "valid", "has_notes")}
        data["failures"] = dict(self.failures)
        data["features"] = {name: dict(counts) for name, counts in self.features.items()}
        data["sequences"] = [[list(token) for token in seq] for seq in self.sequences]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "TuneSetProfile":
        return cls(
            tunes=data["tunes"],
            readable=data["readable"],
            valid=data["valid"],
            has_notes=data["has_notes"],
            failures=Counter(data["failures"]),
            features={name: Counter(data["features"].get(name, {})) for name in FEATURES},
            sequences=[tuple((bar, link) for bar, link in seq) for seq in data["sequences"]],
        )


def profile_tunes(tunes: list[str], progress: bool = False, desc: str = "reading tunes") -> TuneSetProfile:
    """Check every tune and pool the features of those music21 can read."""
    profile = TuneSetProfile(tunes=len(tunes))
    for text in _progress(tunes, progress, desc):
        result = check_tune(text)
        profile.valid += result.ok
        if not result.ok:
            reason = result.reason or "failed"
            profile.failures[failure_kind(reason)] += 1
            if len(profile.examples) < 5:
                profile.examples.append(reason)
        if result.tune is None:
            continue
        profile.readable += 1
        profile.has_notes += bool(result.n_notes)
        if not result.n_notes:
            continue
        for name, counts in tune_features(result.tune).items():
            profile.features[name].update(counts)
        profile.sequences.append(bar_sequence(result.tune))
    return profile


def _progress(items: list[str], enabled: bool, desc: str) -> Iterable[str]:
    if not enabled:
        return items
    return tqdm(items, desc=desc, unit="tune", leave=False)


# ---------------------------------------------------------------- originality


def bar_sequence(tune: Tune) -> tuple[BarToken, ...]:
    """A tune as transposition-invariant bar tokens.

    Each bar is spelt as 'pitch:duration' pairs, pitches in semitones above the bar's first
    note ('r' for a rest), and carries the interval from the previous bar's first note.
    """
    tokens: list[BarToken] = []
    previous: int | None = None
    for bar in tune.bars:
        first = bar.pitches[0] if bar.pitches else None
        notes = " ".join(
            f"{'r' if p is None or first is None else p - first}:{_duration_label(d)}" for p, d in bar.notes
        )
        link = first - previous if first is not None and previous is not None else None
        tokens.append((notes, link))
        previous = first if first is not None else previous
    return tuple(tokens)


def _whole_tune_key(sequence: tuple[BarToken, ...]) -> tuple:
    """A tune's identity up to transposition: bars and links, less the first bar's link."""
    return tuple(bar for bar, _ in sequence) + tuple(link for _, link in sequence[1:])


class TrainingIndex:
    """The training tunes' bar sequences, indexed by bar, for finding copied runs."""

    def __init__(self, sequences: list[tuple[BarToken, ...]]):
        self.sequences = sequences
        self.where: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for tune_index, sequence in enumerate(sequences):
            for position, (bar, _) in enumerate(sequence):
                self.where[bar].append((tune_index, position))
        self.whole_tunes = {_whole_tune_key(sequence) for sequence in sequences}

    def longest_copied_run(self, sequence: tuple[BarToken, ...]) -> int:
        """The most consecutive bars of sequence that also occur, in order, in one training tune."""
        best = 0
        for start, (bar, _) in enumerate(sequence):
            if len(sequence) - start <= best:
                break
            for tune_index, position in self.where.get(bar, ()):
                best = max(best, self._run_length(sequence, start, self.sequences[tune_index], position))
        return best

    @staticmethod
    def _run_length(ours: tuple[BarToken, ...], start: int, theirs: tuple[BarToken, ...], position: int) -> int:
        length = 1
        while (
            start + length < len(ours)
            and position + length < len(theirs)
            and ours[start + length] == theirs[position + length]
        ):
            length += 1
        return length

    def is_copy(self, sequence: tuple[BarToken, ...]) -> bool:
        return _whole_tune_key(sequence) in self.whole_tunes


def distinct_ngram_share(sequences: list[tuple[BarToken, ...]], n: int) -> float | None:
    """Distinct bar n-grams / all bar n-grams across a set of tunes (1 = no repetition)."""
    grams = [
        tuple(bar for bar, _ in seq[i : i + n]) + tuple(link for _, link in seq[i + 1 : i + n])
        for seq in sequences
        for i in range(len(seq) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else None


def originality(sequences: list[tuple[BarToken, ...]], index: TrainingIndex) -> dict:
    """Copying and diversity measures of a set of tunes against the training index."""
    runs = [index.longest_copied_run(seq) for seq in sequences]
    count = len(sequences)
    return {
        "tunes": count,
        "longest_copied_run": runs,
        "median_copied_run": stats.median(runs) if runs else None,
        "max_copied_run": max(runs, default=None),
        f"share_copying_{COPY_BARS}_bars": sum(r >= COPY_BARS for r in runs) / count if count else None,
        "share_identical": sum(index.is_copy(seq) for seq in sequences) / count if count else None,
        "distinct_ngrams": {str(n): distinct_ngram_share(sequences, n) for n in NGRAM_SIZES},
    }


# ---------------------------------------------------------------- the corpus, cached


@dataclass
class CorpusProfile:
    """Profiles of a corpus's training and validation splits."""

    fingerprint: str
    train: TuneSetProfile
    val: TuneSetProfile

    @classmethod
    def from_tunes(
        cls, train: list[str], val: list[str], fingerprint: str = "", progress: bool = False
    ) -> "CorpusProfile":
        return cls(
            fingerprint,
            profile_tunes(train, progress, "reading training tunes"),
            profile_tunes(val, progress, "reading validation tunes"),
        )


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/abcgen, or ~/.cache/abcgen."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "abcgen"


def corpus_profile(corpus: Corpus, cache: Path | None = None, progress: bool = False) -> CorpusProfile:
    """The profile of a loaded Corpus, read from the cache when its fingerprint is there.

    cache: the cache folder (default cache_dir()); a file that cannot be read is rebuilt.
    """
    path = (cache or cache_dir()) / f"corpus-{corpus.fingerprint}-v{CACHE_VERSION}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return CorpusProfile(
            data["fingerprint"], TuneSetProfile.from_json(data["train"]), TuneSetProfile.from_json(data["val"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    profile = CorpusProfile.from_tunes(corpus.train, corpus.val, corpus.fingerprint, progress)
    _write_cache(path, profile)
    return profile


def _write_cache(path: Path, profile: CorpusProfile) -> None:
    data = {
        "version": CACHE_VERSION,
        "fingerprint": profile.fingerprint,
        "train": profile.train.to_json(),
        "val": profile.val.to_json(),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(data, separators=(",", ":")))
    except OSError:
        pass  # a read-only cache only costs time on the next run


# ---------------------------------------------------------------- the report


def validity(profile: TuneSetProfile) -> dict:
    """Shares of tunes that parse, have notes, and pass the whole check."""
    count = profile.tunes or 1
    return {
        "tunes": profile.tunes,
        "parses": profile.readable / count,
        "has_notes": profile.has_notes / count,
        "valid": profile.valid / count,
        "failures": dict(profile.failures.most_common()),
        "examples": profile.examples,
    }


def statistics_rows(generated: TuneSetProfile, corpus: CorpusProfile) -> list[dict]:
    """One row per feature: generated vs training, and validation vs training as the level."""
    rows = []
    for name, title in FEATURES.items():
        train, gen, val = (p.features[name] for p in (corpus.train, generated, corpus.val))
        labels = ordered_labels(name, set(train) | set(gen) | set(val))
        rows.append(
            {
                "feature": name,
                "title": title,
                "overlap": overlap_area(gen, train),
                "kl": kl_divergence(train, gen),
                "val_overlap": overlap_area(val, train),
                "val_kl": kl_divergence(train, val),
                "labels": labels,
                "generated": _shares(gen, labels) if gen else {},
                "training": _shares(train, labels) if train else {},
                "validation": _shares(val, labels) if val else {},
            }
        )
    return rows


def compare(generated: list[str], corpus: CorpusProfile) -> dict:
    """Validity, musical statistics and originality of generated tunes against a corpus."""
    profile = profile_tunes(generated)
    index = TrainingIndex(corpus.train.sequences)
    return {
        "validity": validity(profile),
        "statistics": statistics_rows(profile, corpus),
        "originality": {
            "generated": originality(profile.sequences, index),
            "validation": originality(corpus.val.sequences, index),
        },
    }


def form_summary(tunes: list[str]) -> dict:
    """The form of some tunes: the shares whose repeats pair, whose sections all have 4, 8
    or 16 bars, that end on the tonic, that do all three; and the section lengths."""
    forms = [tune_form(tune) for tune in tunes]
    share = lambda flags: sum(flags) / len(forms) if forms else None  # noqa: E731
    lengths = Counter(str(n) if n is not None else "not whole" for form in forms for n in form.section_lengths)
    return {
        "tunes": len(forms),
        "repeats_paired": share(form.repeats_paired for form in forms),
        "sections_4_8_16": share(form.regular_sections for form in forms),
        "ends_on_tonic": share(form.ends_on_tonic for form in forms),
        "all_three": share(form.folk_form for form in forms),
        "section_lengths": dict(sorted(lengths.items(), key=lambda item: (_label_value(item[0]), item[0]))),
    }


def tool_acceptance(tunes: list[str]) -> dict:
    """The share of tunes that abc2midi, abcm2ps and music21 read without an error, where
    they are installed (abcgen.abctools); `missing` names those that are not."""
    available = abctools.available_tools()
    missing = [tool for tool in ("abc2midi", "abcm2ps") if tool not in available]
    tools = abctools.summarise(tunes)["tools"] if tunes else {}
    accepted = {tool: found["error_free"] / len(tunes) for tool, found in tools.items() if "error_free" in found}
    if "abcjs" in tools:
        accepted["abcjs (no warning)"] = tools["abcjs"]["warning_free"] / len(tunes)
    return {"accepted": accepted, "missing": missing}


def evaluate_tunes(generated: list[str], train: list[str], val: list[str]) -> dict:
    """compare() from plain lists of ABC tunes, without a model or a cache."""
    return compare(generated, CorpusProfile.from_tunes(train, val))


def evaluate_model(
    corpus_path: str | Path,
    model_path: str | Path | None = None,
    n: int = EVALUATION_TUNES,
    options: SamplingOptions | None = None,
    *,
    device: str = "cpu",
    cache: Path | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    **settings: Any,
) -> dict:
    """Sample n tunes (no check, no retries) and compare them with the corpus at corpus_path.

    options (or settings, as TuneModel.generate takes them) say how to sample: with fix_bars
    and keep_rhythm as `abcgen sample` does (see abcgen.sample); without them the model alone
    is measured, at a plain temperature.

    log, if given, is called with one line per stage. The report also holds the model's
    loss, bits per character and accuracy on the test split.
    """
    # Here, not at the top: the statistics alone (evaluate_tunes, bench/wellformed.py) need no torch.
    from abcgen.sample import load_model

    options = replace(options, **settings) if options is not None else SamplingOptions(**settings)
    options = replace(options, check=False)
    check_count(n)
    log = log or (lambda message: None)
    started = time.perf_counter()
    corpus = load_corpus(corpus_path)
    if not corpus.train:
        raise AbcgenError(f"{corpus_path}: the corpus has no training tunes to compare with")
    profile = corpus_profile(corpus, cache, progress)
    model = load_model(model_path, device=device, log=log)
    log(f"sampling {n} tunes at temperature {options.temperature}...")
    generated = model.generate(n, options)
    log("scoring the test split...")
    prediction, prediction_note = score_test_split(model, corpus.test)
    report = {
        "corpus": {
            "name": corpus.name,
            "fingerprint": corpus.fingerprint,
            "train": len(corpus.train),
            "val": len(corpus.val),
            "test": len(corpus.test),
        },
        "sampling": {
            "model": str(model_path or "shipped model"),
            "n": n,
            "temperature": options.temperature,
            "top_k": options.top_k,
            "seed": options.seed,
            "fix_bars": options.fix_bars,
            "keep_rhythm": options.keep_rhythm,
            "pitch_top_p": options.pitch_top_p,
            "structure": options.structure,
        },
        "prediction": prediction,
        "prediction_note": prediction_note,
        **compare(generated, profile),
        "form": {"generated": form_summary(generated), "validation": form_summary(corpus.val)},
        "tools": tool_acceptance(generated),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["tunes"] = generated
    return report


def score_test_split(model: TuneModel, tunes: list[str]) -> tuple[dict | None, str | None]:
    """The model's loss on the test tunes and a note on what was left out: (None, why)
    when none can be scored (no test tunes, or all hold characters the model never saw),
    so that the rest of the report still comes out."""
    if not tunes:
        return None, "the corpus has no test tunes"
    try:
        prediction = model.score(tunes)
    except AbcgenError:
        return None, (
            f"all {len(tunes)} test tunes hold characters the model never saw (a model trained on another corpus?)"
        )
    left_out = len(tunes) - prediction["tunes_scored"]
    note = (
        f"{left_out} of {len(tunes)} test tunes left out: they hold characters the model never saw"
        if left_out
        else None
    )
    return prediction, note


# ---------------------------------------------------------------- output


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def format_report(report: dict) -> str:
    """The report as a readable table."""
    lines = []
    corpus, sampling = report.get("corpus"), report.get("sampling")
    if corpus and sampling:
        bars = "".join(
            f" ({flag})"
            for key, flag in (("fix_bars", "--no-fix-bars"), ("keep_rhythm", "--plain-temperature"))
            if not sampling.get(key, True)
        )
        lines.append(
            f"{sampling['n']} tunes from {sampling['model']} at temperature "
            f"{sampling['temperature']}{bars}, against {corpus['name']} "
            f"({corpus['train']} training, {corpus['val']} validation, {corpus['test']} test tunes)"
        )
        lines.append("")
    prediction, note = report.get("prediction"), report.get("prediction_note")
    if prediction:
        lines.append(
            f"Prediction (test split)   {prediction['bpc']:.3f} bits/char, "
            f"{prediction['loss']:.3f} nats/char, accuracy {prediction['accuracy']:.1%}"
        )
    elif "prediction" in report:
        lines.append("Prediction (test split)   n/a")
    if note:
        lines.append(f"                          ({note})")
    lines += _validity_lines(report["validity"])
    lines += [""] + _statistics_lines(report["statistics"])
    lines += [""] + _originality_lines(report["originality"])
    if "form" in report:
        lines += [""] + _form_lines(report["form"])
    if "tools" in report:
        lines += [""] + _tool_lines(report["tools"])
    return "\n".join(lines) + "\n"


def _form_lines(form: dict) -> list[str]:
    generated, validation = form["generated"], form["validation"]
    lines = [f"Form                      {'generated':>10} {'validation':>11}"]
    for key, label in (
        ("repeats_paired", "repeats paired"),
        ("sections_4_8_16", "sections of 4/8/16 bars"),
        ("ends_on_tonic", "ends on the tonic"),
        ("all_three", "all three"),
    ):
        lines.append(f"  {label:<24}{_percent(generated[key]):>10} {_percent(validation[key]):>11}")
    common = list(generated["section_lengths"].items())[:8]
    lines.append("  section lengths (bars)  " + ", ".join(f"{bars}: {count}" for bars, count in common))
    return lines


def _tool_lines(tools: dict) -> list[str]:
    lines = ["ABC tools                 share of tunes read without an error"]
    lines += [f"  {tool:<24}{_percent(share)}" for tool, share in tools["accepted"].items()]
    if tools["missing"]:
        lines.append(f"  {', '.join(tools['missing'])} not installed (Debian: apt-get install abcmidi abcm2ps)")
    return lines


def _validity_lines(valid: dict) -> list[str]:
    lines = [
        f"Validity                  {_percent(valid['valid'])} valid of {valid['tunes']} "
        f"(parse {_percent(valid['parses'])}, have notes {_percent(valid['has_notes'])})"
    ]
    lines += [f"  {count:4d} x {kind}" for kind, count in valid["failures"].items()]
    return lines


def _statistics_lines(rows: list[dict]) -> list[str]:
    lines = ["Musical statistics        overlap  val level  gap      KL (nats)  val level", "(generated vs training)"]
    for row in rows:
        gap = None if row["overlap"] is None or row["val_overlap"] is None else row["overlap"] - row["val_overlap"]
        lines.append(
            f"  {row['title']:24s}{_number(row['overlap']):>7s}  {_number(row['val_overlap']):>9s}  "
            f"{'n/a' if gap is None else f'{gap:+.3f}':>6s}   {_number(row['kl']):>9s}  "
            f"{_number(row['val_kl']):>9s}"
        )
    return lines


def _originality_lines(original: dict) -> list[str]:
    gen, val = original["generated"], original["validation"]
    share = f"share_copying_{COPY_BARS}_bars"
    lines = [
        "Originality (vs training)         generated  validation",
        f"  tunes                           {gen['tunes']:>9d}  {val['tunes']:>10d}",
        f"  longest copied run, median      {_number(gen['median_copied_run'], 1):>9s}  "
        f"{_number(val['median_copied_run'], 1):>10s}  bars",
        f"  longest copied run, max         {_number(gen['max_copied_run'], 0):>9s}  "
        f"{_number(val['max_copied_run'], 0):>10s}  bars",
        f"  copy {COPY_BARS}+ bars of a training tune {_percent(gen[share]):>9s}  {_percent(val[share]):>10s}",
        f"  identical to a training tune    {_percent(gen['share_identical']):>9s}  "
        f"{_percent(val['share_identical']):>10s}",
    ]
    for n in gen["distinct_ngrams"]:
        lines.append(
            f"  distinct bar {n}-grams            {_percent(gen['distinct_ngrams'][n]):>9s}  "
            f"{_percent(val['distinct_ngrams'][n]):>10s}"
        )
    return lines


def write_json(report: dict, path: str | os.PathLike[str]) -> None:
    """The report as JSON, written atomically."""
    write_text_atomic(path, json.dumps(report, indent=2) + "\n")


def require_matplotlib() -> ModuleType:
    """matplotlib's pyplot with a file-only backend, or an error that says how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise AbcgenError("--plots needs matplotlib: pip install 'abcgen[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(report: dict, directory: str | os.PathLike[str]) -> list[Path]:
    """One small PNG per feature (generated against training, validation as dots), and one
    of the longest copied runs. Returns the paths written."""
    plt = require_matplotlib()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [_plot_feature(plt, row, directory) for row in report["statistics"] if row["labels"]]
    paths.append(_plot_copied_runs(plt, report["originality"], directory))
    return paths


def _save(plt: ModuleType, figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, dpi=72, format="png")
    plt.close(figure)
    write_bytes_atomic(path, png.getvalue())
    return path


def _plot_feature(plt: ModuleType, row: dict, directory: Path) -> Path:
    labels = row["labels"]
    figure, axes = plt.subplots(figsize=(max(4.0, 0.28 * len(labels) + 1.5), 2.8))
    positions = range(len(labels))
    width = 0.4
    axes.bar(
        [x - width / 2 for x in positions],
        [row["training"].get(x, 0) for x in labels],
        width,
        label="training",
        color="#9aa7b8",
    )
    axes.bar(
        [x + width / 2 for x in positions],
        [row["generated"].get(x, 0) for x in labels],
        width,
        label="generated",
        color="#d2691e",
    )
    if row["validation"]:
        axes.plot(positions, [row["validation"].get(x, 0) for x in labels], "k.", label="validation")
    axes.set_xticks(list(positions))
    crowded = len(labels) > 14 or max(map(len, labels)) > 4
    axes.set_xticklabels(labels, rotation=60 if crowded else 0, ha="right" if crowded else "center", fontsize=7)
    axes.set_ylabel("share")
    axes.set_title(
        f"{row['title']}: overlap {_number(row['overlap'], 2)} (validation {_number(row['val_overlap'], 2)})",
        fontsize=9,
    )
    axes.legend(fontsize=7, frameon=False)
    return _save(plt, figure, directory / f"{row['feature']}.png")


def _plot_copied_runs(plt: ModuleType, original: dict, directory: Path) -> Path:
    figure, axes = plt.subplots(figsize=(4.5, 2.8))
    for name, color in (("generated", "#d2691e"), ("validation", "#9aa7b8")):
        runs = original[name]["longest_copied_run"]
        if runs:
            counts = Counter(runs)
            top = max(counts)
            axes.plot(
                range(top + 1),
                [counts.get(k, 0) / len(runs) for k in range(top + 1)],
                "o-",
                color=color,
                label=name,
                markersize=3,
            )
    axes.axvline(COPY_BARS - 0.5, color="grey", linestyle=":", linewidth=1)
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set_title(f"bars copied from a training tune ({COPY_BARS}+ counts as copying)", fontsize=9)
    axes.set_xlabel("longest run of bars also in a training tune")
    axes.set_ylabel("share of tunes")
    axes.legend(fontsize=7, frameon=False)
    return _save(plt, figure, directory / "copied_runs.png")
