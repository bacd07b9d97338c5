"""Evaluation: statistics with known answers, copying, validity, the cache, and the command."""

import json
import math
import sys
from collections import Counter

import pytest
from click.testing import CliRunner

from abcgen.abc import read_tune
from abcgen.cli import cli
from abcgen.errors import AbcgenError
from abcgen.evaluate import (
    TrainingIndex,
    bar_sequence,
    compare,
    corpus_profile,
    evaluate_tunes,
    format_report,
    kl_divergence,
    overlap_area,
    profile_tunes,
    write_json,
    write_plots,
)

HEAD = "X:1\nT:{title}\nM:{meter}\nL:1/8\nK:{key}\n"

TRAIN = [
    HEAD.format(title="Jig in G", meter="6/8", key="G")
    + "D|GAB c2d|e2d B2G|A2B c2A|G3 G2:|\nB|d2d e2e|d2B G2B|A2B c2A|G3 G2|]",
    HEAD.format(title="Reel in G", meter="4/4", key="G") + "GABc dBGB|cBcd e2dc|BGBd gdBG|A2F2 D4|]",
    HEAD.format(title="Waltz in G", meter="3/4", key="G") + "G2 B2 d2|c2 A2 F2|G2 B2 d2|e4 d2|B2 G2 A2|F6|]",
]
VAL = [
    HEAD.format(title="Another jig", meter="6/8", key="G") + "B|dBG GAB|c2A F2A|dBG GAB|AFD G2:|",
]
# The first training jig, a whole tone higher (in A): the same tune to a musician.
JIG_IN_A = (
    HEAD.format(title="Jig in A", meter="6/8", key="A")
    + "E|ABc d2e|f2e c2A|B2c d2B|A3 A2:|\nc|e2e f2f|e2c A2c|B2c d2B|A3 A2|]"
)
# Four bars of the training reel (transposed to D), then new music.
BORROWS_FOUR_BARS = (
    HEAD.format(title="Borrower", meter="4/4", key="D") + "DEFG AFDF|GFGA B2AG|FDFA dAFD|E2C2 A,4|fedc BAGF|E2E2 E4|]"
)
ORIGINAL = HEAD.format(title="New one", meter="4/4", key="G") + "g2fe d2cB|A2AB c4|B2d2 g2b2|a8|]"


# ---------------------------------------------------------------- distances


def test_identical_histograms_overlap_fully_with_no_divergence():
    counts = Counter({"a": 3, "b": 5, "c": 1})
    assert overlap_area(counts, Counter(counts)) == pytest.approx(1.0)
    assert kl_divergence(counts, Counter(counts)) == pytest.approx(0.0)


def test_disjoint_histograms_do_not_overlap_and_diverge():
    assert overlap_area(Counter(a=4), Counter(b=4)) == 0
    assert kl_divergence(Counter(a=4), Counter(b=4)) > 1


def test_distances_of_an_empty_histogram_are_unknown():
    assert overlap_area(Counter(), Counter(a=1)) is None
    assert kl_divergence(Counter(a=1), Counter()) is None


def test_identical_tune_sets_give_overlap_one_and_kl_zero_on_every_row():
    report = evaluate_tunes(TRAIN, TRAIN, TRAIN)
    for row in report["statistics"]:
        assert row["overlap"] == pytest.approx(1.0), row["feature"]
        assert row["kl"] == pytest.approx(0.0, abs=1e-12), row["feature"]


# ---------------------------------------------------------------- keys and pitch classes


def test_samples_in_another_mode_show_in_the_pitch_class_row():
    # The same notes as the G major tunes, read in E minor: the degrees shift.
    in_e_minor = [tune.replace("K:G", "K:Em") for tune in TRAIN]
    rows = {row["feature"]: row for row in evaluate_tunes(in_e_minor, TRAIN, VAL)["statistics"]}
    assert rows["pitch_class"]["overlap"] < 0.5
    assert rows["key"]["overlap"] == 0
    assert rows["melodic_interval"]["overlap"] == pytest.approx(1.0)


def test_a_transposed_corpus_keeps_its_pitch_classes_relative_to_the_tonic():
    rows = {row["feature"]: row for row in evaluate_tunes([JIG_IN_A], TRAIN[:1], VAL)["statistics"]}
    assert rows["pitch_class"]["overlap"] == pytest.approx(1.0)
    assert rows["key"]["overlap"] == 0  # A major, where the corpus is in G


