"""Generating tunes: batched sampling, header priming, tune endings, and the ABC check with
retries. This module is the decoding loop; it calls on three others as each character is
written: abcgen.shaping (the next-character probabilities), abcgen.watch (where bars begin,
and whether a bar or header value is one to keep) and abcgen.structure (the form a tune is
written to). abcgen.prime reads a --prime.

Each tune is written as a sequence of segments: fixed text that is fed to the model
as it is (the X: line, a title or meter the user asked for, a --prime) and free text
that the model writes (a header value up to its line end, then the tune body up to
the blank line that ends a tune in the training text). All n tunes advance together,
one character per step, in one batch.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from abcgen.abc import check_tune, failure_kind, parse_unit
from abcgen.corpus import normalise_tune, renumber_tune, to_unit_length
from abcgen.errors import AbcgenError
from abcgen.form import FormTracker, input_ids
from abcgen.inference import Exported, Steps, TorchSteps, open_export
from abcgen.options import SAMPLING_DEVICE, OptionError, SamplingOptions, check_count
from abcgen.prime import check_prime_structure, prime_closes_parts, read_prime
from abcgen.shaping import draw, next_char_probs, pitch_mask
from abcgen.structure import BODY_CHARACTERS, BodyRules, choose_structure
from abcgen.watch import TUNE_END, BarWatch, Segment, Snapshot, watch_bars, watch_header_value

if TYPE_CHECKING:
    from abcgen.checkpoint import Checkpoint
    from abcgen.model import CharModel
    from abcgen.model_config import ModelConfig
    from abcgen.vocab import Vocab

PRETRAINED = Path(__file__).parent / "pretrained" / "nottingham.pt"
Plan = list[tuple[Segment, str | None]]  # the segments of a tune, with a FIXED one's text


def default_model_path() -> Path:
    return Path(os.environ.get("ABCGEN_MODEL") or PRETRAINED)


def load_model(
    path: str | Path | None = None, device: str = SAMPLING_DEVICE, log: Callable[[str], None] | None = None
) -> TuneModel:
    """The model at path, or ABCGEN_MODEL, or the shipped Nottingham model; log, if given,
    hears a warning about an export beside it that cannot be used (see abcgen.inference)."""
    path = Path(path or default_model_path())
    if path.suffix == ".onnx":
        raise AbcgenError(
            f"{path} is an export; give its checkpoint ({path.with_suffix('.pt').name}): the export beside it is used"
        )
    exported = open_export(path, log) if device == "cpu" else None
    model = TuneModel(exported=exported, path=path, device=device)
    if exported is None:
        model.checkpoint  # read now: a missing or damaged file is reported at once
    return model


def in_unit_length(tune: str, length: str | None) -> str:
    """A finished tune (written in L:1/8) rewritten in another unit note length."""
    if not length:
        return tune
    head, sep, rest = tune.partition("\nK:")
    key_line, _, body = rest.partition("\n")
    header = {"L": ["1/8"]}
    lines = to_unit_length(header, body.split("\n"), parse_unit(length))
    head = re.sub(r"^L:.*$", f"L:{header['L'][0]}", head, flags=re.M)
    return f"{head}{sep}{key_line}\n" + "\n".join(lines)


@dataclass
class Draft:
    """One tune being written: what is still to be forced, and what is done."""

    plan: Plan  # the segments still to write
    text: str = ""
    forced: str = ""
    mode: Segment = Segment.FIXED
    done: bool = False
    cut: bool = False
    bars: "BarWatch | None" = None  # follows the body, with fix_bars
    line_start: "Snapshot | None" = None  # the model before a header value, with fix_bars
    line_tries: int = 0
    form: FormTracker | None = None  # where the tune stands, for a model that reads form classes
    form_class: int = 0  # of the text so far
    rules: BodyRules | None = None  # the structure the body is written to (see abcgen.structure)
    closing: bool = False  # the rules are writing a part's closing bar line

    def next_segment(self) -> None:
        if not self.plan:
            self.done = True
            return
        self.mode, value = self.plan.pop(0)
        if self.mode is Segment.FIXED:
            self.forced = value or ""  # a FIXED segment always has its text
            if not value:
                self.next_segment()

    def feed(self, sampled: str, max_chars: int) -> str:
        """The character this draft takes this step (forced or sampled)."""
        if self.forced:
            ch, self.forced = self.forced[0], self.forced[1:]
        else:
            ch = sampled
        self.text += ch
        if self.form is not None:
            self.form_class = self.form.feed(self.text)
        if self.mode is Segment.FIXED and not self.forced:
            self.next_segment()
        elif self.mode is Segment.LINE and ch == "\n":
            self.next_segment()
        elif self.mode is Segment.BODY and self.text.endswith(TUNE_END):
            self.text = self.text[: -len(TUNE_END)]
            self.done = True
        if not self.done and len(self.text) >= max_chars:
            self.done = self.cut = True
        return ch

    def reopen_line(self, length: int) -> None:
        """Write the header value that has just ended again, from text[:length]."""
        self.plan.insert(0, (self.mode, self.forced if self.mode is Segment.FIXED else None))
        self.mode, self.forced, self.text = Segment.LINE, "", self.text[:length]


@dataclass
class SamplingRun:
    """One generate() call's settings as the decoding loop reads them (see SamplingOptions)."""

    temperature: float
    top_k: int | None
    pitch_top_p: float
    max_chars: int
    fix_bars: bool
    keep_rhythm: bool
    rng: np.random.Generator
    structure: str | None = None  # a form such as AABB, "auto" or None (see abcgen.structure)
    # called with the texts written so far after each step (abcgen serve)
    progress: Callable[[list[str]], None] | None = None
    deadline: float | None = None  # time.monotonic() past which tunes are cut where they stand

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


