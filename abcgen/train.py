"""Training: stateful truncated back-propagation through time over parallel streams.

The training text (every training tune, separated by blank lines) is cut into
`batch_size` contiguous streams that are read side by side, `seq_len` characters
at a time. The recurrent state flows from one window to the next (detached, so
gradients stop at the window), and every character of every stream is a target
once per epoch. AdamW with gradient clipping, a short warm-up and a cosine decay.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from abcgen.abc import header_fields
from abcgen.checkpoint import load_checkpoint, save_checkpoint
from abcgen.corpus import Corpus, join_tunes, load_corpus
from abcgen.device import TrainingThreads, cpu_tensors, pick_device, use_bf16
from abcgen.distributed import PeerLost, join as join_world, world as current_world
from abcgen.errors import AbcgenError
from abcgen.finetune import FINETUNE_DEFAULTS, MIN_VALIDATION, recorded_init, start_from
from abcgen.form import encode_text
from abcgen.model import CharModel, build_model, tree_map
from abcgen.model_config import ModelConfig
from abcgen.options import OptionError
from abcgen.scoring import known_tunes, make_streams, score_text, windows
from abcgen.structure import corpus_forms
from abcgen.vocab import Vocab


@dataclass
class TrainConfig:
    epochs: int | None = 30
    max_time: float | None = None
    batch_size: int = 4  # 4 streams: about 3x the updates of 16 in the same time on a CPU (bench/results/scale.md)
    seq_len: int = 128
    lr: float = 6e-3
    weight_decay: float = 0.1  # AdamW's decoupled decay of the weight matrices
    min_lr_ratio: float = 0.05
    warmup_steps: int = 20
    clip: float = 1.0
    patience: int | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto | bf16 | fp32
    threads: int | None = None  # CPU threads; None: fitted to the free cores (device.TrainingThreads)


def finetune_config(**overrides) -> TrainConfig:
    """A TrainConfig with the fine-tuning defaults (abcgen.finetune), changed by overrides."""
    return TrainConfig(**{**FINETUNE_DEFAULTS, **overrides})


class TrainingInterrupted(Exception):
    """Raised after SIGINT/SIGTERM once last.pt is safely written."""

    def __init__(self, signum: int, last_path: Path):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.last_path = last_path


@dataclass
class TrainResult:
    out_dir: Path
    best_path: Path
    last_path: Path
    best_val_loss: float
    best_val_acc: float
    epochs: int
    elapsed_s: float
    stopped_because: str
    # True when the corpus had no validation tune to spare: the "validation" loss is then
    # the loss on training tunes, and says nothing about unseen music.
    validation_is_training: bool = False


# ---------------------------------------------------------------- the run


class StopFlag:
    """Catches SIGINT/SIGTERM during training so the current step can finish."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}  # the handlers to put back

    def __enter__(self) -> StopFlag:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[signum] = signal.signal(signum, self.catch)
            except ValueError:  # not in the main thread: leave signals alone
                pass
        return self

    def catch(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def lr_factor(step: int, progress: float, config: TrainConfig) -> float:
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return warmup * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def check_out_dir(out_dir: Path, resume: bool, force: bool) -> None:
    existing = [p.name for p in (out_dir / "best.pt", out_dir / "last.pt") if p.exists()]
    if existing and not (resume or force):
        raise AbcgenError(
            f"{out_dir} already holds a model ({', '.join(existing)}); "
            "use --resume to continue it, --force to replace it, or --out for another folder"
        )
    if resume and not (out_dir / "last.pt").exists():
        raise AbcgenError(f"nothing to resume: {out_dir / 'last.pt'} does not exist")


def validate(model_config: ModelConfig, config: TrainConfig) -> None:
    problems = [
        (config.batch_size < 1, "batch_size", "must be at least 1"),
        (config.seq_len < 1, "seq_len", "must be at least 1"),
        (not config.lr > 0, "lr", "must be greater than 0"),
        (not config.weight_decay >= 0, "weight_decay", "must be at least 0"),
        (config.epochs is not None and config.epochs < 1, "epochs", "must be at least 1"),
        (config.max_time is not None and config.max_time <= 0, "max_time", "must be greater than 0"),
        (config.patience is not None and config.patience < 1, "patience", "must be at least 1"),
        (model_config.hidden < 1, "hidden", "must be at least 1"),
        (model_config.layers < 1, "layers", "must be at least 1"),
        (not 0 <= model_config.dropout < 1, "dropout", "must be in [0, 1)"),
    ]
    for bad, option, problem in problems:
        if bad:
            raise OptionError(option, problem)


def train(
    corpus: Corpus | str | Path,
    out_dir: str | Path,
    model_config: dict | None = None,
    config: TrainConfig | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    init: str | Path | None = None,
) -> TrainResult:
    """Train a model on a corpus and write best.pt, last.pt and metrics.jsonl to out_dir.

    init: start from this trained model (a path, or "shipped") instead of random weights;
    see abcgen.finetune (model_config may then only repeat the model's own options)."""
    config = config or TrainConfig()
    world = join_world(config.device)  # under torchrun: connect to the other training processes
    log = log or (lambda message: print(message, file=sys.stderr))
    if not world.main:  # rank 0 speaks for every rank
        log, progress = (lambda message: None), False
    out_dir = Path(out_dir)
    check_out_dir(out_dir, resume, force)
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus)
    notes: list[str] = []  # said once the run has started: a refused option says one line only
    fine_tuning = init is not None if not resume else recorded_init(out_dir / "last.pt") is not None
    corpus, validation_is_training = with_validation_tunes(
        corpus, notes.append, at_least=MIN_VALIDATION if fine_tuning else 1
    )

    run = (
        Run.resume(out_dir, corpus, config)
        if resume
        else Run.start(out_dir, corpus, model_config or {}, config, init=init, log=notes.append)
    )
    for note in notes:
        log(note)
    run.threads = TrainingThreads(config.threads, processes=world.local_size)
    try:
        result = run.loop(progress, log)
    except PeerLost as lost:
        raise PeerLost(
            f"{lost}; every training process stopped: resume from the last epoch saved in "
            f"{out_dir / 'last.pt'} with --resume"
        ) from None
    finally:
        run.threads.restore()
    result.validation_is_training = validation_is_training
    return result


