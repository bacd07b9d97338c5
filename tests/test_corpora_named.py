"""Corpora by name: the ABC collections music21 ships in its package, and `corpus --list`."""

import json

import pytest
from click.testing import CliRunner

from abcgen.abc import check_tune
from abcgen.cli import cli
from abcgen.corpus import load_corpus
from abcgen.download import SHIPPED, corpus_files, known_corpora, music21_corpus_folder
from abcgen.errors import AbcgenError


def shipped_or_skip(name):
    try:
        return corpus_files(name)[1]
    except AbcgenError as error:
        pytest.skip(f"music21's corpus is not installed here: {error}")


@pytest.mark.parametrize("name", list(SHIPPED))
def test_each_shipped_collection_is_found_and_its_first_files_normalise(name):
    files = shipped_or_skip(name)
    raw = sum(
        path.read_text(encoding="latin-1").count("\nX:") + path.read_text(encoding="latin-1").startswith("X:")
        for path in files
    )
    assert raw == SHIPPED[name].tunes  # the registry's count is the files' count
    assert not any(path.name in SHIPPED[name].left_out for path in files)
    kept = []
    for path in files[:20]:  # Ryan's has one tune per file, and some are dropped
        try:
            kept += load_corpus(path).tunes
        except AbcgenError:
            continue
        if len(kept) >= 10:
            break
    assert kept
    for tune in kept[:40]:  # what is kept passes the strict check
        assert check_tune(tune).ok, tune


def test_a_collection_loads_by_name_through_the_cli():
    shipped_or_skip("airds-airs")
    result = CliRunner().invoke(cli, ["corpus", "airds-airs", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["name"] == "airds-airs" and stats["files"] == 6
    dropped = sum(stats["dropped"].values())
    assert stats["tunes"] + dropped == SHIPPED["airds-airs"].tunes and stats["tunes"] > 1000
    assert "dropped" in result.stderr and "fails the ABC check" in result.stderr


def test_list_shows_every_name_with_source_and_licence():
    result = CliRunner().invoke(cli, ["corpus", "--list"])
    assert result.exit_code == 0
    for row in known_corpora():
        assert row["name"] in result.stdout and row["licence"] in result.stdout
    assert {"nottingham", "oneills-1850", "ryans-mammoth", "airds-airs", "essen"} <= {
        row["name"] for row in json.loads(CliRunner().invoke(cli, ["corpus", "--list", "--json"]).stdout)
    }


def test_download_of_a_shipped_collection_downloads_nothing(tmp_path):
    shipped_or_skip("oneills-1850")
    result = CliRunner().invoke(cli, ["download", "oneills-1850", "--dest", str(tmp_path / "d")])
    assert result.exit_code == 0 and "nothing to download" in result.stderr
    assert str(music21_corpus_folder() / "oneills1850") in result.stderr
    assert not (tmp_path / "d").exists()


def test_unknown_names_and_missing_downloads_give_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no corpora/nottingham here
    for args, message in (
        (["corpus", "no-such-corpus"], "abcgen corpus --list"),
        (["corpus", "nottingham"], "abcgen download nottingham"),
        (["train", "no-such-corpus"], "abcgen corpus --list"),
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
