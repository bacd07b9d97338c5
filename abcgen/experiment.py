"""The architecture experiment: train several models for the same wall-clock budget on the
same splits, judge each with `abcgen evaluate`'s measures, and write one table.

    abcgen experiment corpora/nottingham --archs lstm,gru,transformer --budget 300 --seeds 3

Each architecture is a name from abcgen.model.ARCHITECTURES, optionally followed by model
options: `lstm:layers=3`, `bilstm-window:window=8:hidden=64`, `transformer:context=128`.

With a corpus mix, every architecture is trained twice: on the corpus's training split, and
on that split plus every tune of another collection (music21's Ryan's Mammoth Collection or
O'Neill's 1850, or any ABC files). Both are judged on the corpus's own validation and test
tunes and against its own training tunes' musical statistics; copying is checked against
everything the model was trained on. Tunes are sampled at a plain temperature without the sampler's
bar fixing, so that the table measures each model alone.

The table goes to OUT/results.md and OUT/results.json (rewritten after every run, so an
interrupted experiment keeps what it finished); each run's model is in OUT/<corpus>/<arch>/seed-<s>.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from abcgen.checkpoint import load_checkpoint
from abcgen.corpus import Corpus, load_corpus
from abcgen.errors import AbcgenError
from abcgen.evaluate import (
    COPY_BARS,
    TrainingIndex,
    TuneSetProfile,
    corpus_profile,
    originality,
    profile_tunes,
    statistics_rows,
    validity,
)
from abcgen.files import write_text_atomic
from abcgen.model import ARCHITECTURES, check_config
from abcgen.model_config import ModelConfig
from abcgen.options import EVALUATION_TUNES, OptionError, SamplingOptions, check_count, check_temperature
from abcgen.sample import TuneModel
from abcgen.scoring import LN2, known_tunes
from abcgen.train import TrainConfig, TrainingInterrupted, train
from abcgen.vocab import Vocab

DEFAULT_ARCHS = ",".join(ARCHITECTURES)  # every architecture in the registry
# (key in a run's result, column title, format): the table, left to right.
COLUMNS = [
    ("parameters", "params", "int"),
    ("chars_per_s", "chars/s", "int"),
    ("epochs", "epochs", ".2f"),
    ("val_bpc", "val bpc", ".3f"),
    ("val_acc", "val acc", "%"),
    ("test_bpc", "test bpc", ".3f"),
    ("test_acc", "test acc", "%"),
    ("validity", "valid", "%"),
    ("stat_overlap", "stat overlap", ".3f"),
    ("copying", "copies 4+ bars", "%"),
    ("identical", "identical", "%"),
]


# ---------------------------------------------------------------- what to train


@dataclass
class ArchSpec:
    label: str  # as the user wrote it, e.g. "lstm:layers=3"
    options: dict  # the model_config that train() takes

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9.=-]+", "_", self.label)


def parse_archs(text: str) -> list[ArchSpec]:
    """`lstm,gru:hidden=64` -> specs, every name and option checked before any training."""
    defaults = ModelConfig(vocab_size=1)
    specs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, *pairs = item.split(":")
        options: dict[str, object] = {"arch": name}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or key in ("arch", "vocab_size") or not hasattr(defaults, key):
                raise AbcgenError(
                    f"--archs: {pair!r} in {item!r} is not a model option such as "
                    "hidden=64, layers=3, dropout=0.2, heads=4, window=8, kernel=5, context=128"
                )
            try:
                options[key] = type(getattr(defaults, key))(value)
            except ValueError:
                raise AbcgenError(f"--archs: {key} must be a number in {item!r}") from None
        check_config(replace(defaults, **options))  # type: ignore[arg-type]  # each value has its field's type
        specs.append(ArchSpec(item, options))
    if not specs:
        raise AbcgenError("--archs names no architecture; e.g. --archs lstm,gru")
    if len({spec.label for spec in specs}) < len(specs):
        raise AbcgenError("--archs names the same architecture twice")
    return specs


# ---------------------------------------------------------------- the corpora


def judged_tunes(corpus: Corpus) -> Corpus:
    """The corpus with validation and test tunes limited to characters its training split
    uses, so that every model (whose vocabulary holds at least those) is scored on the
    very same tunes."""
    vocab = Vocab.from_text(corpus.text("train"))
    return replace(corpus, val=known_tunes(corpus.val, vocab), test=known_tunes(corpus.test, vocab))


def mixed_corpus(base: Corpus, extra: Corpus) -> Corpus:
    """base's splits with every tune of extra added to training (minus exact copies of
    base's validation and test tunes, which would leak them)."""
    held_out = set(base.val) | set(base.test)
    added = [tune for tune in extra.tunes if tune not in held_out]
    return replace(base, name=f"{base.name}+{extra.name}", train=base.train + added, files=base.files + extra.files)


