"""Training on several processes with torch.distributed: DistributedDataParallel, launched
by torchrun or by `abcgen train --nproc N` (which starts the same through torchrun's own
elastic launcher, on this machine).

With --batch-size B and N processes (ranks), rank r reads streams r*B/N .. (r+1)*B/N - 1
of the B streams one process would read, and DDP averages the gradients: each step is the
step one process takes over all B streams, up to float rounding. Rank 0 alone scores the
validation tunes, writes files and shows progress; the others take its verdict. Every step
the ranks agree whether to stop (a signal reached any of them, or the time limit passed),
so they always stop at the same step, and last.pt (written by rank 0) holds every rank's
recurrent state and random state: --resume continues with the same number of processes.

Errors: a failure every rank meets (a bad option, a diverged loss) is said once, by rank 0.
A rank that dies breaks the others' next collective operation (gloo and NCCL notice a
closed connection): they raise PeerLost and stop instead of waiting.
"""

from __future__ import annotations

import atexit
import datetime
import inspect
import logging
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist

from abcgen.device import pick_device
from abcgen.errors import AbcgenError

if TYPE_CHECKING:  # types only: abcgen.train imports this module, and is imported back only in launch_training
    from abcgen.corpus import Corpus
    from abcgen.train import TrainConfig, TrainResult

T = TypeVar("T")

# How long a rank waits for the others in one collective operation (rank 0 scoring the
# validation tunes keeps the others waiting) before giving up.
TIMEOUT = datetime.timedelta(minutes=30)
PEER_LOST_EXIT = 3  # exit status of a process that stopped because another one did


class PeerLost(AbcgenError):
    """Another training process stopped: a collective operation failed."""


class LocalError(AbcgenError):
    """A failure of one rank only (its GPU, say): that rank says it, whatever its number."""


class TrainingFailed(AbcgenError):
    """launch_training's workers failed; reported: their message is already on stderr."""

    def __init__(self, message: str, reported: bool = False):
        super().__init__(message)
        self.reported = reported


