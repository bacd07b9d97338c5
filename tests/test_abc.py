"""The shared ABC check: tunes with known answers, and the real corpus when present."""

import time
from collections import Counter
from fractions import Fraction

import pytest

from abcgen.abc import check_tune, format_length, header_fields, read_tune, split_tunes

HEAD = "X:1\nT:Test\nM:{meter}\nL:1/8\nK:{key}\n"


def tune(body, meter="6/8", key="G"):
    return HEAD.format(meter=meter, key=key) + body


# ---------------------------------------------------------------- text helpers


def test_split_tunes_drops_preamble_and_keeps_x_lines():
    text = "% a file comment\n\nX:1\nT:One\nK:G\nGAB|\n\n\nX: 2\nT:Two\nK:D\nDEF|\n"
    tunes = split_tunes(text)
    assert tunes == ["X:1\nT:One\nK:G\nGAB|", "X: 2\nT:Two\nK:D\nDEF|"]


def test_split_tunes_of_text_without_tunes_is_empty():
    assert split_tunes("no tunes here\n") == []


def test_header_fields_stop_at_first_key_and_keep_first_value():
    text = "X:3\nT:Main title\nT:Other title\n% comment\nM:6/8\nL:1/8\nK:Ador\nP:A\nABc|"
    assert header_fields(text) == {"X": "3", "T": "Main title", "M": "6/8", "L": "1/8", "K": "Ador"}


def test_format_length_uses_the_meter_denominator():
    assert format_length(3, 8) == "6/8"
    assert format_length(2.5, 8) == "5/8"
    assert format_length(4, 4) == "4/4"
    assert format_length(0.125 * 31, 4) == "31/32"


# ---------------------------------------------------------------- valid tunes


def test_a_plain_jig_passes_with_facts():
    result = check_tune(tune("GAB c2d|e2d B2G|A2B c2A|G3 G3|]"))
    assert result.ok and result.reason is None
    assert (result.n_bars, result.n_notes) == (4, 15)
    assert (result.meter, result.key, result.title) == ("6/8", "G", "Test")


def test_pickup_and_short_last_bar_pass():
    assert check_tune(tune("D|GAB c2d|e2d B2G|A2B c2A|G3 G2|]")).ok


def test_short_end_of_repeated_part_and_pickup_into_next_part_pass():
    body = "D|GAB c2d|e2d B2G|A2B c2A|G3 G2:|\n|:B|d2d e2e|d2B G2B|A2B c2A|G3 G2:|"
    assert check_tune(tune(body)).ok


def test_first_and_second_endings_may_end_short():
    body = "D|GAB c2d|e2d B2G|[1 A2B c2A|G3 G2:|[2 A2B c2A|G3 G3||"
    assert check_tune(tune(body)).ok
    body = "D|GAB c2d|e2d B2G|A2B c2A|G3 G2|1 D:|2 GAB||"
    assert check_tune(tune(body)).ok


def test_double_repeat_after_a_capital_note_is_read_as_a_barline():
    # music21 alone would read "A::" as an A: field line and lose the rest of the line.
    body = "GAB c2d|e2d B2A::d2d e2e|d2B G2B:|"
    assert check_tune(tune(body)).ok


def test_tuplets_broken_rhythm_grace_notes_and_chords_take_their_time():
    body = "(3GAB c2 d>e f2|{g}f2 [GB]2 d/2e/2f g2|]"
    assert check_tune(tune(body, meter="4/4")).ok


def test_meter_change_on_a_field_line_is_honoured():
    body = "GABc d2e2|\nM:3/4\nd2 B2 G2|A2 B2 c2|\nM:4/4\nG8|]"
    assert check_tune(tune(body, meter="4/4")).ok


def test_inline_meter_change_is_honoured():
    body = "GABc d2e2|[M:3/4] d2 B2 G2|A2 B2 c2|[M:4/4] G8|]"
    assert check_tune(tune(body, meter="4/4")).ok


def test_free_meter_is_not_checked():
    assert check_tune(tune("GABcdefg|a|bag|]", meter="none")).ok


# ---------------------------------------------------------------- invalid tunes


def test_a_short_bar_in_the_middle_is_flagged_with_its_number():
    result = check_tune(tune("GAB c2d|e2d B2|A2B c2A|G3 G3|]"))
    assert not result.ok
    assert result.reason == "bar 2 has 5/8, meter 6/8 asks for 6/8"


def test_a_long_bar_is_flagged_even_where_short_bars_are_allowed():
    result = check_tune(tune("GAB c2d e|e2d B2G|A2B c2A|G3 G3|]"))
    assert result.reason == "bar 1 has 7/8, meter 6/8 asks for 6/8"


def test_wrong_bar_after_a_meter_change_is_measured_against_the_new_meter():
    body = "GABc d2e2|[M:3/4] d2 B2 G2|A2 B2 c2 d2|A2 B2 c2|[M:4/4] G8|]"
    result = check_tune(tune(body, meter="4/4"))
    assert result.reason == "bar 3 has 4/4, meter 3/4 asks for 3/4"