def time_limit(n: int) -> float:
    """The default wall-clock bound of a generate() call, in seconds: the shipped model writes
    100 tunes in about 12 s on a 2-core machine; a model that never ends a bar or a tune
    (one trained for seconds) would otherwise rewind and retry for minutes."""
    return 30.0 + 2.0 * n


def header_plan(
    title: str | None = None,
    meter: str | None = None,
    length: str | None = None,
    key: str | None = None,
    prime: str | None = None,
) -> Plan:
    """Segments that write X:, T:, M:, L:, K: in order, then the body."""
    if prime and prime.lstrip().startswith("X:"):
        return [(Segment.FIXED, prime), (Segment.BODY, None)]
    plan: Plan = [(Segment.FIXED, "X:1\n")]
    for name, value in (("T", title), ("M", meter), ("L", length), ("K", key)):
        if value:
            plan.append((Segment.FIXED, f"{name}:{value}\n"))
        else:
            plan += [(Segment.FIXED, f"{name}:"), (Segment.LINE, None)]
    if prime:
        plan.append((Segment.FIXED, prime))
    plan.append((Segment.BODY, None))
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
    text = close_cut_tune(text) if cut else text.strip()
    tune, _ = normalise_tune(text)
    tune = tune or text
    return renumber_tune(tune, number)