@dataclass
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    device: torch.device | None = None  # set when distributed: this rank's device
    owned: bool = False  # this module started the process group (and ends it at exit)

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    # -- data

    def share(self, streams: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a (batch, n) tensor of streams."""
        if not self.distributed:
            return streams
        batch = streams.shape[0]
        if batch % self.size:
            raise AbcgenError(
                f"--batch-size {batch} does not split evenly over {self.size} training "
                f"processes; use a multiple of {self.size}"
            )
        share = batch // self.size
        return streams[self.rank * share : (self.rank + 1) * share]

    def rows(self, batch: int) -> torch.Tensor:
        share = batch // self.size
        return torch.arange(self.rank * share, (self.rank + 1) * share)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to train: model itself, or DDP over it (sharing its parameters)."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device] if self.device is not None and self.device.type == "cuda" else None
        # The models' only buffer is a constant table: nothing to send again every step.
        newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        no_sync: dict = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
        return DistributedDataParallel(model, device_ids=device_ids, **no_sync)

    # -- agreeing

    def _tensor(self, values: list[float]) -> torch.Tensor:
        device = self.device if dist.get_backend() == "nccl" else "cpu"
        return torch.tensor(values, dtype=torch.float64, device=device)

    def mean(self, value: torch.Tensor) -> float:
        """The mean of a scalar over the ranks (the loss over all streams), on every rank."""
        if not self.distributed:
            return value.item()
        total = self._tensor([value.item()])
        collective(dist.all_reduce, total, op=dist.ReduceOp.SUM)
        return total.item() / self.size

    def agree(self, signum: int | None, elapsed: float) -> tuple[int | None, float]:
        """Whether to stop (the signal any rank caught) and the training time so far (the
        longest of the ranks'), the same on every rank."""
        if not self.distributed:
            return signum, elapsed
        both = self._tensor([signum or 0, elapsed])
        collective(dist.all_reduce, both, op=dist.ReduceOp.MAX)
        return int(both[0].item()) or None, both[1].item()

    def from_main(self, compute: Callable[[], T]) -> T:
        """compute() run on rank 0 alone, its result (or AbcgenError) given to every rank."""
        if not self.distributed:
            return compute()
        box: list[Any] = [None]
        if self.main:
            try:
                box[0] = ("ok", compute())
            except AbcgenError as error:
                box[0] = ("error", str(error))
        collective(dist.broadcast_object_list, box, src=0)
        kind, value = box[0]
        if kind == "error":
            raise AbcgenError(value)
        return value

    def gather(self, obj: Any) -> list | None:
        """Every rank's obj, in rank order, on rank 0 (None on the others)."""
        if not self.distributed:
            return [obj]
        found = [None] * self.size if self.main else None
        collective(dist.gather_object, obj, found, dst=0)
        return found


def collective(operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return operation(*args, **kwargs)
    except (RuntimeError, ValueError, ConnectionError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise PeerLost(f"another training process stopped ({reason})") from None


_WORLD = World()


def world() -> World:
    """The World that join() set up (one process until then)."""
    return _WORLD


def env_world() -> World:
    """This process's rank and world size as torchrun (or --nproc) set them in the environment."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(
        rank=int(os.environ.get("RANK", "0")),
        size=size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(size))),
    )


def join(device_name: str) -> World:
    """Connect this process to the other training processes when torchrun started several
    (gloo on CPUs, NCCL on GPUs: one GPU per process on each machine); otherwise, one
    process. The process group ends when the process does."""
    global _WORLD
    found = env_world()
    if not found.distributed:
        _WORLD = found
        return found
    device = pick_device(device_name)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if found.local_rank >= count:
            raise LocalError(
                f"training process {found.rank} is number {found.local_rank + 1} on its "
                f"machine, which has {count} GPU(s): start at most {count} per machine "
                "(torchrun --nproc-per-node, or --nproc)"
            )
        device = torch.device("cuda", found.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise AbcgenError(
            f"training on several processes runs on CPUs (gloo) or CUDA GPUs (NCCL), "
            f"not {device.type}; use --device cpu or cuda"
        )
    found.device = device
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        bind = device.type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters
        try:
            bound: dict = {"device_id": device} if bind else {}
            dist.init_process_group(backend, timeout=TIMEOUT, **bound)
        except (RuntimeError, ValueError, ConnectionError) as error:
            reason = (str(error).strip().splitlines() or ["no reason given"])[0][:160]
            raise LocalError(
                f"training process {found.rank} could not join the others ({reason}); "
                "check torchrun's --rdzv-endpoint (or --master-addr and --master-port)"
            ) from None
        found.owned = True
        atexit.register(leave)
    _WORLD = found
    return found


def leave() -> None:
    global _WORLD
    if _WORLD.owned and dist.is_initialized():
        dist.destroy_process_group()
    _WORLD = World()


def should_report(error: AbcgenError, world_: World | None = None) -> bool:
    """Whether this process says error: rank 0 says what every rank meets, and a rank says
    its own local failure; a rank that lost its peers stays quiet unless it is rank 0."""
    world_ = world_ or env_world()
    return world_.main or isinstance(error, LocalError)


# ---------------------------------------------------------------- abcgen train --nproc N


def launch(nproc: int, entry: Callable[..., Any], args: tuple) -> dict:
    """Run entry(*args) in nproc processes on this machine, with the environment torchrun
    gives its workers (RANK, WORLD_SIZE, MASTER_ADDR, ...), through torchrun's own elastic
    launcher; returns {rank: entry's result}. The launcher's ChildFailedError (a process
    failed) and SignalException (this process caught SIGINT or SIGTERM, and passed it on
    to the workers) go through."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    caught = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    loggers = [logging.getLogger(name) for name in ("torch.distributed.elastic", "torch.multiprocessing")]
    saved_logging = [(logger.handlers[:], logger.propagate) for logger in loggers]
    saved_env = {
        name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "TORCHELASTIC_SIGNALS_TO_HANDLE", "PYTHONWARNINGS")
    }
    if saved_env["OMP_NUM_THREADS"] is None:  # each worker its share of the cores
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    # The launcher's own log lines (worker started, worker failed, terminating the others)
    # would bury the one line abcgen says; ABCGEN_DEBUG=1 lets them through.
    if not os.environ.get("ABCGEN_DEBUG"):
        for logger in loggers:
            logger.handlers, logger.propagate = [logging.NullHandler()], False
        # A killed worker cannot free its semaphores; multiprocessing's resource tracker
        # frees them and would add a warning about it.
        os.environ["PYTHONWARNINGS"] = ",".join(
            filter(None, [saved_env["PYTHONWARNINGS"], "ignore:resource_tracker:UserWarning"])
        )
    try:
        with tempfile.TemporaryDirectory(prefix="abcgen-launch-") as logs:
            config = LaunchConfig(
                min_nodes=1,
                max_nodes=1,
                nproc_per_node=nproc,
                run_id=uuid.uuid4().hex,
                rdzv_backend="c10d",
                rdzv_endpoint="localhost:0",
                max_restarts=0,
                monitor_interval=0.1,
                start_method="spawn",
                logs_specs=DefaultLogsSpecs(log_dir=logs),
            )
            return elastic_launch(config, entry)(*args)
    finally:
        for logger, (handlers, propagate) in zip(loggers, saved_logging):
            logger.handlers, logger.propagate = handlers, propagate
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for sig, handler in caught.items():
            signal.signal(sig, handler)


def describe_failure(failures: dict, nproc: int, last: str | os.PathLike[str] | None = None) -> TrainingFailed:
    """The one line for workers that failed: which one, and how, when no worker said it."""
    saved = (
        f"; resume from the last epoch saved in {last} with --resume"
        if last is not None and os.path.exists(last)
        else ""
    )
    died = {rank: failure for rank, failure in failures.items() if failure.exitcode not in (1, PEER_LOST_EXIT)}
    if died:
        rank = min(died)
        failure = died[rank]
        how = (
            f"was killed by {failure.signal_name()}"
            if failure.exitcode < 0
            else f"exited with status {failure.exitcode}"
        )
        return TrainingFailed(f"training process {rank} of {nproc} {how}; the other(s) stopped too{saved}")
    if any(failure.exitcode == 1 for failure in failures.values()):
        return TrainingFailed("a training process failed (its message is above)", reported=True)
    return TrainingFailed(f"the {nproc} training processes lost contact with each other and stopped{saved}")


def launch_training(
    nproc: int,
    corpus: Corpus | str | Path,
    out_dir: str | Path,
    model_config: dict | None = None,
    config: TrainConfig | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    init: str | Path | None = None,
    worker: Callable[..., Any] | None = None,
) -> TrainResult:
    """abcgen.train.train in nproc processes on this machine (DDP; gloo on CPUs, NCCL on
    GPUs): returns rank 0's TrainResult. Raises TrainingInterrupted after Ctrl-C or SIGTERM
    (last.pt written once), TrainingFailed when a process failed or died. worker: what each
    process runs, with _train_worker's arguments (tests wrap it)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from abcgen.train import TrainConfig, TrainingInterrupted  # here: abcgen.train imports this module

    config = config or TrainConfig()
    if nproc < 1:
        raise AbcgenError("--nproc must be at least 1")
    if env_world().distributed:
        raise AbcgenError(
            "--nproc starts its own training processes: leave it out under torchrun, "
            "whose --nproc-per-node sets how many"
        )
    if config.batch_size % nproc:
        raise AbcgenError(
            f"--batch-size {config.batch_size} does not split evenly over {nproc} "
            f"training processes; use a multiple of {nproc}"
        )
    if pick_device(config.device).type == "cuda" and nproc > torch.cuda.device_count():
        raise AbcgenError(
            f"--nproc {nproc} asks for a GPU per process, and this machine has "
            f"{torch.cuda.device_count()}; use --nproc {torch.cuda.device_count()} at most"
        )
    out_dir = Path(out_dir)
    try:
        results = launch(
            nproc, worker or _train_worker, (corpus, out_dir, model_config, config, resume, force, progress, init)
        )
    except ChildFailedError as error:
        raise describe_failure(error.failures, nproc, out_dir / "last.pt") from None
    except SignalException as stop:
        raise TrainingInterrupted(int(stop.sigval), out_dir / "last.pt") from None
    kind, *rest = results[0]
    if kind == "interrupted":
        raise TrainingInterrupted(*rest)
    return rest[0]


def _train_worker(
    corpus: Corpus | str | Path,
    out_dir: Path,
    model_config: dict | None,
    config: TrainConfig,
    resume: bool,
    force: bool,
    progress: bool,
    init: str | Path | None = None,
) -> tuple:
    """One process of launch_training: rank 0 returns the result; errors are said once."""
    from abcgen.train import TrainingInterrupted, train  # here: abcgen.train imports this module

    try:
        options: dict[str, Any] = {"init": init} if init is not None else {}
        return (
            "done",
            train(corpus, out_dir, model_config, config, resume=resume, force=force, progress=progress, **options),
        )
    except TrainingInterrupted as stop:
        return ("interrupted", stop.signum, stop.last_path)
    except PeerLost:
        sys.exit(PEER_LOST_EXIT)  # the launcher says which process died, and how
    except AbcgenError as error:
        if should_report(error):
            print(f"Error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C before training started
        sys.exit(130)