def test_unreadable_tune_says_music21_could_not_parse_it():
    result = check_tune(tune("GAB c2d|e2d [B2G"))
    assert not result.ok
    assert result.reason == "bar 2: a chord [ never closed"


def test_two_accidentals_on_one_note_are_not_abc():
    result = check_tune(tune("d=^d2 c4 z|]", meter="4/4", key="D"))
    assert result.reason == "bar 1: '=' is not ABC"


def test_tune_without_length_or_meter_takes_the_abc_defaults():
    result = check_tune("X:1\nT:No meter\nK:G\nGAB|]")
    assert result.ok and result.tune.bars[0].expected is None  # free meter
    assert result.tune.notes[0][1] == Fraction(1, 2)  # L:1/8 by default


@pytest.mark.parametrize("body", ["", "z6|z6|]", '"G"|'])
def test_tune_without_notes_is_flagged(body):
    assert check_tune(tune(body)).reason == "it has no notes"


def test_tune_number_must_be_a_number():
    result = check_tune(tune("GAB c2d|]").replace("X:1", "X:1a"))
    assert result.reason == "X: should be a tune number, not '1a'"


def test_check_result_is_falsy_when_the_tune_fails():
    assert not check_tune("")
    assert check_tune(tune("GAB c2d|]"))


# ---------------------------------------------------------------- what read_tune gives evaluation


def test_read_tune_gives_pitches_durations_and_tonic():
    parsed = read_tune(tune("G>A B/2c/2z|]", meter="3/8", key="D"))
    (bar,) = parsed.bars
    assert bar.notes == ((67, 0.75), (69, 0.25), (71, 0.25), (73, 0.25), (None, 0.5))
    assert bar.tonic == 2 and bar.meter == "3/8"


# ---------------------------------------------------------------- the real corpus


def _corpus_tunes(nottingham_dir):
    tunes = []
    for path in sorted(nottingham_dir.glob("*.abc")):
        tunes += split_tunes(path.read_text(encoding="latin-1"))
    return tunes


def test_raw_nottingham_tunes_fail_only_for_what_the_normaliser_repairs_or_drops(nottingham_dir):
    tunes = _corpus_tunes(nottingham_dir)
    assert len(tunes) == 1034
    started = time.perf_counter()
    rules = Counter(result.rule for result in map(check_tune, tunes) if not result.ok)
    elapsed = time.perf_counter() - started
    # repeat spellings and missing final bars are repaired; the rest leave the training set
    assert set(rules) <= {"repeat", "end", "section", "pickup", "tie", "bar length", "ending", "syntax"}, rules
    assert rules["repeat"] + rules["end"] > 200
    assert elapsed / len(tunes) < 0.05  # a loose guard; the real figure lives in bench/


def test_nearly_all_normalised_nottingham_tunes_pass(nottingham_dir):
    corpus_module = pytest.importorskip("abcgen.corpus")
    corpus = corpus_module.load_corpus(nottingham_dir)
    tunes = corpus.train + corpus.val + corpus.test
    failures = [result.reason for result in map(check_tune, tunes) if not result.ok]
    assert len(failures) / len(tunes) <= 0.005, failures


# ---------------------------------------------------------------- the strict rules, one defect each