class TuneModel:
    """A trained model ready to write tunes: `abcgen.load_model().generate(n=4)`.

    Made from a checkpoint in memory, or from the path of one (read when first needed) and
    its ONNX export (abcgen.inference), which then writes the tunes without torch: on the
    CPU, the shipped model's start. Scoring and .model always use the torch checkpoint."""

    def __init__(
        self,
        checkpoint: Checkpoint | None = None,
        *,
        exported: Exported | None = None,
        path: Path | None = None,
        device: str = SAMPLING_DEVICE,
    ):
        if checkpoint is not None:
            self.checkpoint = checkpoint
        self.exported, self.path, self.device = exported, path, device
        self.warnings: list[str] = []  # the last generate() call's (a server's model lives long)
        self.masks: dict = {}  # see mask_row

    @functools.cached_property
    def checkpoint(self) -> Checkpoint:
        from abcgen.checkpoint import load_checkpoint  # torch: only when the torch model is needed
        from abcgen.device import pick_device

        assert self.path is not None  # a model made without a path is given its checkpoint
        return load_checkpoint(self.path, device=pick_device(self.device))

    @property
    def model(self) -> CharModel:
        return self.checkpoint.model

    @property
    def config(self) -> ModelConfig:
        return self.exported.config if self.exported else self.checkpoint.config

    @property
    def vocab(self) -> Vocab:
        return self.exported.vocab if self.exported else self.checkpoint.vocab

    @property
    def meta(self) -> dict:
        return self.exported.meta if self.exported else self.checkpoint.meta

    @functools.cached_property
    def steps(self) -> Steps:
        return self.exported.steps if self.exported else TorchSteps(self.model)

    @functools.cached_property
    def pitches(self) -> np.ndarray:
        return pitch_mask(self.vocab.chars)

    def generate(
        self,
        n: int = 1,
        options: SamplingOptions | None = None,
        *,
        log: Callable[[str], None] | None = None,
        progress: Callable[[list[str]], None] | None = None,
        **settings,
    ) -> list[str]:
        """Write n tunes as ABC text, as options say (see SamplingOptions), or as settings say:
        `generate(n=4, temperature=0.9)` is `generate(4, SamplingOptions(temperature=0.9))`,
        and settings given beside options change those.

        log, if given, is called with one line about tunes written again and warnings.
        progress: called after every character with the list of the texts being written (a
        whole-tune retry starts a new list); an exception it raises stops the generation.
        """
        options = replace(options, **settings) if options is not None else SamplingOptions(**settings)
        self.warnings = []
        check_count(n)
        seconds = options.max_seconds if options.max_seconds is not None else time_limit(n)
        meter, key, title, length = options.meter, options.key, options.title, options.length
        prime = read_prime(options.prime)
        if prime and prime.lstrip().startswith("X:") and any((meter, key, title, length)):
            raise OptionError(
                "prime", "starts with its own header (X:...); put the meter, key, title or length in it instead"
            )
        # The model has only seen L:1/8 (the corpus is normalised to it): it writes in 1/8,
        # and the finished tune is rewritten in the unit length asked for.
        plan = header_plan(title, meter, length and "1/8", key, prime)
        # A title may use letters the model never saw (they are fed to it as spaces);
        # anything else it is asked to continue from must be in its vocabulary.
        self.vocab.encode("".join(v for v in (prime, meter, key) if v))
        self.warn_unseen(meter, key, log)
        rng = np.random.default_rng(options.seed)
        structure = options.structure if options.fix_bars and options.structure != "none" else None
        run = SamplingRun(
            options.temperature,
            options.top_k,
            options.pitch_top_p,
            options.max_chars,
            options.fix_bars,
            options.keep_rhythm,
            rng,
            structure,
            progress,
            time.monotonic() + seconds,
        )
        check_prime_structure(prime, run.structure)
        if run.structure and prime_closes_parts(prime):
            run.structure = None
            self.warnings.append("the prime writes its own repeat or final bar lines: no structure rules")
            if log:
                log(f"Warning: {self.warnings[-1]}")
        tunes = self.sample_batch(n, plan, run)
        if options.check:
            tunes = self.regenerate_failures(tunes, plan, run, options.retries, log)
        if run.out_of_time():
            self.warnings.append(
                f"stopped at the time limit of {seconds:g} s (--max-seconds); the tunes are cut where they stood"
            )
            if log:
                log(f"Warning: {self.warnings[-1]}")
        return [in_unit_length(finish_tune(text, cut, i), length) for i, (text, cut) in enumerate(tunes, 1)]

    def warn_unseen(self, meter: str | None, key: str | None, log: Callable[[str], None] | None = None) -> None:
        seen = self.meta
        for name, value, known in (("meter", meter, seen.get("meters")), ("key", key, seen.get("keys"))):
            if value and known and value not in known:
                self.warnings.append(f"the model has never seen the {name} {value}; expect odd tunes")
                if log:
                    log(f"Warning: {self.warnings[-1]}")

    def regenerate_failures(
        self,
        tunes: list[tuple[str, bool]],
        plan: Plan,
        options: SamplingRun,
        retries: int,
        log: Callable[[str], None] | None,
    ) -> list[tuple[str, bool]]:
        pending = list(range(len(tunes)))
        failures: Counter[str] = Counter()
        for attempt in range(retries + 1):
            results = {i: check_tune(finish_tune(*tunes[i], number=1)) for i in pending}
            pending = [i for i in pending if not results[i].ok]
            failures.update(failure_kind(results[i].reason or "failed", after_count=True) for i in pending)
            if not pending or attempt == retries or options.out_of_time():
                break
            fresh = self.sample_batch(len(pending), plan, options)
            for i, tune in zip(pending, fresh):
                tunes[i] = tune
        if log and failures:
            kinds = ", ".join(f"{count} {kind}" for kind, count in failures.most_common())
            regenerated = sum(failures.values()) - (len(pending) if pending else 0)
            log(f"regenerated {regenerated} tune(s) that failed the ABC check ({kinds})")
            if pending:
                log(
                    f"{len(pending)} tune(s) still fail the ABC check after {retries} "
                    "retries; they are kept (use --retries to try harder)"
                )
        return tunes

    def sample_batch(self, n: int, plan: Plan, options: SamplingRun) -> list[tuple[str, bool]]:
        """Sample n tunes side by side; returns (text, cut at max_chars) pairs."""
        with self.steps.running():
            return self._sample_batch(n, plan, options)

    def _sample_batch(self, n: int, plan: Plan, options: SamplingRun) -> list[tuple[str, bool]]:
        steps, vocab, config = self.steps, self.vocab, self.config
        drafts = [Draft(plan=list(plan), form=FormTracker(config.form, config.form_count)) for _ in range(n)]
        for draft in drafts:
            draft.next_segment()
        active = list(range(n))
        fallback = vocab.index.get(" ", 0)
        # The training text separates tunes by a blank line: start as if after one.
        logits, state = steps.start(input_ids(TUNE_END, vocab, config.form, config.form_count), n)
        outside = np.array([ch not in BODY_CHARACTERS for ch in vocab.chars])
        while active:
            if options.out_of_time():
                for i in active:
                    drafts[i].done = drafts[i].cut = True
                break
            for i in active:
                draft = drafts[i]
                if draft.mode is Segment.BODY and draft.rules is None and options.structure and not draft.bars:
                    draft.rules = self.body_rules(draft, options)
            logits = self.mask_forbidden(logits, [drafts[i] for i in active], outside)
            probs = self.next_probs(logits, [drafts[i] for i in active], options)
            sampled = draw(probs, options.rng).tolist()
            chars, rewinds = [], {}
            for row, (i, s) in enumerate(zip(active, sampled)):
                draft = drafts[i]
                mode, before = draft.mode, len(draft.text)  # forced text is never rewritten
                chars.append(draft.feed(vocab.chars[s], options.max_chars))
                if options.fix_bars and mode in (Segment.BODY, Segment.LINE):

                    def snapshot(row: int = row, before: int = before) -> Snapshot:
                        return Snapshot(before, steps.select(state, [row]), logits[row].copy())

                    if mode is Segment.BODY:
                        target = watch_bars(draft, chars[-1], snapshot)
                        chars[-1] = draft.text[-1] if draft.text and target is None else chars[-1]
                    else:
                        target = watch_header_value(draft, snapshot, self.meta)
                    if target is not None:
                        rewinds[i] = target
            if options.progress is not None:
                options.progress([s.text for s in drafts])
            keep = [row for row, i in enumerate(active) if not drafts[i].done]
            if not keep:
                break
            if len(keep) < len(active):
                state = steps.select(state, keep)
                active = [active[row] for row in keep]
                chars = [chars[row] for row in keep]
            ids = np.array(
                [vocab.index.get(c, fallback) + len(vocab) * drafts[i].form_class for c, i in zip(chars, active)],
                dtype=np.int64,
            )
            logits, state = steps.step(ids, state)
            if rewinds:
                rows = {row: rewinds[i] for row, i in enumerate(active) if i in rewinds}
                state = replace_rows(steps, state, {row: t.state for row, t in rows.items()}, len(active))
                for row, target in rows.items():
                    logits[row] = target.logits
        return [(s.text, s.cut) for s in drafts]

    def next_probs(self, logits: np.ndarray, drafts: list[Draft], options: SamplingRun) -> np.ndarray:
        """Next-character probabilities: with keep_rhythm, pitch-tempered in tune bodies
        (header values keep the plain temperature)."""
        body = np.array([options.keep_rhythm and s.mode is Segment.BODY for s in drafts])
        if body.all():
            return next_char_probs(logits, options.temperature, options.top_k, self.pitches, options.pitch_top_p)
        probs = next_char_probs(logits, options.temperature, options.top_k)
        if body.any():
            probs[body] = next_char_probs(
                logits[body], options.temperature, options.top_k, self.pitches, options.pitch_top_p
            )
        return probs

    def body_rules(self, draft: Draft, options: SamplingRun) -> BodyRules | None:
        """The structure rules for a tune whose header is written (None under a free meter)."""
        head_end = draft.text.find("\n", draft.text.find("\nK:") + 1) + 1
        head = draft.text[:head_end] if head_end > 0 else draft.text
        found = re.search(r"^M:(.*)$", head, re.M)
        meter = found[1].strip() if found else "none"
        if meter.lower() in ("none", ""):
            return None
        structure = choose_structure(options.structure, meter, self.meta.get("forms", {}), options.rng)
        if structure is None:
            return None
        rules = BodyRules(structure, head)
        rules.start(len(head))
        rules.replay(draft.text)
        return rules

    def mask_forbidden(self, logits: np.ndarray, drafts: list[Draft], outside: np.ndarray) -> np.ndarray:
        """Logits with the characters the structure rules forbid set to -inf."""
        rows = [
            (row, s.rules)
            for row, s in enumerate(drafts)
            if s.rules is not None and not s.forced and s.mode is Segment.BODY
        ]
        if not rows:
            return logits
        mask = np.zeros(logits.shape, dtype=bool)
        mask[[row for row, _ in rows]] = [self.mask_row(rules, outside) for _, rules in rows]
        return np.where(mask, -np.inf, logits)

    def mask_row(self, rules: BodyRules, outside: np.ndarray) -> np.ndarray:
        """The characters one tune may not write next, as a vocabulary mask; the few
        distinct masks are built once (a mask per step and tune cost 40% of sampling)."""
        key = (rules.lexer.in_quote, frozenset(rules.forbidden()))
        row = self.masks.get(key)
        if row is None:
            row = outside.copy() if not key[0] else np.zeros_like(outside)
            row[[self.vocab.index[ch] for ch in key[1] if ch in self.vocab.index]] = True
            if row.all():  # never leave nothing to choose
                row[:] = False
            row = self.masks[key] = row
        return row

    def score(self, tunes: list[str]) -> dict:
        """Next-character loss (nats), bits per character and accuracy on some tunes."""
        # here, not at the top: scoring runs the torch model over whole texts
        from abcgen.device import TrainingThreads
        from abcgen.form import encode_text
        from abcgen.scoring import known_tunes, score_text

        usable = known_tunes(tunes, self.vocab)
        if not usable:
            raise AbcgenError("none of these tunes can be scored: all have unknown characters")
        inputs, ids = encode_text(
            "".join(t + TUNE_END for t in usable), self.vocab, self.model.config.form, self.model.config.form_count
        )
        with TrainingThreads():  # threads for the free cores: torch's count collapses on a busy CPU
            result = score_text(self.model, ids, inputs)
        return {"loss": result["loss"], "bpc": result["bpc"], "accuracy": result["acc"], "tunes_scored": len(usable)}


def replace_rows(steps: Steps, state: Any, replacements: dict[int, Any], batch: int) -> Any:
    """The batch state with some rows replaced by saved one-row states."""
    pieces, start = [], 0
    for row in sorted(replacements) + [batch]:
        if row > start:
            pieces.append(steps.select(state, list(range(start, row))))
        if row < batch:
            pieces.append(replacements[row])
        start = row + 1
    return steps.merge(pieces)
