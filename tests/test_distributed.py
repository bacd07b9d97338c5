"""Training in several processes: torch.distributed with gloo on the CPU, 2 processes.

The 2-process runs go through the real launchers (torchrun, and `abcgen train --nproc 2`,
which uses torchrun's elastic launcher) in subprocesses, so that a hang fails the test
instead of stalling it. Where a test needs a rank to catch a signal or die at a given
step, the subprocess swaps the function each process runs (abcgen.distributed._train_worker)
for one of the wrappers below, which patch Run.train_step inside the worker process.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import FIXTURE_TUNES

from abcgen.cli import cli
from abcgen.distributed import LocalError, World, should_report
from abcgen.errors import AbcgenError

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="this PyTorch has no torch.distributed with gloo",
)

ROOT = Path(__file__).resolve().parents[1]
TESTS = str(Path(__file__).resolve().parent)
EPOCHS, STEPS_PER_EPOCH = 2, 9  # the tiny corpus in 4 streams of 16 characters: 9 windows
OPTIONS = [
    "--epochs",
    str(EPOCHS),
    "--batch-size",
    "4",
    "--seq-len",
    "16",
    "--hidden",
    "16",
    "--layers",
    "2",
    "--dropout",
    "0",
    "--precision",
    "fp32",
    "--device",
    "cpu",
    "--seed",
    "3",
    "--lr",
    "1e-2",
]
# Two processes of 2 streams each against one of 4: the same step up to float rounding
# (a sum over 4 rows against two sums of 2, added by gloo). Measured: 1.2e-7 after 27 steps.
TOLERANCE = 1e-5
LAUNCH_TIMEOUT = 240  # seconds for one 2-process run, start-up of both processes included


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run_cli(args, worker=None):
    """`abcgen ARGS` in a subprocess; worker: a function of this module that each training
    process runs instead of abcgen.distributed._train_worker."""
    patch = (
        (
            f"import test_distributed; from abcgen import distributed; "
            f"distributed._train_worker = test_distributed.{worker}; "
        )
        if worker
        else ""
    )
    script = (
        f"import sys; sys.path.insert(0, {TESTS!r}); {patch}"
        f"from abcgen.cli import main; sys.argv = ['abcgen'] + {list(args)!r}; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT
    )


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def training_state(path):
    return torch.load(path, weights_only=True)["training"]


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[key].float() - b[key].float()).abs().max().item() for key in a)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus") / "tiny"
    folder.mkdir()
    (folder / "tunes.abc").write_text(FIXTURE_TUNES)
    return folder


@pytest.fixture(scope="module")
def torchrun_run(corpus, tmp_path_factory):
    """2 processes started by torchrun, uninterrupted."""
    out = tmp_path_factory.mktemp("torchrun") / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "abcgen",
            "train",
            str(corpus),
            "--out",
            str(out),
            *OPTIONS,
        ],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return out, done


# ---------------------------------------------------------------- wrappers run in the workers


def _on_rank_1_after_step(step, action):
    from abcgen.train import Run

    original = Run.train_step

    def train_step(run):
        loss = original(run)
        if run.world.rank == 1 and run.step == step:
            action()
        return loss

    Run.train_step = train_step


def sigterm_rank_1(*args):
    """Rank 1 alone catches SIGTERM after step 5."""
    from abcgen.distributed import _train_worker

    _on_rank_1_after_step(5, lambda: signal.raise_signal(signal.SIGTERM))
    return _train_worker(*args)


def kill_rank_1(*args):
    """Rank 1 dies (SIGKILL: no clean-up, no message) after step 5."""
    from abcgen.distributed import _train_worker

    _on_rank_1_after_step(5, lambda: os.kill(os.getpid(), signal.SIGKILL))
    return _train_worker(*args)


# ---------------------------------------------------------------- the tests


def test_two_processes_take_the_steps_of_one_with_the_same_global_batch(corpus, torchrun_run, tmp_path):
    out, done = torchrun_run
    one = CliRunner().invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "one"), *OPTIONS, "-q"])
    assert one.exit_code == 0, one.output
    saved = training_state(out / "last.pt")
    assert saved["world_size"] == 2 and saved["step"] == EPOCHS * STEPS_PER_EPOCH
    difference = max_difference(weights(out / "last.pt"), weights(tmp_path / "one" / "last.pt"))
    assert difference < TOLERANCE, f"2 processes drifted {difference:.2e} from 1 after {saved['step']} steps"
    # Only rank 0 speaks and writes; validation ran once per epoch.
    assert len((out / "metrics.jsonl").read_text().splitlines()) == EPOCHS
    assert done.stderr.count("Done (") == 1
    assert sum(line.startswith("epoch ") for line in done.stderr.splitlines()) == EPOCHS


def test_interrupted_two_process_run_resumes_where_an_uninterrupted_one_ends(corpus, torchrun_run, tmp_path):
    out = tmp_path / "run"
    stopped = run_cli(
        ["train", str(corpus), "--out", str(out), *OPTIONS, "--nproc", "2", "-q"], worker="sigterm_rank_1"
    )
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert stopped.stderr.count("Stopped; progress saved in") == 1, stopped.stderr
    assert "--nproc 2 --resume" in stopped.stderr and "Traceback" not in stopped.stderr
    saved = training_state(out / "last.pt")
    assert saved["step"] == 5 and saved["world_size"] == 2  # both ranks stopped after step 5
    assert len(saved["rng_ranks"]) == 2 and saved["state"][0].shape[1] == 4  # every rank's streams

    # Another number of processes is refused, in one line.
    refused = CliRunner().invoke(cli, ["train", str(corpus), "--out", str(out), *OPTIONS, "--resume"])
    assert refused.exit_code == 1
    assert "saved by 2 training process(es)" in refused.output and "--nproc 2" in refused.output

    resumed = run_cli(["train", str(corpus), "--out", str(out), *OPTIONS, "--nproc", "2", "--resume", "-q"])
    assert resumed.returncode == 0, resumed.stderr
    assert training_state(out / "last.pt")["step"] == EPOCHS * STEPS_PER_EPOCH
    difference = max_difference(weights(out / "last.pt"), weights(torchrun_run[0] / "last.pt"))
    assert difference < TOLERANCE, f"the resumed run ended {difference:.2e} away from the uninterrupted one"


def test_a_rank_that_dies_stops_the_others_with_one_line(corpus, tmp_path):
    out = tmp_path / "run"
    failed = run_cli(
        ["train", str(corpus), "--out", str(out), *OPTIONS, "--nproc", "2", "-q"], worker="kill_rank_1"
    )  # a hang would end in subprocess.TimeoutExpired
    assert failed.returncode == 1
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("tiny: the split leaves no validation tunes")  # the run's own note
    assert len(lines) == 2 and lines[1].startswith("Error: training process 1 of 2 was killed by SIGKILL"), (
        failed.stderr
    )


def test_options_that_cannot_split_are_refused_before_starting(corpus, tmp_path):
    result = CliRunner().invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "x"), *OPTIONS, "--nproc", "3"])
    assert result.exit_code == 1
    assert "--batch-size 4 does not split evenly over 3" in result.output
    assert not (tmp_path / "x").exists()


def test_each_rank_reads_its_share_of_the_streams():
    streams = torch.arange(8 * 5).view(8, 5)
    shares = [World(rank=r, size=4).share(streams) for r in range(4)]
    assert all(share.shape == (2, 5) for share in shares)
    assert torch.equal(torch.cat(shares), streams)
    assert World(rank=3, size=4).rows(8).tolist() == [6, 7]
    with pytest.raises(AbcgenError, match="does not split evenly"):
        World(rank=0, size=3).share(streams)


def test_rank_0_speaks_for_all_but_a_local_failure_speaks_for_itself():
    assert should_report(AbcgenError("bad option"), World(rank=0, size=2))
    assert not should_report(AbcgenError("bad option"), World(rank=1, size=2))
    assert should_report(LocalError("no GPU for this rank"), World(rank=1, size=2))
