"""The architecture experiment: parsing, corpus mixing, and one tiny run end to end."""

import json

import pytest
from click.testing import CliRunner

from abcgen.abc import split_tunes
from abcgen.cli import cli
from abcgen.corpus import Corpus, normalise_tune, parse_tunes, split_of
from abcgen.download import corpus_files
from abcgen.errors import AbcgenError
from abcgen.experiment import mixed_corpus, parse_archs
from tests.conftest import FIXTURE_TUNES

TINY_ARCHS = "lstm:hidden=16:layers=1,transformer:hidden=16:heads=2:layers=1"


@pytest.fixture
def split_corpus(tmp_path):
    """The fixture tunes under numbered titles: 12 training tunes and one validation and
    one test tune (which split a tune falls in depends only on its text)."""
    good = [raw for raw in split_tunes(FIXTURE_TUNES) if normalise_tune(raw)[0]]
    wanted = {"train": 12, "val": 1, "test": 1}
    chosen = []
    for number in range(1000):
        raw = good[number % len(good)].replace("\nT:", f"\nT:Number {number} ", 1)
        split = split_of(normalise_tune(raw)[0])
        if wanted[split]:
            wanted[split] -= 1
            chosen.append(raw)
        if not any(wanted.values()):
            break
    folder = tmp_path / "split"
    folder.mkdir()
    (folder / "tunes.abc").write_text("\n\n".join(chosen) + "\n")
    return folder


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_arch_specs_carry_model_options():
    specs = parse_archs("lstm, gru:hidden=64:dropout=0.2,transformer:context=128")
    assert [s.label for s in specs] == ["lstm", "gru:hidden=64:dropout=0.2", "transformer:context=128"]
    assert specs[1].options == {"arch": "gru", "hidden": 64, "dropout": 0.2}
    assert specs[2].options["context"] == 128 and specs[1].folder == "gru_hidden=64_dropout=0.2"


@pytest.mark.parametrize(
    "text, message",
    [
        ("lstm,nonsense", "unknown architecture"),
        ("lstm:size=3", "not a model option"),
        ("lstm:hidden=big", "must be a number"),
        ("transformer:hidden=10:heads=4", "multiple of heads"),
        ("lstm,lstm", "twice"),
        (",", "no architecture"),
    ],
)
def test_bad_arch_specs_are_refused_before_training(text, message):
    with pytest.raises(AbcgenError, match=message):
        parse_archs(text)


def test_music21_ships_the_collections_for_the_mix():
    for name in ("ryans-mammoth", "oneills-1850", "airds-airs", "essen"):
        assert corpus_files(name)[1], name
    assert corpus_files("no-such-collection") is None


def test_mixed_corpus_trains_on_both_and_keeps_the_held_out_tunes(split_corpus):
    from abcgen.corpus import load_corpus

    base = load_corpus(split_corpus)
    other = parse_tunes([FIXTURE_TUNES], "other").tunes
    extra = Corpus("extra", train=other, val=[base.test[0]], test=[])
    mixed = mixed_corpus(base, extra)
    assert mixed.val == base.val and mixed.test == base.test
    assert mixed.train[: len(base.train)] == base.train and len(mixed.train) == len(base.train) + 4
    assert base.test[0] not in mixed.train  # a held-out tune in the other collection does not leak


def test_experiment_end_to_end_through_the_cli(split_corpus, tmp_path):
    out = tmp_path / "experiment"
    result = CliRunner().invoke(
        cli,
        [
            "experiment",
            str(split_corpus),
            "--archs",
            TINY_ARCHS,
            "--budget",
            "0.5",
            "--seeds",
            "2",
            "-n",
            "3",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    assert len(report["runs"]) == 4 and [row["arch"] for row in report["summary"]] == TINY_ARCHS.split(",")
    for row in report["summary"]:
        assert row["seeds"] == 2 and row["parameters"] > 0 and row["chars_per_s"] > 0
        assert row["val_bpc"] > 0 and row["test_bpc"] > 0 and 0 <= row["validity"] <= 1
        assert row["val_bpc_sd"] is not None  # two seeds: a spread
    markdown = (out / "results.md").read_text()
    assert "| corpus | architecture | params |" in markdown and "±" in markdown
    # Where the time went: per run and for the whole experiment, in the output and the report.
    stages = ("train", "score", "sample", "judge")
    assert all(set(run["stage_seconds"]) == set(stages) for run in report["runs"])
    assert set(report["stage_seconds"]) == {"statistics", *stages, "total"}
    assert result.output.count("times: train ") == 4 and "all 4 run(s): statistics " in result.output
    assert "wall-clock time of the whole experiment: statistics" in markdown
    assert "`transformer:hidden=16:heads=2:layers=1`" in result.stdout
    assert (out / "split" / "lstm_hidden=16_layers=1" / "seed-1" / "best.pt").exists()


def test_experiment_with_a_corpus_mix_judges_both_on_the_same_tunes(split_corpus, tiny_abc, tmp_path):
    from abcgen.experiment import run_experiment

    report = run_experiment(
        split_corpus,
        "lstm:hidden=16:layers=1",
        budget=0.5,
        n=2,
        out_dir=tmp_path / "mix",
        corpus_mix=str(tiny_abc),
        log=lambda m: None,
    )
    plain, mixed = report["summary"]
    assert (plain["corpus"], mixed["corpus"]) == ("split", "split+tiny")
    assert report["corpora"]["split+tiny"]["train"] == report["corpora"]["split"]["train"] + 4
    runs = {run["corpus"]: run for run in report["runs"]}
    assert runs["split"]["test_tunes"] == runs["split+tiny"]["test_tunes"] == 1


def test_experiment_refuses_bad_options_in_one_line(split_corpus, tmp_path):
    for args, message in [
        (["--budget", "0"], "--budget"),
        (["--seeds", "0"], "--seeds"),
        (["--corpus-mix", "nowhere"], "--corpus-mix"),
        (["--archs", "rnn"], "unknown"),
    ]:
        result = CliRunner().invoke(cli, ["experiment", str(split_corpus), "--out", str(tmp_path / "o"), *args])
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