def test_pitch_class_row_counts_degrees_above_the_tonic():
    profile = profile_tunes([HEAD.format(title="t", meter="4/4", key="D") + "DEFG ABcd|]"])
    assert profile.features["pitch_class"] == Counter({"1": 2, "2": 1, "3": 1, "4": 1, "5": 1, "6": 1, "7": 1})


# ---------------------------------------------------------------- originality


def _original(generated):
    return evaluate_tunes(generated, TRAIN, VAL)["originality"]["generated"]


def test_a_copied_training_tune_is_caught():
    result = _original([TRAIN[0]])
    assert result["share_identical"] == 1
    assert result["longest_copied_run"] == [10]
    assert result["share_copying_4_bars"] == 1


def test_a_transposed_copy_is_caught_too():
    result = _original([JIG_IN_A])
    assert result["share_identical"] == 1
    assert result["longest_copied_run"] == [10]


def test_four_borrowed_bars_count_as_copying_but_not_as_identical():
    result = _original([BORROWS_FOUR_BARS])
    assert result["longest_copied_run"] == [4]
    assert result["share_copying_4_bars"] == 1
    assert result["share_identical"] == 0


def test_an_original_tune_copies_little():
    result = _original([ORIGINAL])
    assert result["longest_copied_run"][0] < 2
    assert result["share_copying_4_bars"] == 0 and result["share_identical"] == 0


def test_a_run_must_keep_the_intervals_between_bars():
    # The reel's bars in order, but the third bar a fifth lower: only two bars run on.
    shifted = HEAD.format(title="Shifted", meter="4/4", key="G") + "GABc dBGB|cBcd e2dc|ECEG cGEC|D2B,2 G,4|]"
    index = TrainingIndex([bar_sequence(read_tune(TRAIN[1]))])
    assert index.longest_copied_run(bar_sequence(read_tune(shifted))) == 2


def test_distinct_ngrams_fall_when_tunes_repeat():
    once = _original([ORIGINAL])["distinct_ngrams"]
    twice = _original([ORIGINAL, ORIGINAL])["distinct_ngrams"]
    assert once["1"] == 1 and twice["1"] == pytest.approx(0.5)


# ---------------------------------------------------------------- validity


def test_a_bar_of_the_wrong_length_is_flagged():
    wrong = TRAIN[1].replace("cBcd e2dc", "cBcd e2d")
    report = evaluate_tunes([TRAIN[1], wrong], TRAIN, VAL)
    assert report["validity"]["valid"] == 0.5
    assert report["validity"]["failures"] == {"a bar of the wrong length": 1}


def test_unreadable_tunes_count_against_validity_and_are_left_out_of_statistics():
    report = evaluate_tunes(["X:1\nT:broken\nM:4/4\nL:1/8\nK:G\nGAB [c", "not abc"], TRAIN, VAL)
    assert report["validity"]["valid"] == 0 and report["validity"]["parses"] == 0
    assert all(row["overlap"] is None for row in report["statistics"])
    assert "n/a" in format_report(report)


# ---------------------------------------------------------------- report, json, plots


def test_report_table_has_every_row(tmp_path):
    report = evaluate_tunes([JIG_IN_A, ORIGINAL], TRAIN, VAL)
    table = format_report(report)
    for title in (
        "Validity",
        "pitch class (to tonic)",
        "note duration",
        "tune length (bars)",
        "copy 4+ bars",
        "distinct bar 4-grams",
    ):
        assert title in table
    write_json(report, tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text())["validity"]["tunes"] == 2


