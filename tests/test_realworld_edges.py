"""Real-world edges of issue 18: primes taken from real tunes, evaluating on tunes with
characters the model never saw, corpora too small for a validation split, paths with
spaces, multi-voice tunes. Every tune here is written for these tests."""

import json
import shlex

import pytest
import torch
from click.testing import CliRunner

from abcgen.abc import check_tune
from abcgen.cli import cli
from abcgen.corpus import load_corpus, normalise_tune, split_of
from abcgen.errors import AbcgenError
from abcgen.prime import normalise_prime, read_prime
from abcgen.sample import load_model
from abcgen.train import TrainConfig, train

TINY_MODEL = {"hidden": 16, "layers": 1, "dropout": 0.0}
TINY_CONFIG = dict(epochs=1, batch_size=2, seq_len=16, lr=1e-2, precision="fp32", device="cpu", seed=1)

REEL = """X:{n}
T:Edge Reel {title}
M:4/4
L:1/8
K:G
|:"G"GABc dBGB|"C"cBcd e2dc|"G"BGBd gdBG|"D"A2F2 D4:|
"""


def tunes_in(split: str, count: int, title: str = "") -> list[str]:
    """count raw tunes (with distinct titles) whose normalised form lands in split."""
    found, n = [], 0
    while len(found) < count:
        n += 1
        raw = REEL.format(n=n, title=f"{title}{n}")
        if split_of(normalise_tune(raw)[0]) == split:
            found.append(raw)
    return found


def write_folder(tmp_path, name, tunes):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "tunes.abc").write_text("\n".join(tunes), encoding="utf-8")
    return folder


# ---------------------------------------------------------------- --prime @FILE

REAL_STYLE_PRIME = """%abc-2.1
X:7
T:Caf\u00e9 \u201cNoir\u201d
T:The Piper\u2019s Reel \u2013 second setting
N:Learned from Se\u00e1n \u00d3 Riada's \u00e9t\u00e9 notes; play it <slowly>
R:reel
C:Trad.
S:a session, 1999
Z:transcribed for abcgen's tests
M:4/4
L:1/8
K:D
% the A part
|:A>B AF D2FA|d<e fd e2fe|
X:8
T:A second tune that is not part of the prime
K:G
GABc|
"""


def test_a_prime_from_a_real_tune_is_normalised_as_the_corpus_is(tmp_path):
    path = tmp_path / "prime.abc"
    path.write_text(REAL_STYLE_PRIME, encoding="utf-8")
    prime = read_prime(f"@{path}")
    assert prime == (
        'X:1\nT:Cafe "Noir"\nT:The Piper\'s Reel - second setting\nM:4/4\nL:1/8\nK:D\n'
        "|:A3/2B/2 AF D2FA|d/2e3/2 fd e2fe|\n"
    )
    load_model().vocab.encode(prime)  # the check generate() makes: no unknown character left


def test_a_latin1_prime_file_and_other_unit_lengths_are_read(tmp_path):
    path = tmp_path / "prime.abc"
    path.write_bytes("X:1\nT:Caf\u00e9\nM:2/4\nL:1/4\nK:G\nA>B c/d/|\n".encode("latin-1"))
    assert read_prime(f"@{path}") == "X:1\nT:Cafe\nM:2/4\nL:1/8\nK:G\nA3B cd|\n"


@pytest.mark.parametrize(
    "music, spelled",
    [
        ("A>B c<d", "A3/2B/2 c/2d3/2"),
        ("A2>B2 [FA]>>G", "A3B [FA]7/4G/4"),
        ('^f>"G"~g z<c', '^f3/2"G"~g/2 z/2c3/2'),
        ("ABcd|", "ABcd|"),
    ],
)
def test_broken_rhythm_in_a_music_prime_is_written_as_lengths(music, spelled):
    assert normalise_prime(music + "\n") == spelled + "\n"


def test_a_prime_of_several_voices_keeps_the_first():
    prime = "X:1\nT:Duet\nM:4/4\nL:1/8\nV:1\nV:2\nK:D\nV:1\nDEFG A4|\nV:2\nD,8|\n"
    assert normalise_prime(prime) == "X:1\nT:Duet\nM:4/4\nL:1/8\nK:D\nDEFG A4|\n"