HOLD_OUT_FROM, HELD_OUT = 10, 2  # see with_validation_tunes


def with_validation_tunes(corpus: Corpus, log: Callable[[str], None], at_least: int = 1) -> tuple[Corpus, bool]:
    """The corpus to train on, and whether its validation figures are training loss.

    A small corpus's split may leave no training tune (refused in one line), or no
    validation tune the model can read (none, or all with characters no training tune
    has): then, from HOLD_OUT_FROM training tunes up, two tunes are held out of training
    for validation (the last ones whose characters the rest have), and log says so. A
    smaller corpus has none to spare: log says that the validation figures are the loss
    on training tunes. The choice depends on the corpus only, so a resumed run makes the
    same one. at_least: fewer validation tunes than this also count as none (then enough
    are held out to make it up, HELD_OUT or more)."""
    if not corpus.train:
        where = ", ".join(f"{len(corpus.split(name))} in {name}" for name in ("val", "test") if corpus.split(name))
        raise AbcgenError(
            f"{corpus.name}: no training tunes: the split by tune puts all "
            f"{len(corpus.tunes)} of them elsewhere ({where}); train on a corpus "
            "with more tunes (about 90% go to training)"
        )
    known_val = len(known_tunes(corpus.val, Vocab.from_text(corpus.text("train"))))
    if known_val >= at_least:
        return corpus, False
    why = (
        f"the split leaves {known_val} validation tune(s), fewer than {at_least}"
        if known_val
        else f"its {len(corpus.val)} validation tune(s) hold characters no training tune has"
        if corpus.val
        else "the split leaves no validation tunes"
    )
    train, held = list(corpus.train), list[str]()
    for index in reversed(range(len(train)) if len(train) >= HOLD_OUT_FROM else ()):
        if len(held) >= max(HELD_OUT - known_val, at_least - known_val):
            break
        rest = train[:index] + train[index + 1 :]
        if not Vocab.from_text(join_tunes(rest)).unknown(train[index]):
            held.append(train[index])
            train = rest
    if not held:
        log(
            f"{corpus.name}: {why} and too few training tunes ({len(corpus.train)}) to spare "
            "any: the validation figures are the loss on training tunes, not on unseen music"
        )
        return corpus, True
    titles = ", ".join(header_fields(t).get("T") or "untitled" for t in held)
    log(f"{corpus.name}: {why}; holding out {len(held)} training tune(s) for validation ({titles})")
    return replace(corpus, train=train, val=corpus.val + held, dropped=corpus.dropped.copy()), False


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW, decaying only the weight matrices (not biases or norms); plain Adam at decay 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


