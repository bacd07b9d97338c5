"""Sampling holds the same memory whatever the tune's length, for every architecture: what it
keeps per tune is a fixed-size state (the recurrent state, the last `window` ids or the last
`context` keys and values), never the whole text read so far."""

import gc

import pytest
import torch

import abcgen.sample
from abcgen.checkpoint import Checkpoint
from abcgen.model import ARCHITECTURES, build_model
from abcgen.model_config import ModelConfig
from abcgen.sample import TuneModel
from abcgen.shaping import draw
from abcgen.vocab import Vocab

TINY = dict(hidden=16, layers=2, dropout=0.0, heads=2, window=5, kernel=3, context=6)
EARLY, LATE = 150, 900  # sampler steps at which the live tensors are weighed


def live_tensor_bytes() -> int:
    """Bytes of every tensor storage the process holds (each storage counted once)."""
    storages = {}
    for obj in gc.get_objects():
        if type(obj) in (torch.Tensor, torch.nn.Parameter):
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_sampling_memory_does_not_grow_with_tune_length(arch, monkeypatch):
    vocab = Vocab.from_text("X:1\nT:ab\nM:4/4\nL:1/8\nK:G\nABcd efga|]\n")
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=len(vocab), arch=arch, **TINY)).eval()
    with torch.no_grad():  # no line ends, so no tune ends: every tune runs to max_chars
        model.head.bias[vocab.index["\n"]] = -1e4
    tune_model = TuneModel(Checkpoint(model, vocab, {}))
    weighed, calls = {}, [0]

    def weighing_draw(*args, **kwargs):  # the sampler draws once per character
        calls[0] += 1
        if calls[0] in (EARLY, LATE):
            gc.collect()
            weighed[calls[0]] = live_tensor_bytes()
        return draw(*args, **kwargs)

    monkeypatch.setattr(abcgen.sample, "draw", weighing_draw)
    tunes = tune_model.generate(
        n=4,
        seed=0,
        title="t",
        meter="4/4",
        length="1/8",
        key="G",
        max_chars=LATE + 100,
        check=False,
        fix_bars=False,
        keep_rhythm=False,
        structure="none",
    )
    assert len(tunes) == 4 and calls[0] > LATE
    # Six times as many characters written, not one more byte of tensors held (a state
    # that kept the text read so far would hold 4 x 750 more positions by then).
    assert weighed[LATE] <= weighed[EARLY]
