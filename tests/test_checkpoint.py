"""Checkpoints: one self-contained file that round-trips, and bad files refused in one line."""

import pytest
import torch
from click.testing import CliRunner

from abcgen.checkpoint import load_checkpoint, save_checkpoint
from abcgen.cli import cli
from abcgen.errors import AbcgenError
from abcgen.model import build_model
from abcgen.model_config import ModelConfig
from abcgen.vocab import Vocab


def test_checkpoint_round_trip(tmp_path):
    vocab = Vocab.from_text("abc|:\n")
    model = build_model(ModelConfig(vocab_size=len(vocab), hidden=8, layers=1))
    save_checkpoint(tmp_path / "m.pt", model, vocab, {"corpus": "x", "epoch": 2})
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.vocab == vocab and loaded.config == model.config
    assert loaded.meta["corpus"] == "x" and "abcgen_version" in loaded.meta
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name])


class RunsCode:
    def __reduce__(self):
        return (print, ("this would run code",))


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        (b"not a checkpoint", "not a readable abcgen model"),
        ("truncated", "not a readable abcgen model"),
        ("unsafe", "not a readable abcgen model"),
        ("foreign", "not an abcgen model"),
    ],
)
def test_bad_checkpoints_are_refused_with_one_line(tmp_path, content, message):
    path = tmp_path / "m.pt"
    if content == "truncated":
        vocab = Vocab.from_text("ab")
        save_checkpoint(path, build_model(ModelConfig(vocab_size=2, hidden=4)), vocab, {})
        path.write_bytes(path.read_bytes()[:200])
    elif content == "unsafe":
        torch.save({"format": "abcgen-checkpoint", "payload": RunsCode()}, path)
    elif content == "foreign":
        torch.save({"weights": torch.zeros(2)}, path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(AbcgenError, match=message) as refused:
        load_checkpoint(path)
    assert "weights_only" not in str(refused.value)  # no hint towards an unsafe load
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