# ---------------------------------------------------------------- judging


class Judge:
    """Evaluate's measures for generated tunes against one corpus's training tunes."""

    def __init__(self, corpus: Corpus, cache: Path | None = None, extra: Corpus | None = None):
        self.profile = corpus_profile(corpus, cache)
        self.index = TrainingIndex(self.profile.train.sequences)
        self.mixed_index = None
        if extra is not None:
            extra_profile = corpus_profile(extra, cache)
            sequences = (
                self.profile.train.sequences
                + extra_profile.train.sequences
                + extra_profile.val.sequences
                + profile_tunes(extra.test).sequences
            )
            self.mixed_index = TrainingIndex(sequences)

    def levels(self) -> dict:
        """What the validation tunes reach on the same measures: a perfect model's level."""
        copied = originality(self.profile.val.sequences, self.index)
        return {
            "stat_overlap": mean_overlap([row["val_overlap"] for row in self.rows(self.profile.val)]),
            "copying": copied[f"share_copying_{COPY_BARS}_bars"],
            "identical": copied["share_identical"],
        }

    def rows(self, profile: TuneSetProfile) -> list[dict]:
        return statistics_rows(profile, self.profile)

    def measures(self, generated: list[str], mixed: bool) -> dict:
        profile = profile_tunes(generated)
        index = self.mixed_index if mixed else self.index
        assert index is not None, "a mixed run needs the extra corpus's index"
        copied = originality(profile.sequences, index)
        return {
            "validity": validity(profile)["valid"],
            "stat_overlap": mean_overlap([row["overlap"] for row in self.rows(profile)]),
            "copying": copied[f"share_copying_{COPY_BARS}_bars"],
            "identical": copied["share_identical"],
        }


def mean_overlap(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


# ---------------------------------------------------------------- one run


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_and_judge(
    corpus: Corpus,
    judge: Judge,
    mixed: bool,
    spec: ArchSpec,
    seed: int,
    budget: float,
    out: Path,
    n: int,
    temperature: float,
    train_options: dict,
) -> dict:
    config = TrainConfig(**{**train_options, "max_time": budget, "epochs": None, "seed": seed})
    clock = Stopwatch()
    result = train(corpus, out, spec.options, config, force=True, progress=False)
    clock.lap("train")
    model = TuneModel(load_checkpoint(result.best_path))
    history = read_metrics(out / "metrics.jsonl")
    test = model.score(corpus.test) if corpus.test else None
    clock.lap("score")
    # The model's own validity: the sampler's bar fixing would hide the differences.
    generated = model.generate(n=n, temperature=temperature, seed=seed, check=False, fix_bars=False, keep_rhythm=False)
    clock.lap("sample")
    measures = judge.measures(generated, mixed)
    clock.lap("judge")
    return {
        "corpus": corpus.name,
        "arch": spec.label,
        "seed": seed,
        "parameters": model.model.num_parameters(),
        "chars_per_s": statistics.fmean(m["chars_per_s"] for m in history),
        "epochs": history[-1]["epoch"],
        "steps": history[-1]["step"],
        "train_seconds": round(result.elapsed_s, 1),
        "val_bpc": result.best_val_loss / LN2,
        "val_acc": result.best_val_acc,
        "test_bpc": test["bpc"] if test else None,
        "test_acc": test["accuracy"] if test else None,
        "test_tunes": test["tunes_scored"] if test else 0,
        **measures,
        "model": str(result.best_path),
        "stage_seconds": clock.laps,
    }


class Stopwatch:
    """Wall-clock seconds of the stages of a run, in order."""

    def __init__(self):
        self.laps, self.last = {}, time.perf_counter()

    def lap(self, stage: str) -> float:
        now = time.perf_counter()
        self.laps[stage], self.last = round(now - self.last, 1), now
        return self.laps[stage]


def format_stages(laps: dict) -> str:
    return ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in laps.items())


