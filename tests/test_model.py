"""The character model: shapes, its equivalence with one-hot inputs to a stacked LSTM, and
old checkpoints' weights (see also test_architectures.py for the other architectures)."""

import torch

from abcgen.model import build_model
from abcgen.model_config import ModelConfig


def test_model_shapes_and_one_hot_equivalence():
    model = build_model(ModelConfig(vocab_size=10, hidden=8, layers=2, dropout=0.0, form=0)).eval()
    ids = torch.randint(0, 10, (3, 5))
    logits, state = model(ids)
    assert logits.shape == (3, 5, 10)
    one_hot = torch.nn.functional.one_hot(ids, 10).float()
    stacked = torch.nn.LSTM(10, 8, num_layers=2, batch_first=True)
    stacked.load_state_dict(
        {
            f"{name}_l{n}": value
            for n, layer in enumerate(model.layers)
            for name, value in ((k[:-3], v) for k, v in layer.state_dict().items())
        }
    )
    reference, _ = stacked(one_hot)
    assert torch.allclose(logits, model.head(reference), atol=1e-6)
    # A checkpoint from when the layers were one stacked torch.nn.LSTM still loads.
    old = build_model(ModelConfig(vocab_size=10, hidden=8, layers=2, dropout=0.0, form=0)).eval()
    old.load_state_dict(
        {
            **{f"rnn.{k}": v for k, v in stacked.state_dict().items()},
            **{f"head.{k}": v for k, v in model.head.state_dict().items()},
        }
    )
    assert torch.allclose(old(ids)[0], logits, atol=1e-6)
    kept = model.select_state(state, torch.tensor([0, 2]))
    assert kept[0].shape == (2, 2, 8)