STRICT_DEFECTS = {
    "|: inside an open repeat": ("|:GAB c2d|:e2d B2G:|", "repeat"),
    "|: never closed": ("|:GAB c2d|e2d B2G|]", "repeat"),
    "a second :| with no |:": ("GAB c2d|e2d B2G:|A2B c2A|G3 G3:|", "repeat"),
    "[2 alone": ("|:GAB c2d|e2d B2G|[2 A2B c2A:|", "ending"),
    "[1 with no [2": ("|:GAB c2d|e2d B2G|[1 A2B c2A:|", "ending"),
    "tie to a bar line and another pitch": ("GAB c2d-|e2d B2G|]", "tie"),
    "tie to nothing": ("GAB c2d|e2d B2G-|]", "tie"),
    "backslash in the middle of a line": ("GAB c2d|\\e2d B2G|]", "syntax"),
    "chord symbol left open": ('GAB c2d|"6G4:|', "syntax"),
    "letters that are not ABC": ("GAB c2d|t2 e2d B|]", "syntax"),
    "a second tune inside this one": ("GAB c2d|e2d B2G|]\nX:2\nK:G\nGAB c2d|]", "field"),
    "stray ]": ("GAB c2d]|e2d B2G|]", "bracket"),
    "stray )": ("GAB c2d)|e2d B2G|]", "bracket"),
    "stray }": ("GAB c2d}|e2d B2G|]", "bracket"),
    "grace group never closed": ("{g GAB c2d|e2d B2G|]", "bracket"),
    "no final bar line": ("GAB c2d|e2d B2G|", "end"),
    "section not a whole number of bars": ("GAB c2d|e2d B2G|A2B c2A|G3 G2||d2d e2e|d2B G2B|]", "section"),
    "a pickup that does not complete the closing bar": ("D|GAB c2d|e2d B2:|\n|:d2|e2d B2G|A2B G2:|", "pickup"),
    "a full bar after a short closing bar": ("D|GAB c2d|e2d B2:|\n|:d2e B2G|A2B G3:|", "pickup"),
    "a pickup after a full closing bar": ("GAB c2d|e2d B3:|\n|:D|d2e B2G|A2B G2:|", "pickup"),
    "a short closing bar after a two-bar ending, then a full bar": (
        "|:GAB c2d|e2d B2G|BAG [1 A3:|[2 A3|G3 G2||d2e B2G|A2B G3|]",
        "pickup",
    ),
    "a shorthand decoration with no note before a bar line": ("GAB c2d|e2d B2G ~|A2B c2A|G3 G3|]", "syntax"),
    "grace notes with no note to follow at the end": ("GAB c2d|e2d B2G|A2B c2A|G3 G3{g}|]", "syntax"),
    "note beyond the MIDI range": ("C,,,,,,,,2 B c2d|e2d B2G|]", "range"),
    "zero length": ("G/0AB c2d|e2d B2G|]", "syntax"),
    "a length divided by 3": ("G/3A/B c2d|e2d B2G|]", "syntax"),
    "a chord symbol abc2midi does not know": ('GAB "A77"c2d|e2d B2G|]', "syntax"),
    "a chord symbol with a length for a bass": ('GAB "Em/2"c2d|e2d B2G|]', "syntax"),
    "an escaped quote in a chord symbol": ('GAB "D\\"c2d|e2d B2G|]', "syntax"),
    "two ties in a row": ("GAB c2d--|d2d B2G|]", "tie"),
    "a space inside a chord": ("GAB [c B]2d|e2d B2G|]", "syntax"),
    "a tuplet inside a tuplet": ("GAB c2d|(3e(3dcB B2G|]", "bracket"),
    "a tuplet cut by a bar line": ("GAB c2d|e2d B2(3||A2B c2A|G3 G3|]", "bracket"),
    "a tuplet cut by the end of a line": ("GAB c2d|e2d (3B2\nGA B2G|]", "bracket"),
}


@pytest.mark.parametrize("name", STRICT_DEFECTS)
def test_the_strict_check_refuses_each_kind_of_defect(name):
    body, rule = STRICT_DEFECTS[name]
    result = check_tune(tune(body))
    assert not result.ok and result.rule == rule, (name, result.reason)
    assert result.reason.startswith("bar ")  # the reason names the bar


@pytest.mark.parametrize(
    "body",
    [
        "|:GAB c2d|e2d B2G:|\n|:A2B c2A|G3 G3:|",  # two repeated parts
        "GAB c2d|e2d B2G:|\n|:A2B c2A|G3 G3:|",  # the first repeat from the start
        "|:GAB c2d|[1 e2d B2G:|[2 e2d B3||",  # first and second endings
        "|:GAB c2d|e2d B2G|1 A2B c2A:|2 A2B c3|]",  # |1 and :|2 spellings
        "GAB c2d-|d2d B2G|]",  # a tie across a bar line to the same pitch
        '"G"GAB "D7"c2d|{ag}e2d (B2G)|!trill!A2B ~c2A|+fermata+G3 G3|]',
        "GAB c2d|e2d B2G|\\\nA2B c2A|G3 G3|]",  # a line continuation
        "(3GAB c2d|e2d B2G|z6|Z2|]",  # a tuplet and rests of several bars
        "D|GAB c2d|e2d B2:|\n|:D|e2d B2G|A2B G2:|",  # each part's pickup completes the bar before
        "|:GAB c2d|e2d B3:|\nd3 |:efg|a2g f2e|d3 d3:|",  # a bar split by |: where a part begins
        "|:GAB c2d|BAG [1 A3:|[2 AAB||d2e B2G|A2B G3|]",  # an ending that completes its bar
        "GAB c2d{g}|e2d B2G|!segno!|A2B c2A|G3 G3|]",  # grace notes lead over a bar line
    ],
)
def test_the_strict_check_accepts_well_formed_abc(body):
    result = check_tune(tune(body))
    assert result.ok, result.reason


def test_a_header_play_order_leaves_the_joints_between_parts_unjudged():
    parts = "P:A\nD|GAB c2d|e2d B2||\nP:B\nd2e B2G|A2B G3|]\n"  # B is not played after A
    assert check_tune(HEAD.format(meter="6/8", key="G") + parts).rule == "pickup"
    result = check_tune("X:1\nT:Test\nP:AAB\nM:6/8\nL:1/8\nK:G\n" + parts)
    assert result.ok, result.reason


def test_an_absurd_meter_is_checked_quickly():
    text = "X:1\nT:Wide\nM:2000/8\nL:1/8\nK:G\n" + "GABc" * 500 + "|]\n"
    started = time.perf_counter()
    check_tune(text)
    check_tune(text.replace("M:2000/8", "M:4/4").replace("|]", "[M:99999999/4]GAB|]"))
    assert time.perf_counter() - started < 2  # seconds, a loose guard; once 98 s with music21
