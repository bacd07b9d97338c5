"""Fine-tuning (`abcgen train --init`): vocabulary growth, validation hold-out, provenance,
refusals and resume. Tiny models and a few steps: behaviour, not quality."""

import json

import pytest
import torch
from click.testing import CliRunner

from abcgen.checkpoint import load_checkpoint, save_checkpoint
from abcgen.cli import cli
from abcgen.corpus import Corpus, load_corpus
from abcgen.errors import AbcgenError
from abcgen.finetune import grow_vocab
from abcgen.form import FORM_BLOCKS, encode_text
from abcgen.model import build_model
from abcgen.model_config import ModelConfig
from abcgen.train import TrainingInterrupted, finetune_config, train, with_validation_tunes
from abcgen.vocab import Vocab
from tests.conftest import interrupt_training_at

OLD_TEXT = 'X:1\nT:Old\nM:6/8\nL:1/8\nK:D\n|:"D"dfa afd|"G"gbg "A7"fed|"D"d3 d2:|\n\n'
NEW_CHARS = "{}~Q"  # none of them in OLD_TEXT, and spread over the sorted vocabulary


def tune(number: int) -> str:
    """A short, well-formed reel; each number gives different notes (and title)."""
    notes = "ABcdefgaGFED"
    bar = lambda k: "".join(notes[(number * 7 + k * 3 + i) % len(notes)] for i in range(8))  # noqa: E731
    return f"X:{number}\nT:Reel {number}\nM:4/4\nL:1/8\nK:G\n|:{bar(0)}|{bar(1)}|{bar(2)}|{bar(3)}:|\n"


@pytest.fixture
def collection(tmp_path):
    """Twelve tunes, one with characters the starting model below never saw."""
    folder = tmp_path / "my-tunes"
    folder.mkdir()
    tunes = [tune(n) for n in range(1, 13)]
    tunes[4] = tunes[4].replace("|:", "|:{g}~", 1)  # grace notes and a roll before the first note
    (folder / "tunes.abc").write_text("\n".join(tunes))
    return folder


@pytest.fixture
def start_model(tmp_path, collection):
    """A tiny LSTM with form inputs whose vocabulary lacks `{`, `}` and `~`."""
    text = "".join(tune(n) + "\n" for n in range(1, 13)) + OLD_TEXT
    vocab = Vocab(set(text) - set("{}~"))
    torch.manual_seed(1)
    model = build_model(ModelConfig(vocab_size=len(vocab), hidden=24, layers=1, dropout=0.0))
    path = tmp_path / "start.pt"
    save_checkpoint(path, model, vocab, {"corpus": "start-corpus", "corpus_fingerprint": "0123abcd", "epoch": 5})
    return path


def tiny(**overrides):
    settings = dict(epochs=2, batch_size=2, seq_len=16, warmup_steps=2, precision="fp32", device="cpu", seed=2)
    return finetune_config(**{**settings, **overrides})


def log_probs(model, vocab, text):
    inputs, _ = encode_text(text, vocab, model.config.form, model.config.form_count)
    with torch.no_grad():
        logits, _ = model.eval()(inputs.unsqueeze(0))
    return torch.log_softmax(logits[0].float(), dim=-1)


@pytest.mark.parametrize(
    "arch, form", [("lstm", FORM_BLOCKS), ("lstm", 0), ("transformer", FORM_BLOCKS), ("conv-lstm", 0)]
)
def test_growing_the_vocabulary_keeps_the_predictions(arch, form):
    old = Vocab(OLD_TEXT)
    new = Vocab(OLD_TEXT + NEW_CHARS)
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(vocab_size=len(old), arch=arch, hidden=16, layers=1, heads=2, dropout=0.0, form=form)
    )
    for parameter in model.parameters():  # random biases too, so a misplaced row would show
        torch.nn.init.normal_(parameter, std=0.5)
    grown = grow_vocab(model, old, new, reference=OLD_TEXT)
    assert grown.config.vocab_size == len(new) == len(old) + len(NEW_CHARS)

    before = log_probs(model, old, OLD_TEXT)
    after = log_probs(grown, new, OLD_TEXT)
    kept = [new.index[ch] for ch in old.chars]
    assert torch.allclose(after[:, kept], before, atol=1e-4)
    assert torch.equal(after[:, kept].argmax(-1), before.argmax(-1))
    added = [new.index[ch] for ch in NEW_CHARS]
    assert after[:, added].exp().max() < 1e-4
    # The new characters can be read and learnt: input and output rows exist for them.
    logits, _ = grown(encode_text("{~}Q", new, form)[0].unsqueeze(0))
    assert logits.shape[-1] == len(new)


