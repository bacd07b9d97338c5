"""abcgen.abctools: what abc2midi, abcm2ps, music21 and abcjs say about a tune.

Each test that needs an external tool skips, saying why, where the tool is missing."""

import shutil
from collections import Counter

import pytest

from abcgen import abctools

HEADER = "X:1\nT:Fixture\nM:4/4\nL:1/8\nK:G\n"
CLEAN = HEADER + '|:"G"GABc d2B2|"C"c2A2 "D"B2G2:|\n'
UNCLOSED_CHORD = HEADER + '|:GABc d2B2|"6G4:|\n'
TIE_TO_NOTHING = HEADER + "GABc d2A2-|B2GA B4|]\n"
OPEN_REPEAT = HEADER + "|:GABc d2B2|c2A2 B2G2|]\n"
SHORT_BAR = HEADER + "GABc d4|B2c2 d2|c8|]\n"  # a 6/8 bar in 4/4: a warning, not an error
BROKEN = {"unclosed chord symbol": UNCLOSED_CHORD, "tie to nothing": TIE_TO_NOTHING, "|: never closed": OPEN_REPEAT}

needs_abc2midi = pytest.mark.skipif(
    shutil.which("abc2midi") is None, reason="abc2midi is not installed (apt-get install abcmidi)"
)
needs_abcm2ps = pytest.mark.skipif(
    shutil.which("abcm2ps") is None, reason="abcm2ps is not installed (apt-get install abcm2ps)"
)
needs_abcjs = pytest.mark.skipif(
    not abctools.abcjs_available(), reason="node or bench/abcjs/node_modules is missing (npm install in bench/abcjs)"
)


def test_available_tools_are_the_installed_ones():
    tools = abctools.available_tools()
    assert set(tools) <= {"abc2midi", "abcm2ps", "music21"}
    assert ("abc2midi" in tools) == (shutil.which("abc2midi") is not None)
    assert set(abctools.tool_problems(CLEAN)) == set(tools)


def test_clean_tune_has_no_problems_in_any_tool():
    problems = abctools.tool_problems(CLEAN)
    assert problems == {name: [] for name in abctools.available_tools()}
    assert abctools.accepted(CLEAN)


@needs_abc2midi
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_abc2midi_reports_an_error(name):
    errors = abctools.tool_problems(BROKEN[name])["abc2midi"]
    assert errors and all(line.startswith("Error") for line in errors)
    assert not abctools.accepted(BROKEN[name])


@needs_abc2midi
def test_abc2midi_keeps_warnings_apart_from_errors():
    said = abctools.tool_messages(SHORT_BAR)["abc2midi"]
    assert said.errors == []
    assert said.warnings and all(line.startswith("Warning") for line in said.warnings)
    assert abctools.tool_warnings(SHORT_BAR)["abc2midi"] == said.warnings


@needs_abcm2ps
def test_abcm2ps_flags_the_bad_tie():
    errors = abctools.tool_problems(TIE_TO_NOTHING)["abcm2ps"]
    assert any("error:" in line and "tie" in line.lower() for line in errors)


def test_a_tool_that_hangs_counts_as_an_error(monkeypatch):
    monkeypatch.setattr(abctools, "TIMEOUT", 0.5)
    lines, failed = abctools.run_tool(["sleep", "5"], abctools.Path("."))
    assert lines == [] and failed == ["sleep timed out after 0.5 s"]


def test_error_kinds_group_lines_that_differ_only_in_place():
    assert (
        abctools.error_kind("Error in line-char 6-12 : Missing :| at end of tune")
        == abctools.error_kind("Error in line-char 9-40 : Missing :| at end of tune")
        == "Missing :| at end of tune"
    )
    assert abctools.error_kind("tune.abc:6:7: error: Bad tie") == "Bad tie"
    assert abctools.error_kind('Music Line:6:1: Missing the closing quote:  "6G4:|') == "Missing the closing quote"
    assert (
        abctools.error_kind("Warning in line-char 6-13 : Track 0 Bar 1 has 7/2 units") == "Track N Bar N has N/N units"
    )


def test_summarise_counts_error_free_tunes_per_tool_and_together():
    tunes = [CLEAN, *BROKEN.values()]
    summary = abctools.summarise(tunes, abcjs=False)
    reports = [abctools.tool_problems(tune) for tune in tunes]
    assert summary["tunes"] == len(tunes)
    for name in abctools.available_tools():
        result = summary["tools"][name]
        assert result["error_free"] == sum(not report[name] for report in reports)
        assert isinstance(result["errors"], Counter)
    assert summary["tools"]["all"]["error_free"] == sum(map(abctools.accepted, tunes))
    assert "abcjs" not in summary["tools"]


@needs_abc2midi
def test_summarise_counts_each_kind_once_per_tune():
    summary = abctools.summarise([OPEN_REPEAT, OPEN_REPEAT, CLEAN], abcjs=False)
    assert summary["tools"]["abc2midi"]["errors"]["Missing :| at end of tune"] == 2
    assert summary["tools"]["abc2midi"]["error_free"] == 1


@needs_abcjs
def test_abcjs_warns_about_the_unclosed_chord_symbol_only():
    said = abctools.abcjs_warnings([CLEAN, UNCLOSED_CHORD])
    assert said[0] == []
    assert len(said[1]) == 1 and "<" not in said[1][0]  # abcjs's HTML markup is removed
    assert "chord symbol" in said[1][0]


def test_abcjs_warnings_is_none_without_node_modules(monkeypatch, tmp_path):
    monkeypatch.setattr(abctools, "ABCJS", tmp_path)
    assert abctools.abcjs_warnings([CLEAN]) is None


@needs_abcm2ps
def test_tools_can_be_chosen():
    assert set(abctools.tool_messages(TIE_TO_NOTHING, ["abcm2ps", "absent"])) == {"abcm2ps"}
    summary = abctools.summarise([CLEAN, TIE_TO_NOTHING], abcjs=False, tools=["abcm2ps"])
    assert set(summary["tools"]) == {"abcm2ps", "all"}
    assert summary["tools"]["all"]["error_free"] == 1