class Run:
    """Everything a training run carries between steps; saved whole in last.pt."""

    origin: dict[str, Any] | None = None  # fine-tuning: the starting model's provenance (finetune.start_from)
    threads: TrainingThreads | None = None  # the CPU thread choice, set by train()

    def __init__(
        self,
        out_dir: Path,
        corpus: Corpus,
        model: CharModel,
        vocab: Vocab,
        config: TrainConfig,
        device: torch.device,
        bf16: bool,
    ):
        self.out_dir, self.corpus, self.model, self.vocab = out_dir, corpus, model, vocab
        self.forms = corpus_forms(corpus.train)  # what `sample --structure auto` draws from
        self.config, self.device, self.bf16 = config, device, bf16
        self.optimizer = make_optimizer(model, config)
        form = model.config.form
        count = model.config.form_count
        train_inputs, train_ids = encode_text(corpus.text("train"), vocab, form, count)
        self.world = current_world()  # one process, or this rank of several (abcgen.distributed)
        self.inputs, self.targets = (
            self.world.share(t).to(device) for t in make_streams(train_ids, config.batch_size, train_inputs)
        )  # this rank's streams, moved once
        self.net = self.world.wrap(model)  # what trains: the model itself, or DDP over it
        if self.world.rank:  # every rank its own dropout masks; rank 0 draws as one process would
            torch.manual_seed(config.seed + 1_000_003 * self.world.rank)
        val_tunes = known_tunes(corpus.val, vocab) or known_tunes(corpus.train[:20], vocab)
        self.val_inputs, self.val_ids = encode_text("".join(t + "\n\n" for t in val_tunes), vocab, form, count)
        self.windows = windows(self.inputs.shape[1], config.seq_len)
        self.epoch, self.window, self.step, self.elapsed = 0, 0, 0, 0.0
        self.state = None
        self.best_val_loss, self.best_val_acc, self.bad_evals = math.inf, 0.0, 0
        self.loss_sum, self.loss_count = 0.0, 0

    @classmethod
    def start(
        cls,
        out_dir: Path,
        corpus: Corpus,
        model_config: dict,
        config: TrainConfig,
        init: str | Path | None = None,
        log: Callable[[str], None] | None = None,
    ) -> Run:
        validate(ModelConfig(vocab_size=1, **model_config), config)
        torch.manual_seed(config.seed)
        vocab = Vocab.from_text(corpus.text("train"))
        device = current_world().device or pick_device(config.device)
        origin = None
        if init is None:
            model = build_model(ModelConfig(vocab_size=len(vocab), **model_config)).to(device)
        else:  # fine-tuning: the starting model's weights, its vocabulary grown
            model, vocab, origin = start_from(init, corpus.text("train"), model_config, log)
            model = model.to(device)
        if current_world().main:  # the one rank that writes files
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "metrics.jsonl").write_text("")
            (out_dir / "best.pt").unlink(missing_ok=True)
        run = cls(out_dir, corpus, model, vocab, config, device, use_bf16(config.precision, device, model.config.arch))
        run.origin = origin
        return run

    @classmethod
    def resume(cls, out_dir: Path, corpus: Corpus, config: TrainConfig) -> Run:
        last = load_checkpoint(out_dir / "last.pt")
        saved = last.training or {}
        if "optimizer" not in saved:
            raise AbcgenError(f"{out_dir / 'last.pt'} has no training state to resume from")
        if saved.get("corpus_fingerprint") != corpus.fingerprint:
            raise AbcgenError(
                f"{out_dir} was trained on another corpus (fingerprint "
                f"{saved.get('corpus_fingerprint')}); train it on the same files or use --force"
            )
        processes, here = saved.get("world_size", 1), current_world().size
        if processes != here:
            same = (
                "one process: leave out --nproc and torchrun"
                if processes == 1
                else f"--nproc {processes}, or torchrun with {processes} processes in all"
            )
            raise AbcgenError(
                f"{out_dir / 'last.pt'} was saved by {processes} training process(es) and "
                f"this run has {here}: resume with {same} (each process's streams and "
                "random state are saved for that number)"
            )
        kept = TrainConfig(**saved["config"])
        # Options that may change on resume: how long to go on, and on what device.
        kept.epochs, kept.max_time, kept.patience = config.epochs, config.max_time, config.patience
        kept.device, kept.threads = config.device, config.threads
        device = current_world().device or pick_device(kept.device)
        run = cls(
            out_dir,
            corpus,
            last.model.to(device),
            last.vocab,
            kept,
            device,
            use_bf16(kept.precision, device, last.model.config.arch),
        )
        try:
            run.optimizer.load_state_dict(saved["optimizer"])
        except ValueError as error:  # saved by an abcgen with another optimizer layout
            raise AbcgenError(
                f"{out_dir / 'last.pt'} cannot be resumed by this abcgen ({error}); start again with --force"
            ) from None
        run.epoch, run.window, run.step = saved["epoch"], saved["window"], saved["step"]
        run.elapsed = saved["elapsed"]
        run.best_val_loss, run.best_val_acc = saved["best_val_loss"], saved["best_val_acc"]
        run.bad_evals = saved["bad_evals"]
        run.origin = last.meta.get("init")
        run.loss_sum, run.loss_count = saved["loss_sum"], saved["loss_count"]
        run.state = tree_map(lambda t: t.to(device), saved["state"])
        if isinstance(run.state, list):
            run.state = tuple(run.state)
        rng = saved["rng"]
        if run.world.distributed:  # this rank's rows of the state, its own random state
            if run.state is not None:
                run.state = run.model.select_state(run.state, run.world.rows(kept.batch_size).to(device))
            rng = saved["rng_ranks"][run.world.rank]
        torch.set_rng_state(rng)
        cuda_rng = saved.get("cuda_rng_ranks", [None] * here)[run.world.rank]
        if cuda_rng is not None and device.type == "cuda":
            torch.cuda.set_rng_state(cuda_rng, device)
        return run

    # -- saving

    def meta(self, metrics: dict | None = None) -> dict:
        return {
            "corpus": self.corpus.name,
            "corpus_fingerprint": self.corpus.fingerprint,
            "epoch": self.epoch,
            "step": self.step,
            "train_config": asdict(self.config),
            "metrics": metrics or {},
            "meters": dict(Counter(header_fields(t).get("M") for t in self.corpus.train)),
            "keys": dict(Counter(header_fields(t).get("K") for t in self.corpus.train)),
            "forms": self.forms,
            **({"init": self.origin} if self.origin else {}),  # where fine-tuning started
        }

    def save_last(self, metrics: dict | None = None) -> None:
        # Every rank's recurrent and random states, gathered on rank 0, which alone writes.
        states = self.world.gather(tree_map(lambda t: t.cpu(), self.state))
        rngs = self.world.gather(
            (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None)
        )
        if states is None or rngs is None:  # not rank 0
            return
        training = {
            "config": asdict(self.config),
            "optimizer": cpu_tensors(self.optimizer.state_dict()),  # loads on any device
            "epoch": self.epoch,
            "window": self.window,
            "step": self.step,
            "elapsed": self.elapsed,
            "best_val_loss": self.best_val_loss,
            "best_val_acc": self.best_val_acc,
            "bad_evals": self.bad_evals,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "state": states[0] if len(states) == 1 or states[0] is None else self.model.merge_states(states),
            "rng": rngs[0][0],
            "world_size": self.world.size,
            "rng_ranks": [cpu for cpu, _ in rngs],
            "cuda_rng_ranks": [cuda for _, cuda in rngs],
            "corpus_fingerprint": self.corpus.fingerprint,
        }
        save_checkpoint(self.out_dir / "last.pt", self.model, self.vocab, self.meta(metrics), training)

    # -- the loop

    def progress_fraction(self) -> float:
        parts = []
        if self.config.epochs:
            parts.append(self.step / (self.config.epochs * len(self.windows)))
        if self.config.max_time:
            parts.append(self.elapsed / self.config.max_time)
        return max(parts) if parts else 0.0

    def train_step(self) -> float:
        self.model.train()
        start, end = self.windows[self.window]
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * lr_factor(self.step, self.progress_fraction(), self.config)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits, state = self.net(self.inputs[:, start:end], self.state)
        loss = nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), self.targets[:, start:end].reshape(-1)
        )
        value = self.world.mean(loss.detach())  # over every rank's streams: the same on all
        if not math.isfinite(value):
            raise AbcgenError(
                f"training diverged: the loss became {value} at step {self.step}; "
                "best.pt is unchanged; try a lower --lr"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        self.state = self.model.detach_state(state)
        self.step += 1
        self.window += 1
        return value

    def evaluate_and_save(self, chars_per_s: float) -> dict:
        # Validation once, on rank 0; every rank takes its figures.
        result = self.world.from_main(lambda: score_text(self.model, self.val_ids, self.val_inputs, bf16=self.bf16))
        metrics = {
            "epoch": self.epoch + self.window / len(self.windows),
            "step": self.step,
            "elapsed_s": round(self.elapsed, 2),
            "train_loss": self.loss_sum / max(1, self.loss_count),
            "val_loss": result["loss"],
            "val_bpc": result["bpc"],
            "val_acc": result["acc"],
            "chars_per_s": round(chars_per_s),
            "threads": torch.get_num_threads(),
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        self.loss_sum, self.loss_count = 0.0, 0
        if self.world.main:
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
        if result["loss"] < self.best_val_loss:
            self.best_val_loss, self.best_val_acc, self.bad_evals = result["loss"], result["acc"], 0
            if self.world.main:
                save_checkpoint(self.out_dir / "best.pt", self.model, self.vocab, self.meta(metrics))
        else:
            self.bad_evals += 1
        return metrics

    def finished(self) -> str | None:
        if self.config.epochs and self.epoch >= self.config.epochs:
            return f"{self.config.epochs} epochs done"
        if self.config.max_time and self.elapsed >= self.config.max_time:
            return f"time limit of {self.config.max_time:g} s reached"
        if self.config.patience and self.bad_evals >= self.config.patience:
            return f"no improvement in {self.config.patience} evaluations (early stop)"
        return None

    def loop(self, progress: bool, log: Callable[[str], None]) -> TrainResult:
        chars_per_step = self.inputs.shape[0] * self.world.size * self.config.seq_len
        total = self.config.epochs * len(self.windows) if self.config.epochs else None
        bar = tqdm(
            total=total,
            initial=self.step if total else 0,
            unit="step",
            disable=not progress or not sys.stderr.isatty(),
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )
        metrics = None
        with StopFlag() as stop, bar:
            while not (reason := self.finished()):
                started, chars, elapsed_before = time.perf_counter(), 0, self.elapsed
                while self.window < len(self.windows):
                    loss = self.train_step()
                    self.loss_sum, self.loss_count = self.loss_sum + loss, self.loss_count + 1
                    chars += chars_per_step
                    self.elapsed += time.perf_counter() - started
                    started = time.perf_counter()
                    bar.update(1)
                    bar.set_postfix(
                        epoch=self.epoch + 1,
                        loss=f"{loss:.3f}",
                        chars_s=f"{self.loss_count * chars_per_step / max(self.elapsed, 1e-9):.0f}",
                        refresh=False,
                    )
                    # Every rank stops at the same step: when any caught a signal.
                    signum, self.elapsed = self.world.agree(stop.signum, self.elapsed)
                    if signum is not None:
                        self.save_last(metrics)
                        raise TrainingInterrupted(signum, self.out_dir / "last.pt")
                    if self.config.max_time and self.elapsed >= self.config.max_time:
                        break
                speed = chars / max(1e-9, self.elapsed - elapsed_before)
                if self.window >= len(self.windows):
                    self.epoch, self.window, self.state = self.epoch + 1, 0, None
                metrics = self.evaluate_and_save(speed)
                if progress:
                    bar.write(format_metrics(metrics), file=sys.stderr)
                self.save_last(metrics)
                # --max-time is the time of the whole loop: validation and checkpoints count.
                self.elapsed += time.perf_counter() - started
                if self.threads is not None:  # other work may have come or gone meanwhile
                    self.threads.update()
        return TrainResult(
            self.out_dir,
            self.out_dir / "best.pt",
            self.out_dir / "last.pt",
            self.best_val_loss,
            self.best_val_acc,
            self.epoch,
            self.elapsed,
            reason,
        )


def format_metrics(m: dict) -> str:
    return (
        f"epoch {m['epoch']:.2f}  step {m['step']}  train {m['train_loss']:.3f}  "
        f"val {m['val_loss']:.3f} ({m['val_bpc']:.3f} bpc, {m['val_acc']:.1%} acc)  "
        f"{m['chars_per_s']:,} chars/s  {m['elapsed_s']:.0f}s"
    )
