import json
import signal

import pytest
import torch
from click.testing import CliRunner

from abcgen.checkpoint import load_checkpoint
from abcgen.cli import cli
from abcgen.corpus import load_corpus
from abcgen.errors import AbcgenError
from abcgen.train import TrainConfig, TrainingInterrupted, make_streams, train
from tests.conftest import interrupt_training_at

TINY_MODEL = {"hidden": 32, "layers": 2, "dropout": 0.1}


def tiny_config(**overrides):
    settings = dict(epochs=3, batch_size=4, seq_len=16, lr=1e-2, warmup_steps=2, precision="fp32", device="cpu", seed=3)
    return TrainConfig(**{**settings, **overrides})


def test_streams_make_every_character_a_target():
    ids = torch.arange(101)
    inputs, targets = make_streams(ids, 4)
    assert inputs.shape == targets.shape == (4, 25)
    assert torch.equal(targets, inputs + 1)
    assert sorted(targets.flatten().tolist()) == list(range(1, 101))


def test_tiny_model_overfits_tiny_corpus(tiny_abc, tmp_path):
    result = train(
        tiny_abc,
        tmp_path / "run",
        {"hidden": 64, "layers": 1, "dropout": 0.0},
        tiny_config(epochs=60, lr=2e-2),
        progress=False,
    )
    corpus = load_corpus(tiny_abc)
    checkpoint = load_checkpoint(result.last_path)
    from abcgen.sample import TuneModel

    train_loss = TuneModel(checkpoint).score(corpus.train)["loss"]
    assert train_loss < 0.5, f"training loss {train_loss:.3f} nats/char should fall below 0.5"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 60
    first = json.loads(lines[0])
    assert {"epoch", "step", "elapsed_s", "train_loss", "val_loss", "val_bpc", "val_acc", "chars_per_s"} <= first.keys()


def test_interrupted_and_resumed_run_matches_uninterrupted(tiny_abc, tmp_path, monkeypatch):
    whole = train(tiny_abc, tmp_path / "whole", TINY_MODEL, tiny_config(), progress=False)

    undo = interrupt_training_at(monkeypatch, 7)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(tiny_abc, tmp_path / "split", TINY_MODEL, tiny_config(), progress=False)
    assert stopped.value.signum == signal.SIGINT
    assert load_checkpoint(tmp_path / "split" / "last.pt").training["step"] == 7
    undo()
    resumed = train(tiny_abc, tmp_path / "split", None, tiny_config(), resume=True, progress=False)

    a = load_checkpoint(whole.last_path).model.state_dict()
    b = load_checkpoint(resumed.last_path).model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resuming_an_optimizer_state_of_another_layout_gives_one_line(tiny_abc, tmp_path):
    train(tiny_abc, tmp_path / "run", TINY_MODEL, tiny_config(epochs=1), progress=False)
    path = tmp_path / "run" / "last.pt"
    payload = torch.load(path, weights_only=True)
    groups = payload["training"]["optimizer"]["param_groups"]
    # One parameter group, as an optimizer without weight decay groups would save it.
    groups[:] = [{**groups[0], "params": [p for g in groups for p in g["params"]]}]
    torch.save(payload, path)
    with pytest.raises(AbcgenError, match="cannot be resumed by this abcgen"):
        train(tiny_abc, tmp_path / "run", None, tiny_config(epochs=2), resume=True, progress=False)


def test_nan_loss_stops_and_leaves_best_untouched(tiny_abc, tmp_path, monkeypatch):
    train(tiny_abc, tmp_path / "run", TINY_MODEL, tiny_config(epochs=1), progress=False)
    best_bytes = (tmp_path / "run" / "best.pt").read_bytes()
    real_cross_entropy = torch.nn.functional.cross_entropy
    monkeypatch.setattr(
        torch.nn.functional, "cross_entropy", lambda *a, **k: real_cross_entropy(*a, **k) * float("nan")
    )
    with pytest.raises(AbcgenError, match="diverged"):
        train(tiny_abc, tmp_path / "run", None, tiny_config(epochs=2), resume=True, progress=False)
    assert (tmp_path / "run" / "best.pt").read_bytes() == best_bytes


def run_cli(*args):
    return CliRunner().invoke(cli, ["train", *map(str, args)])


def test_train_cli_end_to_end_and_info(tiny_abc, tmp_path):
    out = tmp_path / "cli"
    result = run_cli(
        tiny_abc, "--out", out, "--epochs", 2, "--batch-size", 4, "--seq-len", 16, "--hidden", 16, "--quiet"
    )
    assert result.exit_code == 0, result.output
    # The four fixture tunes all land in training: no validation tune, and the output says so.
    assert "best training-set loss (no validation tunes)" in result.output
    assert f"abcgen sample --model {out / 'best.pt'}" in result.output
    assert {p.name for p in out.iterdir()} >= {"best.pt", "last.pt", "metrics.jsonl"}
    info = CliRunner().invoke(cli, ["info", str(out / "best.pt"), "--json"])
    details = json.loads(info.stdout)
    assert details["config"]["hidden"] == 16 and details["vocabulary_size"] > 20
    assert details["parameters"] == load_checkpoint(out / "best.pt").model.num_parameters()
    again = run_cli(tiny_abc, "--out", out, "--epochs", 1)
    assert again.exit_code == 1 and "already holds a model" in again.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing-corpus"], "abcgen download"),
        (["{tiny}", "--batch-size", "1000", "--hidden", "8"], "too small for one batch"),
        (["{tiny}", "--lr", "-1"], "--lr must be greater than 0"),
        (["{tiny}", "--weight-decay", "-0.1"], "--weight-decay must be at least 0"),
        (["{tiny}", "--dropout", "1.5"], "--dropout must be in"),
        (["{tiny}", "--epochs", "0"], "--epochs must be at least 1"),
        (["{tiny}", "--resume"], "nothing to resume"),
    ],
)
def test_train_bad_input_gives_one_line(tiny_abc, tmp_path, args, message):
    args = [a.replace("{tiny}", str(tiny_abc)) for a in args]
    result = run_cli(*args, "--out", tmp_path / "o", "--quiet")
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_train_offers_the_registered_architectures(tiny_abc, tmp_path):
    from abcgen.model import ARCHITECTURES

    result = run_cli(tiny_abc, "--arch", "nonsense", "--out", tmp_path / "o", "--quiet")
    assert result.exit_code == 2 and "'nonsense' is not one of" in result.output  # click's usage error
    assert all(name in result.output for name in ARCHITECTURES)
