"""Every architecture on tiny models: shapes, carried state, row selection, save/load,
sampling, a tiny overfit, and the CLI."""

import json

import pytest
import torch
from click.testing import CliRunner

from abcgen.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from abcgen.cli import cli
from abcgen.corpus import load_corpus
from abcgen.errors import AbcgenError
from abcgen.model import ARCHITECTURES, build_model
from abcgen.model_config import ModelConfig
from abcgen.sample import TuneModel
from abcgen.train import TrainConfig, train, use_bf16
from abcgen.vocab import Vocab

ARCHS = list(ARCHITECTURES)
VOCAB = 11
# Small windows so that the 20-character texts below cross them several times.
TINY = dict(hidden=16, layers=2, dropout=0.0, heads=2, window=5, kernel=3, context=6)


def tiny_model(arch, **overrides):
    torch.manual_seed(0)
    return build_model(ModelConfig(vocab_size=VOCAB, arch=arch, **{**TINY, **overrides})).eval()


def run_in_pieces(model, ids, cuts, state=None):
    pieces = []
    for start, end in zip(cuts, cuts[1:]):
        logits, state = model(ids[:, start:end], state)
        pieces.append(logits)
    return torch.cat(pieces, dim=1), state


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_carried_state_gives_the_same_logits_as_one_long_call(arch):
    model = tiny_model(arch)
    ids = torch.randint(0, VOCAB, (3, 20))
    whole, _ = model(ids)
    assert whole.shape == (3, 20, VOCAB)
    # Pieces of 1, 3, 9 and 7 characters: shorter and longer than every window.
    pieces, _ = run_in_pieces(model, ids, [0, 1, 4, 13, 20])
    assert torch.allclose(pieces, whole, atol=1e-5)
    one_at_a_time, _ = run_in_pieces(model, ids, list(range(21)))
    assert torch.allclose(one_at_a_time, whole, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_one_step_inference_matches_forward(arch):
    """step (the sampler's call) gives forward's logits and state, from no state and on."""
    model = tiny_model(arch, form=2)
    ids = torch.randint(0, VOCAB * 3, (3, 12))
    whole, whole_state = model(ids)
    stepped, state = [], None
    for t in range(ids.shape[1]):
        logits, state = model.step(ids[:, t : t + 1], state)
        stepped.append(logits)
    assert torch.allclose(torch.cat(stepped, dim=1), whole, atol=1e-5)
    following = torch.randint(0, VOCAB * 3, (3, 4))
    assert torch.allclose(model(following, state)[0], model(following, whole_state)[0], atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_select_state_keeps_the_chosen_rows(arch):
    model = tiny_model(arch)
    ids = torch.randint(0, VOCAB, (4, 12))
    _, state = model(ids[:, :9])
    rows = torch.tensor([3, 1])
    kept = model.select_state(state, rows)
    alone, _ = model(ids[rows, 9:], kept)
    together, _ = model(ids[:, 9:], state)
    assert alone.shape == (2, 3, VOCAB)
    assert torch.allclose(alone, together[rows], atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_merged_states_continue_like_the_original_rows(arch):
    """A row saved earlier in the text goes back into the batch (the sampler's rewinds)."""
    model = tiny_model(arch)
    ids = torch.randint(0, VOCAB, (3, 14))
    _, early = model(ids[:, :9])
    _, state = model(ids[:, 9:11], early)
    saved = model.select_state(early, torch.tensor([1]))
    merged = model.merge_states(
        [model.select_state(state, torch.tensor([0])), saved, model.select_state(state, torch.tensor([2]))]
    )
    resumed, _ = model(ids[:, 11:], merged)
    expected, _ = model(ids[:, 11:], state)
    rewound, _ = model(ids[1:2, 11:], saved)
    assert torch.allclose(resumed[[0, 2]], expected[[0, 2]], atol=1e-6)
    assert torch.allclose(resumed[1], rewound[0], atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_detached_state_has_no_graph_and_the_same_values(arch):
    model = tiny_model(arch).train()
    _, state = model(torch.randint(0, VOCAB, (2, 7)))
    detached = model.detach_state(state)
    flat = lambda s: [s] if isinstance(s, torch.Tensor) else [t for part in s for t in flat(part)]
    assert all(not t.requires_grad for t in flat(detached))
    assert all(torch.equal(a, b) for a, b in zip(flat(state), flat(detached)))


@pytest.mark.skipif(
    not use_bf16("auto", torch.device("cpu")), reason="this CPU has no native bf16; training here runs in float32"
)
@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_autocast_training_step_runs(arch):
    model = tiny_model(arch).train()
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, state = model(ids[:, :4])
        logits, state = model(ids[:, 4:], model.detach_state(state))
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, VOCAB), ids[:, 4:].reshape(-1))
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip_records_the_architecture(arch, tmp_path):
    vocab = Vocab.from_text("abc|:ABC\n 2")
    model = build_model(ModelConfig(vocab_size=len(vocab), arch=arch, **TINY)).eval()
    save_checkpoint(tmp_path / "m.pt", model, vocab, {})
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.config == model.config and loaded.config.arch == arch
    ids = torch.randint(0, len(vocab), (2, 10))
    with torch.no_grad():
        assert torch.equal(loaded.model(ids)[0], model(ids)[0])


def test_checkpoints_without_the_new_options_load_with_defaults(tmp_path):
    vocab = Vocab.from_text("abc\n")
    model = build_model(ModelConfig(vocab_size=len(vocab), hidden=8, layers=1, form=0))
    save_checkpoint(tmp_path / "old.pt", model, vocab, {})
    payload = torch.load(tmp_path / "old.pt", weights_only=True)
    payload["config"] = {k: payload["config"][k] for k in ("vocab_size", "arch", "hidden", "layers", "dropout")}
    torch.save(payload, tmp_path / "old.pt")
    config = load_checkpoint(tmp_path / "old.pt").config
    assert (config.arch, config.heads, config.window, config.kernel, config.context) == ("lstm", 4, 16, 3, 64)
    assert config.form == 0  # saved before form classes: it reads characters only


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_sampling_works_and_is_reproducible(arch):
    vocab = Vocab.from_text("X:1\nT:ab\nM:4/4\nL:1/8\nK:G\nABcd efga|]\n")
    model = build_model(ModelConfig(vocab_size=len(vocab), arch=arch, **TINY))
    tune_model = TuneModel(Checkpoint(model, vocab, {}))
    tunes = tune_model.generate(n=3, seed=5, check=False, max_chars=120)
    assert len(tunes) == 3 and all(tune.startswith(f"X:{i}") for i, tune in enumerate(tunes, 1))
    assert tune_model.generate(n=3, seed=5, check=False, max_chars=120) == tunes


@pytest.mark.parametrize(
    "arch, options",
    [
        ("transformer", {"hidden": 10, "heads": 4}),
        ("lstm-attention", {"heads": 0}),
        ("bilstm-window", {"window": 0}),
        ("conv-lstm", {"kernel": 0}),
        ("transformer", {"context": 0}),
    ],
)
def test_impossible_options_are_refused(arch, options):
    with pytest.raises(AbcgenError, match=r"^(hidden|heads|window|kernel|context) .*must be"):  # names the parameter
        build_model(ModelConfig(vocab_size=5, arch=arch, **options))


# Every architecture learns the tiny corpus: below 1.0 nats per character on its training
# tunes after 40 epochs (an untrained model starts near ln(vocabulary size) = 3.8).
OVERFIT_LOSS = 1.0


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "lstm"])  # lstm: see test_train.py
def test_tiny_model_overfits_the_tiny_corpus(arch, tiny_abc, tmp_path):
    config = TrainConfig(
        epochs=40, batch_size=4, seq_len=32, lr=2e-2, warmup_steps=2, precision="fp32", device="cpu", seed=0
    )
    options = {"arch": arch, "hidden": 32, "layers": 1, "dropout": 0.0, "window": 8, "context": 32}
    result = train(tiny_abc, tmp_path / "run", options, config, progress=False)
    model = TuneModel(load_checkpoint(result.last_path))
    loss = model.score(load_corpus(tiny_abc).train)["loss"]
    assert loss < OVERFIT_LOSS, f"{arch}: {loss:.3f} nats/char on its training tunes"