# ---------------------------------------------------------------- the experiment


def run_experiment(
    corpus_path: str | Path,
    archs: str = DEFAULT_ARCHS,
    budget: float = 300,
    seeds: int = 1,
    out_dir: str | Path = "runs/experiment",
    corpus_mix: str | None = None,
    n: int = EVALUATION_TUNES,
    temperature: float = SamplingOptions.temperature,
    train_options: dict | None = None,
    cache: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train and judge every architecture (x seed, x corpus variant); returns the report
    that results.json holds, and writes results.md beside it after every run.

    train_options: TrainConfig fields for every run (batch_size, seq_len, lr, device, ...).
    """
    say = log or (lambda message: print(message, file=sys.stderr))
    specs = parse_archs(archs)
    problems = [(not budget > 0, "budget", "must be greater than 0"), (seeds < 1, "seeds", "must be at least 1")]
    for bad, option, problem in problems:
        if bad:
            raise OptionError(option, problem)
    check_count(n)
    check_temperature(temperature)
    out_dir = Path(out_dir)
    original = load_corpus(corpus_path)
    base = judged_tunes(original)
    if not base.train:
        raise AbcgenError(f"{corpus_path}: the corpus has no training tunes")
    extra = None
    if corpus_mix:  # a path, or a name: see `abcgen corpus --list`
        try:
            extra = load_corpus(corpus_mix)
        except AbcgenError as error:
            raise AbcgenError(f"--corpus-mix: {error}") from None
    variants = [(base, False)] + ([(mixed_corpus(base, extra), True)] if extra else [])
    say(f"reading the statistics of {base.name}" + (f" and {extra.name}" if extra else "") + "...")
    clock = Stopwatch()
    judge = Judge(original, cache, extra)
    say(f"    read in {clock.lap('statistics'):.1f} s")
    report: dict = {
        "settings": {
            "corpus": str(corpus_path),
            "archs": [s.label for s in specs],
            "budget_s": budget,
            "seeds": seeds,
            "corpus_mix": corpus_mix,
            "n": n,
            "temperature": temperature,
            "train_options": train_options or {},
        },
        "corpora": {
            corpus.name: {
                "train": len(corpus.train),
                "val": len(corpus.val),
                "test": len(corpus.test),
                "fingerprint": corpus.fingerprint,
            }
            for corpus, _ in variants
        },
        "levels": judge.levels(),
        "runs": [],
        "summary": [],
    }
    jobs = [(corpus, mixed, spec, seed) for corpus, mixed in variants for spec in specs for seed in range(seeds)]
    for number, (corpus, mixed, spec, seed) in enumerate(jobs, 1):
        say(
            f"[{number}/{len(jobs)}] {spec.label} on {corpus.name}, seed {seed}: "
            f"training for {budget:g} s, then sampling {n} tunes..."
        )
        out = out_dir / corpus.name / spec.folder / f"seed-{seed}"
        try:
            run = train_and_judge(corpus, judge, mixed, spec, seed, budget, out, n, temperature, train_options or {})
        except TrainingInterrupted:
            say(f"interrupted; the table of the {number - 1} finished run(s) is in {out_dir}")
            raise
        say(f"    {format_run(run)}")
        say(f"    times: {format_stages(run['stage_seconds'])}")
        report["runs"].append(run)
        report["summary"] = summarise(report["runs"])
        write_report(report, out_dir)
    clock.lap("runs")
    report["stage_seconds"] = {
        "statistics": clock.laps["statistics"],
        **{
            stage: round(sum(run["stage_seconds"][stage] for run in report["runs"]), 1)
            for stage in ("train", "score", "sample", "judge")
        },
        "total": round(sum(clock.laps.values()), 1),
    }
    write_report(report, out_dir)
    say(f"all {len(jobs)} run(s): {format_stages(report['stage_seconds'])}")
    return report


def format_run(run: dict) -> str:
    return "  ".join(f"{title} {format_value(run[key], kind)}" for key, title, kind in COLUMNS)


# ---------------------------------------------------------------- the table


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (corpus, arch): the mean of each column and, over 2+ seeds, its
    standard deviation."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["corpus"], run["arch"]), []).append(run)
    rows = []
    for (corpus, arch), group in groups.items():
        row = {"corpus": corpus, "arch": arch, "seeds": len(group)}
        for key, _, _ in COLUMNS:
            values = [run[key] for run in group if run[key] is not None]
            row[key] = statistics.fmean(values) if values else None
            row[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(row)
    return rows


def format_value(value: float | None, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if kind == "int":
        return f"{value:,.0f}"
    if kind == "%":
        return f"{value:.1%}"
    return format(value, kind)


def format_cell(row: dict, key: str, kind: str) -> str:
    cell = format_value(row[key], kind)
    spread = row.get(f"{key}_sd")
    if spread:  # None for one seed; 0 for columns that seeds do not change (params)
        cell += f" ± {format_value(spread, kind)}"
    return cell


def markdown_table(report: dict) -> str:
    titles = ["corpus", "architecture"] + [title for _, title, _ in COLUMNS]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * 2 + "---:|" * len(COLUMNS)]
    for row in report["summary"]:
        cells = [row["corpus"], f"`{row['arch']}`"] + [format_cell(row, key, kind) for key, _, kind in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(report: dict) -> str:
    settings, levels = report["settings"], report["levels"]
    corpora = "; ".join(
        f"{name}: {c['train']} training, {c['val']} validation, {c['test']} test tunes"
        for name, c in report["corpora"].items()
    )
    seeds = settings["seeds"]
    return "\n".join(
        [
            "# abcgen experiment",
            "",
            f"{settings['budget_s']:g} s of training per run on {corpora}. "
            f"{settings['n']} tunes sampled per run at temperature {settings['temperature']:g}, "
            f"without the ABC check. "
            + (f"Mean ± standard deviation over {seeds} seeds." if seeds > 1 else "One seed."),
            "",
            markdown_table(report),
            "- val/test bpc and acc: bits per character and next-character accuracy on the validation "
            "(best checkpoint) and test tunes of the first corpus, the same tunes for every model.",
            "- valid: share of sampled tunes that pass the ABC check (parse, notes, bar lengths).",
            "- stat overlap: mean overlap area of the musical-statistics histograms (pitch class, range, "
            "durations, intervals, notes per bar, length, meter, key), sampled tunes against the training "
            f"tunes of the first corpus; 1 is identical. Validation tunes reach {format_value(levels['stat_overlap'], '.3f')}.",
            "- copies 4+ bars / identical: share of sampled tunes that share 4 or more consecutive bars "
            "(transposition-invariant) with a tune the model was trained on / that equal one. "
            f"Validation tunes: {format_value(levels['copying'], '%')} / {format_value(levels['identical'], '%')}.",
            "- chars/s: training throughput from metrics.jsonl; epochs: how far the budget got.",
            *(
                [f"- wall-clock time of the whole experiment: {format_stages(report['stage_seconds'])}."]
                if "stage_seconds" in report
                else []
            ),
            "",
        ]
    )


def write_report(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "results.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out_dir / "results.md", markdown_report(report))