def test_a_prime_whose_music_has_an_unknown_character_is_named(tmp_path):
    path = tmp_path / "prime.abc"
    path.write_text("X:1\nT:Fermata\nM:4/4\nL:1/8\nK:D\n|:DEFG +fermata+A4|\n")
    with pytest.raises(AbcgenError, match=r"characters not in the model's vocabulary: '\+'"):
        load_model().generate(n=1, prime=f"@{path}", seed=1, max_chars=200)


def test_a_prime_from_a_real_tune_samples_from_the_cli(tmp_path):
    path = tmp_path / "my primes" / "prime.abc"
    path.parent.mkdir()
    path.write_text(REAL_STYLE_PRIME.replace("e2fe|", "e2fe|\n"), encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["sample", "--prime", f"@{path}", "--seed", "1", "--max-chars", "300", "--retries", "0"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('X:1\nT:Cafe "Noir"\n')
    assert "|:A3/2B/2 AF D2FA|d/2e3/2 fd e2fe|" in result.stdout


def test_a_folder_given_as_prime_is_called_a_folder(tmp_path):
    result = CliRunner().invoke(cli, ["sample", "--prime", f"@{tmp_path}"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: prime file {tmp_path} is a folder; give --prime @FILE one .abc file"
    missing = CliRunner().invoke(cli, ["sample", "--prime", f"@{tmp_path / 'nope.abc'}"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


# ---------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def edge_model(tmp_path_factory):
    """A model trained for a moment on training-split reels: every digit in their titles,
    but no Q, W, Y or Z."""
    folder = tmp_path_factory.mktemp("edge_corpus")
    (folder / "tunes.abc").write_text("\n".join(tunes_in("train", 4, title="0123456789 ")))
    out = tmp_path_factory.mktemp("edge_run")
    train(folder, out, TINY_MODEL, TrainConfig(**TINY_CONFIG), force=True, progress=False, log=lambda m: None)
    return out / "last.pt"


def evaluate_cli(folder, model, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli, ["evaluate", str(folder), "--model", str(model), "-n", "2", "--seed", "1", "-q", "--json", str(report)]
    )
    return result, report


@pytest.mark.parametrize("known_test_tunes", [0, 1])
def test_evaluate_reports_the_rest_when_test_tunes_hold_unseen_characters(
    edge_model, tmp_path, monkeypatch, known_test_tunes
):
    unseen = tunes_in("test", 2, title="Quixotic Waltzing Zyzzyva ")
    tunes = tunes_in("train", 4) + unseen + tunes_in("test", known_test_tunes)
    folder = write_folder(tmp_path, "corpus", tunes)
    result, report_path = evaluate_cli(folder, edge_model, tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "none of these tunes can be scored" not in result.output
    report = json.loads(report_path.read_text())
    assert report["validity"] and report["statistics"]
    if known_test_tunes:
        assert report["prediction"]["tunes_scored"] == 1
        assert "2 of 3 test tunes left out: they hold characters the model never saw" in result.stdout
    else:
        assert report["prediction"] is None
        assert "Prediction (test split)   n/a" in result.stdout
        assert "all 2 test tunes hold characters the model never saw" in result.stdout
        assert report["prediction_note"].startswith("all 2 test tunes")


# ---------------------------------------------------------------- train


def test_train_holds_out_validation_tunes_when_the_split_gives_none(tmp_path):
    folder = write_folder(tmp_path, "corpus", tunes_in("train", 12))
    said = []
    result = train(folder, tmp_path / "run", TINY_MODEL, TrainConfig(**TINY_CONFIG), progress=False, log=said.append)
    assert not result.validation_is_training
    assert said[0].startswith(
        "corpus: the split leaves no validation tunes; holding out 2 training tune(s) for validation (Edge Reel "
    )
    checkpoint_meta = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert checkpoint_meta["val_loss"] > 0


def test_train_on_too_few_tunes_says_the_figure_is_training_loss(tmp_path):
    folder = write_folder(tmp_path, "corpus", tunes_in("train", 3))
    said = []
    result = train(folder, tmp_path / "run", TINY_MODEL, TrainConfig(**TINY_CONFIG), progress=False, log=said.append)
    assert result.validation_is_training
    assert said[0] == (
        "corpus: the split leaves no validation tunes and too few training tunes (3) "
        "to spare any: the validation figures are the loss on training tunes, not on "
        "unseen music"
    )


def test_train_on_a_lone_test_tune_gives_one_line(tmp_path):
    folder = write_folder(tmp_path, "corpus", tunes_in("test", 1))
    result = CliRunner().invoke(cli, ["train", str(folder), "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: corpus: no training tunes: the split by tune puts all 1 of them elsewhere (1 in test); "
        "train on a corpus with more tunes (about 90% go to training)"
    )


def test_the_sample_hint_after_training_is_quoted_for_a_path_with_spaces(tmp_path):
    folder = write_folder(tmp_path, "corpus", tunes_in("train", 3))
    out = tmp_path / "my runs" / "first try"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            str(folder),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--hidden",
            "8",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    hint = result.output.strip().splitlines()[-1].strip()
    assert hint == f"abcgen sample --model {shlex.quote(str(out / 'best.pt'))}"
    assert shlex.split(hint)[-1] == str(out / "best.pt")
    assert "best training-set loss (no validation tunes)" in result.output


# ---------------------------------------------------------------- several voices

VOICES_IN_HEADER = """X:1
T:Two Voices
M:4/4
L:1/8
V:1 name="Tune"
V:2 name="Bass" clef=bass
K:G
V:1
|:GABc d2B2|c2A2 G4:|
V:2
|:G,4 D,4|C,4 G,4:|
V:1
|:d2d2 B2G2|A4 G4:|
V:2
|:G,4 G,4|D,4 G,,4:|
"""

INLINE_VOICES = """X:2
T:Inline Voices
M:4/4
L:1/8
K:D
[V:1] DEFG A2A2|[V:2] D,8|
[V:1] B2A2 D4|]
[V:2] A,,8|]
"""


@pytest.mark.parametrize(
    "raw, music",
    [
        (VOICES_IN_HEADER, "|:GABc d2B2|c2A2 G4:|\n|:d2d2 B2G2|A4 G4:|"),
        (INLINE_VOICES, "DEFG A2A2|\nB2A2 D4|]"),
    ],
)
def test_multi_voice_tunes_keep_their_first_voice(raw, music):
    tune, reason = normalise_tune(raw)
    assert reason is None
    assert tune.split("\n", 5)[5] == music
    assert "V:" not in tune and "," not in tune
    assert check_tune(tune).ok


def test_the_corpus_command_reads_a_multi_voice_tune_as_one_melody(tmp_path):
    folder = write_folder(tmp_path, "voices", [VOICES_IN_HEADER, INLINE_VOICES])
    corpus = load_corpus(folder)
    assert len(corpus.tunes) == 2 and not corpus.dropped
    assert all("G,4" not in t and "D,8" not in t for t in corpus.tunes)


def test_sampling_stops_at_its_time_limit_whatever_the_model_writes():
    """A model with random weights never ends a bar as the rules want: past max_seconds the
    tunes are cut where they stand, none is written again, and the user is told."""
    from abcgen.checkpoint import Checkpoint, load_checkpoint
    from abcgen.model import build_model
    from abcgen.sample import PRETRAINED, TuneModel

    shipped = load_checkpoint(PRETRAINED)
    torch.manual_seed(0)
    model = TuneModel(Checkpoint(build_model(shipped.config).eval(), shipped.vocab, shipped.meta))
    said = []
    tunes = model.generate(n=2, seed=1, max_seconds=0.5, log=said.append)
    assert len(tunes) == 2 and all(tune.startswith("X:") for tune in tunes)
    assert any("time limit of 0.5 s" in line for line in said), said
    with pytest.raises(AbcgenError, match="max_seconds"):
        model.generate(n=1, max_seconds=0)