@pytest.mark.parametrize(
    "arch, options",
    [
        ("lstm-attention", ["--window", "4", "--heads", "2"]),
        ("bilstm-window", ["--window", "4"]),
        ("conv-lstm", ["--kernel", "5"]),
        ("transformer", ["--context", "16", "--heads", "2"]),
    ],
)
def test_cli_trains_and_samples_each_architecture(arch, options, tiny_abc, tmp_path):
    out = tmp_path / arch
    trained = CliRunner().invoke(
        cli,
        [
            "train",
            str(tiny_abc),
            "--out",
            str(out),
            "--arch",
            arch,
            "--epochs",
            "1",
            "--hidden",
            "16",
            "--batch-size",
            "4",
            "--seq-len",
            "16",
            "--quiet",
            *options,
        ],
    )
    assert trained.exit_code == 0, trained.output
    info = json.loads(CliRunner().invoke(cli, ["info", str(out / "best.pt"), "--json"]).stdout)
    assert info["config"]["arch"] == arch
    sampled = CliRunner().invoke(
        cli,
        ["sample", "--model", str(out / "best.pt"), "-n", "2", "--no-check", "--max-chars", "100", "--seed", "1", "-q"],
    )
    assert sampled.exit_code == 0, sampled.output
    assert sampled.stdout.startswith("X:1") and "X:2" in sampled.stdout


def test_cli_refuses_impossible_options_in_one_line(tiny_abc, tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "train",
            str(tiny_abc),
            "--out",
            str(tmp_path / "o"),
            "--arch",
            "transformer",
            "--hidden",
            "10",
            "--heads",
            "4",
            "-q",
        ],
    )
    assert result.exit_code == 1 and "must be a multiple of --heads" in result.output
    assert len(result.output.strip().splitlines()) == 1