def test_a_vocabulary_that_loses_characters_is_refused():
    model = build_model(ModelConfig(vocab_size=3, hidden=4, layers=1))
    with pytest.raises(AbcgenError, match="lacks"):
        grow_vocab(model, Vocab("abc"), Vocab("abd"))


def test_a_tiny_collection_gets_two_validation_tunes():
    tunes = [tune(n) for n in range(1, 13)]
    said = []
    corpus, training_loss = with_validation_tunes(
        Corpus("mine", train=tunes[:11], val=[tunes[11]], test=[]), said.append, at_least=2
    )
    assert not training_loss and len(corpus.val) == 2 and len(corpus.train) == 10
    assert set(corpus.val) | set(corpus.train) == set(tunes)
    assert "holding out 1 training tune(s) for validation (Reel " in said[0]
    # Without that wish, the one validation tune the split gave is kept as it is.
    corpus, _ = with_validation_tunes(Corpus("mine", train=tunes[:11], val=[tunes[11]], test=[]), said.append)
    assert len(corpus.val) == 1


def test_fine_tuning_grows_the_vocabulary_and_records_where_it_started(collection, start_model, tmp_path):
    said = []
    result = train(collection, tmp_path / "run", {}, tiny(), progress=False, log=said.append, init=start_model)
    assert any("holding out" in line for line in said), said
    assert any("added to its vocabulary: '{' '}' '~'" in line for line in said), said
    best = load_checkpoint(result.best_path)
    start = load_checkpoint(start_model)
    assert set(best.vocab.chars) == set(start.vocab.chars) | set("{}~")
    assert best.config.hidden == 24 and best.config.layers == 1
    init = best.meta["init"]
    assert init["path"] == str(start_model.resolve()) and init["corpus"] == "start-corpus"
    assert init["corpus_fingerprint"] == "0123abcd" and init["added_chars"] == "{}~"
    assert best.meta["corpus"] == "my-tunes" and best.meta["corpus_fingerprint"] == load_corpus(collection).fingerprint

    shown = CliRunner().invoke(cli, ["info", str(result.best_path)])
    line = next(line for line in shown.stdout.splitlines() if line.startswith("init"))
    assert str(start_model.resolve()) in line and "start-corpus" in line and "0123abcd" in line
    assert json.loads(CliRunner().invoke(cli, ["info", str(result.best_path), "--json"]).stdout)["init"] == init


def test_cli_fine_tunes_with_the_small_collection_defaults(collection, start_model, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            str(collection),
            "--init",
            str(start_model),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--seq-len",
            "16",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "characters added to its vocabulary" in result.stderr
    saved = load_checkpoint(out / "last.pt").meta["train_config"]
    assert saved["lr"] == finetune_config().lr and saved["batch_size"] == finetune_config().batch_size
    assert saved["weight_decay"] == finetune_config().weight_decay and saved["epochs"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "transformer"], "--arch transformer contradicts the starting model"),
        (["--hidden", "64"], "--hidden 64 contradicts the starting model"),
        (["--no-form"], "--form/--no-form 0 contradicts the starting model"),
    ],
)
def test_options_that_contradict_the_starting_model_give_one_line(collection, start_model, tmp_path, args, message):
    result = CliRunner().invoke(
        cli, ["train", str(collection), "--init", str(start_model), "--out", str(tmp_path / "o"), "--quiet", *args]
    )
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a model at all", "is not a readable abcgen model"),
        (None, "does not exist"),
    ],
)
def test_a_corrupt_or_missing_starting_model_gives_one_line(collection, tmp_path, content, message):
    path = tmp_path / "start.pt"
    if content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(
        cli, ["train", str(collection), "--init", str(path), "--out", str(tmp_path / "o"), "--quiet"]
    )
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_an_interrupted_fine_tuning_run_resumes_to_the_same_model(collection, start_model, tmp_path, monkeypatch):
    whole = train(
        collection, tmp_path / "whole", {}, tiny(epochs=3), progress=False, log=lambda m: None, init=start_model
    )
    undo = interrupt_training_at(monkeypatch, 5)
    with pytest.raises(TrainingInterrupted):
        train(collection, tmp_path / "split", {}, tiny(epochs=3), progress=False, log=lambda m: None, init=start_model)
    undo()
    # Resumed without --init: the run knows it is fine-tuning (same validation tunes, same origin).
    resumed = train(
        collection, tmp_path / "split", None, tiny(epochs=3), resume=True, progress=False, log=lambda m: None
    )
    a, b = (load_checkpoint(r.last_path) for r in (whole, resumed))
    assert a.vocab == b.vocab and b.meta["init"] == a.meta["init"]
    for name, tensor in a.model.state_dict().items():
        assert torch.equal(tensor, b.model.state_dict()[name]), name
