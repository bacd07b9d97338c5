"""The sampler's two engines: a checkpoint's ONNX export (ONNX Runtime, no torch) and its
torch model give the same next-character logits and so the same tunes for a seed; an
export is used only for the checkpoint it was made from."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from abcgen.checkpoint import load_checkpoint, save_checkpoint
from abcgen.errors import AbcgenError
from abcgen.form import input_ids
from abcgen.inference import OnnxSteps, TorchSteps, export_onnx, export_path, open_export
from abcgen.model import build_model
from abcgen.model_config import ModelConfig
from abcgen.sample import PRETRAINED, TuneModel, load_model
from abcgen.vocab import Vocab
from abcgen.watch import TUNE_END

TEXT = 'X:1\nT:Test\nM:6/8\nL:1/8\nK:G\n|:"G"GAB c2d|e2f g3|[1 d2c B2A:|[2 G3 G2z||\n'


def logits_along(steps, ids: list[int], rows: int = 3) -> np.ndarray:
    """The logits after each input id, read one step at a time (every row alike)."""
    with steps.running():
        logits, state = steps.start(ids[:1], rows)
        seen = [logits]
        for i in ids[1:]:
            logits, state = steps.step(np.full(rows, i, dtype=np.int64), state)
            seen.append(logits)
    return np.stack(seen)


def test_the_shipped_export_is_the_shipped_models():
    exported = open_export(PRETRAINED)
    assert exported is not None, "retrained? run: python -m abcgen.inference abcgen/pretrained/nottingham.pt"
    assert isinstance(exported.steps, OnnxSteps)
    checkpoint = load_checkpoint(PRETRAINED)
    assert exported.config == checkpoint.config and exported.vocab.chars == checkpoint.vocab.chars
    assert exported.meta["forms"] == checkpoint.meta["forms"]
    ids = input_ids(TUNE_END + TEXT, checkpoint.vocab, checkpoint.config.form, checkpoint.config.form_count)
    fast, slow = logits_along(exported.steps, ids), logits_along(TorchSteps(checkpoint.model), ids)
    assert np.abs(fast - slow).max() < 1e-4
    assert np.abs(np.diff(fast, axis=0)).max() > 1  # the logits move: a state is carried


def test_both_engines_write_the_same_tunes_for_a_seed(monkeypatch):
    monkeypatch.delenv("ABCGEN_MODEL", raising=False)
    fast = load_model()
    slow = TuneModel(load_checkpoint(PRETRAINED))
    assert isinstance(fast.steps, OnnxSteps) and isinstance(slow.steps, TorchSteps)
    settings = dict(seed=11, structure="AABB", max_chars=500)
    tunes = fast.generate(4, **settings)
    assert tunes == slow.generate(4, **settings)
    assert len(set(tunes)) == 4


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_an_export_steps_as_its_checkpoint_and_only_for_it(tmp_path, arch):
    vocab = Vocab.from_text(TEXT)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=len(vocab), arch=arch, hidden=24, layers=2, form=6)
    model = build_model(config).eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, vocab, {"meters": ["6/8"]})
    assert open_export(path) is None  # not exported yet: the torch model writes
    assert export_onnx(path) == export_path(path)
    exported = open_export(path)
    assert exported is not None and exported.meta["meters"] == ["6/8"]
    ids = input_ids(TEXT, vocab, config.form)
    fast, slow = logits_along(exported.steps, ids), logits_along(TorchSteps(model), ids)
    assert np.abs(fast - slow).max() < 1e-4
    with torch.no_grad():
        model.head.bias += 1.0
    save_checkpoint(path, model, vocab, {})  # the checkpoint changed: its old export is stale
    heard: list[str] = []
    assert not isinstance(load_model(path, log=heard.append).steps, OnnxSteps)
    assert len(heard) == 1 and "exported from another model.pt" in heard[0]


def test_an_unreadable_export_falls_back_to_torch_with_a_warning(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(PRETRAINED.read_bytes())
    export_path(path).write_bytes(export_path(PRETRAINED).read_bytes()[:700_000])  # cut short
    heard: list[str] = []
    model = load_model(path, log=heard.append)
    assert isinstance(model.steps, TorchSteps) and len(heard) == 1 and "cannot be read" in heard[0]
    assert model.generate(1, seed=1)[0].startswith("X:1")
    with pytest.raises(AbcgenError, match="give its checkpoint"):
        load_model(export_path(path))


def test_the_export_command_fails_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "abcgen.inference", str(tmp_path / "missing.pt")], capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"Error: model file {tmp_path / 'missing.pt'} does not exist; train one with `abcgen train`"
    ]


def test_only_recurrent_models_export(tmp_path):
    vocab = Vocab.from_text(TEXT)
    path = tmp_path / "model.pt"
    save_checkpoint(path, build_model(ModelConfig(vocab_size=len(vocab), arch="transformer", hidden=16)), vocab, {})
    with pytest.raises(AbcgenError, match="only lstm and gru"):
        export_onnx(path)


def test_sampling_and_varying_with_the_shipped_model_import_no_torch():
    code = (
        "import sys; import abcgen; from abcgen.serve.music import vary; "
        "model = abcgen.load_model(); tunes = model.generate(2, seed=1); "
        "assert all(t.startswith('X:') for t in tunes), tunes; "
        "assert vary(model, tunes[0], 1, 1, count=2, seed=1)['candidates']; "
        "print(sorted(m for m in ('torch', 'music21') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