def test_plots_are_written_as_png(tmp_path):
    pytest.importorskip("matplotlib")
    paths = write_plots(evaluate_tunes([JIG_IN_A], TRAIN, VAL), tmp_path / "plots")
    assert {p.name for p in paths} >= {"pitch_class.png", "key.png", "copied_runs.png"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


def test_plots_without_matplotlib_say_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(AbcgenError, match=r"pip install 'abcgen\[plots\]'"):
        write_plots(evaluate_tunes([JIG_IN_A], TRAIN, VAL), tmp_path)


# ---------------------------------------------------------------- the corpus cache


class FakeCorpus:
    fingerprint = "0123abcd"
    train, val = TRAIN, VAL


def test_corpus_statistics_are_cached_by_fingerprint(tmp_path, monkeypatch):
    first = corpus_profile(FakeCorpus, cache=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["corpus-0123abcd-v1.json"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("the corpus was read again instead of the cache")

    monkeypatch.setattr("abcgen.evaluate.profile_tunes", must_not_run)
    second = corpus_profile(FakeCorpus, cache=tmp_path)
    assert second.train.features == first.train.features
    assert second.train.sequences == first.train.sequences


def test_cached_profile_gives_the_same_report(tmp_path):
    fresh = compare([JIG_IN_A, ORIGINAL], corpus_profile(FakeCorpus, cache=tmp_path))
    cached = compare([JIG_IN_A, ORIGINAL], corpus_profile(FakeCorpus, cache=tmp_path))
    assert fresh == cached


def test_a_damaged_cache_file_is_rebuilt(tmp_path):
    (tmp_path / "corpus-0123abcd-v1.json").write_text("{not json")
    profile = corpus_profile(FakeCorpus, cache=tmp_path)
    assert profile.train.tunes == len(TRAIN)
    assert json.loads((tmp_path / "corpus-0123abcd-v1.json").read_text())["fingerprint"] == "0123abcd"


def test_cache_folder_follows_xdg_cache_home(tmp_path, monkeypatch):
    from abcgen.evaluate import cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "abcgen"


# ---------------------------------------------------------------- the real corpus


def test_validation_tunes_sit_close_to_training_tunes(nottingham_dir, tmp_path):
    from abcgen.corpus import load_corpus

    corpus = load_corpus(nottingham_dir)
    profile = corpus_profile(corpus, cache=tmp_path)
    report = compare(corpus.test, profile)
    assert report["validity"]["valid"] > 0.95
    for row in report["statistics"]:
        assert row["val_overlap"] > 0.75, row["feature"]
        assert row["overlap"] > 0.75, row["feature"]
    assert report["originality"]["generated"]["share_identical"] < 0.1


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A folder of tunes and a small model trained on it for a moment."""
    from abcgen.train import TrainConfig, train

    folder = tmp_path_factory.mktemp("corpus")
    (folder / "tunes.abc").write_text("\n\n".join(TRAIN + VAL + [JIG_IN_A, ORIGINAL]) + "\n")
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(epochs=3, batch_size=2, seq_len=32, lr=2e-2, precision="fp32", device="cpu")
    train(folder, out, {"hidden": 32, "layers": 1, "dropout": 0.0}, config, force=True, progress=False)
    return folder, out / "last.pt"


def test_evaluate_command_prints_the_report_and_writes_json(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder, model = tiny_run
    args = [
        "evaluate",
        str(folder),
        "--model",
        str(model),
        "-n",
        "3",
        "--seed",
        "1",
        "--json",
        str(tmp_path / "r.json"),
        "-q",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "Validity" in result.stdout and "Originality" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["validity"]["tunes"] == 3
    assert report["sampling"]["seed"] == 1
    assert len(list((tmp_path / "cache" / "abcgen").glob("corpus-*.json"))) == 1


def test_evaluate_json_dash_prints_json_only(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder, model = tiny_run
    result = CliRunner().invoke(
        cli, ["evaluate", str(folder), "--model", str(model), "-n", "2", "--seed", "1", "--json", "-", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) >= {"validity", "statistics", "originality", "prediction"}


def test_evaluate_same_seed_same_report(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder, model = tiny_run
    args = ["evaluate", str(folder), "--model", str(model), "-n", "3", "--seed", "7", "-q"]
    first, second = (CliRunner().invoke(cli, args) for _ in range(2))
    assert first.exit_code == 0 and first.stdout == second.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "0"], "--temperature must be between 0.01 and 10"),
        (["-n", "0"], "-n must be at least 1"),
    ],
)
def test_evaluate_bad_options_give_one_line(tiny_run, tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder, model = tiny_run
    result = CliRunner().invoke(cli, ["evaluate", str(folder), "--model", str(model), *args])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {message}"


def test_evaluate_plots_without_matplotlib_fails_before_sampling(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    folder, model = tiny_run
    result = CliRunner().invoke(cli, ["evaluate", str(folder), "--model", str(model), "--plots", str(tmp_path / "p")])
    assert result.exit_code == 1
    assert "pip install 'abcgen[plots]'" in result.stderr
    assert not (tmp_path / "p").exists()


def test_evaluate_missing_corpus_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "nowhere")])
    assert result.exit_code == 2


def test_kl_is_finite_for_labels_only_one_side_uses():
    assert math.isfinite(kl_divergence(Counter(a=5, b=1), Counter(a=6)))
