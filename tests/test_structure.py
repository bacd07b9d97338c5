"""The structure rules: forms as musicians write them, and tunes that keep them whatever
the model wants."""

import pytest
import torch
from click.testing import CliRunner

from abcgen.abc import check_tune, tune_form
from abcgen.checkpoint import Checkpoint, load_checkpoint
from abcgen.cli import cli
from abcgen.errors import AbcgenError
from abcgen.model import build_model
from abcgen.sample import PRETRAINED, TuneModel
from abcgen.structure import (
    BODY_CHARACTERS,
    STAFF_LINE_NOTES,
    BodyRules,
    Lexer,
    Part,
    Structure,
    corpus_forms,
    pickup_from,
    structure_of,
)


def test_forms_are_read_as_musicians_write_them():
    assert Structure.parse("AABB").parts == (Part(8, True), Part(8, True))
    assert Structure.parse("A16B16").parts == (Part(16, False), Part(16, False))
    assert Structure.parse("AAB").parts == (Part(8, True), Part(8, False))
    assert str(Structure.parse("A4A4BB")) == "A4A4BB"


@pytest.mark.parametrize("spec", ["", "A0", "A500", "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMN", "hello", "A-4"])
def test_an_impossible_form_is_refused_in_one_line(spec):
    with pytest.raises(AbcgenError) as error:
        Structure.parse(spec)
    assert "\n" not in str(error.value)


def test_the_cli_refuses_a_bad_structure_without_a_traceback():
    result = CliRunner().invoke(cli, ["sample", "--structure", "A500"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: part A of 'A500' has 500 bars; a part has 1 to 32"]


def test_a_tune_shows_its_structure():
    tune = "X:1\nT:t\nM:6/8\nL:1/8\nK:G\n" + "|:" + "GAB c2d|" * 7 + "G3 G3:|\n|:" + "d2d e2e|" * 7 + "g3 g3:|"
    assert structure_of(tune) == "AABB"
    assert corpus_forms([tune, tune]) == {"6/8": {"AABB": 2}}
    form = tune_form(tune)
    assert form.repeats_paired and form.section_lengths == [8, 8] and form.ends_on_tonic


HEAD = "X:1\nT:t\nM:4/4\nL:1/8\nK:G\n"


def bar_end_after(body: str, structure: str = "AABB", part_b: int | None = None):
    """What the rules say when the last bar of body has just ended (its `|` written);
    part_b: where in body the second part began."""
    rules = BodyRules(Structure.parse(structure), HEAD)
    rules.start(len(HEAD))
    if part_b is not None:
        rules.closed(len(HEAD) + part_b)
    text = HEAD + body
    rules.replay(text)
    return rules.bar_end(text, bar_start=text.rstrip("|").rfind("|") + 1), text


def test_a_part_that_began_with_a_pickup_closes_on_a_short_bar():
    # a quarter-note pickup, 7 bars, then a full last bar: cut after its first 3/4
    end, text = bar_end_after("d2|" + "GABc d2B2|" * 7 + "B2A2 G2 ^F2|")
    assert end.action == "shorten"
    assert text[text.rstrip("|").rfind("|") + 1 : end.cut].rstrip() == "B2A2 G2" and end.closing.startswith(":|")
    assert end.carry == "^F2|"  # the notes cut off lead into the next part as its pickup
    written = text[: text.rstrip("|").rfind("|") + 1] + "B2A2 G2" + end.closing + "d2|" + "GABc d2B2|" * 7 + "G6:|"
    assert check_tune(written).ok and tune_form(written).section_lengths == [8, 8]
    # no note ends at 3/4 of the bar: closed as written
    assert bar_end_after("d2|" + "GABc d2B2|" * 7 + "B2A3 G3|")[0].action == "close"
    # without a pickup a full last bar closes the part
    assert bar_end_after("GABc d2B2|" * 8)[0].action == "close"


def test_the_last_part_is_cut_only_where_it_ends_on_the_tonic():
    part_a = "d2|" + "GABc d2B2|" * 7 + "B2A2 G2:|\n|:"
    on_tonic, _ = bar_end_after(part_a + "d2|" + "GABc d2B2|" * 7 + "d2B2 G2 A2|", part_b=len(part_a))
    assert on_tonic.action == "shorten" and on_tonic.closing.startswith(":|") and on_tonic.carry == ""
    off_tonic, _ = bar_end_after(part_a + "d2|" + "GABc d2B2|" * 7 + "d2B2 A2 G2|", part_b=len(part_a))
    assert off_tonic.action != "shorten"


def test_a_short_bar_inside_a_part_takes_its_bar_line_back_and_goes_on():
    end, _ = bar_end_after("GABc d2B2|" * 3 + "GABc d2|")  # 6/8 of a 4/4 bar
    assert end.action == "extend"
    assert bar_end_after("GABc d2|")[0].action == "extend"  # a tune's pickup of 3/4 of a bar
    assert bar_end_after("Bc d2|")[0].action == "go on"  # of half a bar
    rules = BodyRules(Structure.parse("AABB"), HEAD)
    rules.start(len(HEAD))
    rules.replay(HEAD + "GABc d2B2|GABc d2")
    rules.bar_too_short = True
    assert "|" in rules.forbidden()
    for ch in ' "G"':  # a chord symbol is no note: still no bar line
        rules.feed(ch)
    assert "|" in rules.forbidden()
    rules.feed("B")
    assert "|" not in rules.forbidden()


def test_a_parts_first_bar_completes_the_bar_that_closed_the_part_before():
    short_close = "d2|" + "GABc d2B2|" * 7 + "B2A2 G2:|\n|:"  # closes on 3/4 of a bar
    full_close = "GABc d2B2|" * 8 + ":|\n|:"
    for before, first, action in [
        (short_close, "d2|", "go on"),  # the quarter the closing bar left
        (short_close, "GABc d2B2|", "rewrite"),  # a beat too many when played
        (short_close, "dB|", "go on"),
        (short_close, "d|", "rewrite"),
        (full_close, "GABc d2B2|", "go on"),
        (full_close, "d2|", "rewrite"),  # a pickup after a full bar: two beats too many
    ]:
        end, _ = bar_end_after(before + first, part_b=len(before))
        assert end.action == action, (before[-12:], first)


def test_only_whole_notes_are_carried_into_the_next_part():
    assert pickup_from("B2A2 G2 ", " ^F2") == "^F2|"
    assert pickup_from("B2A2 G2 ", '"D7"(3FGA') == '"D7"(3FGA|'  # a chord symbol and a tuplet are whole
    assert pickup_from("B2=F2 G2 ", "F2") == "=F2|"  # the bar's accidental, written on the note
    assert pickup_from("B2=F2 G2 ", "^FF") == "^FF|"  # its own accidental holds on
    for cut_off in ("", "  ", "z2", "(FG", "F)G", "{g}F", "F2-", '"D7', "F\\\nG"):
        assert pickup_from("B2A2 G2 ", cut_off) == "", cut_off


def test_a_closing_bar_is_cut_before_the_chord_symbol_and_decorations_of_the_note_cut_off():
    for last, closing, carry in [
        ('B2A2 G2 "D"F2|', "B2A2 G2", '"D"F2|'),
        ("B2A2 G2 {g}F2|", "B2A2 G2", ""),  # grace notes are not carried: dropped with the note
        ("B2A2 G2 ~F2|", "B2A2 G2", "~F2|"),
        ("B2A2 G2 [DF]2|", "B2A2 G2", "[DF]2|"),
    ]:
        end, text = bar_end_after("d2|" + "GABc d2B2|" * 7 + last)
        assert end.action == "shorten", last
        assert text[text.rstrip("|").rfind("|") + 1 : end.cut].rstrip() == closing and end.carry == carry, last


def test_a_parts_last_bars_are_not_left_on_a_staff_line_of_their_own():
    def rules_after(bars: int, then: str = "") -> BodyRules:
        body = "GABc d2B2|" * (bars - 3) + "\n" + "GABc d2B2|" * 3
        rules = BodyRules(Structure.parse("AABB"), HEAD)
        rules.start(len(HEAD))
        rules.replay(HEAD + body)
        assert rules.bar_end(HEAD + body).action == "go on"
        for ch in then:
            rules.lexer.feed(ch)
        return rules

    assert "\n" not in rules_after(4).forbidden()  # 4 bars left of 8
    assert "\n" in rules_after(4, then="\nG2 A2|").forbidden()  # a line of two notes
    assert "\n" not in rules_after(4, then="\nGABc d2B2|").forbidden()
    assert {"\n", "\\"} <= rules_after(4, then="\nGABc d2B2|GA").forbidden()  # inside a bar
    assert "\n" in rules_after(6).forbidden()  # 2 left: they would make a line of their own
    rewound = rules_after(6)
    rewound.replay(HEAD + "GABc d2B2|" * 3 + "\n" + "GABc d2B2|" * 3)  # the next bar written again
    assert "\n" in rewound.forbidden()
    assert "\n" in rules_after(7, then=" ").forbidden()
    assert rules_after(6, then="\\").forbidden() == BODY_CHARACTERS - {"\n"}  # `\` keeps its line end


def lexer_after(text: str) -> Lexer:
    lexer = Lexer()
    for ch in text:
        lexer.feed(ch)
    return lexer


def test_no_empty_bar_and_no_staff_line_too_full_for_abcm2ps():
    assert "|" in lexer_after("GABc d2B2|\n").forbidden(False)  # `|\n|` would be an empty bar
    assert "|" in lexer_after('GABc d2B2| "G"').forbidden(False)
    assert "|" not in lexer_after("GABc d2B2|d").forbidden(False)
    full = "GABc dBAG|" * (STAFF_LINE_NOTES // 8)
    for joined in (full, full[:20] + "\\\n" + full[20:]):  # a continued line is one staff line
        allowed = {"G", "\n", "\\", " "} - rules_at_end(joined).forbidden()
        assert allowed == {"\n"}, joined
    assert "G" not in rules_at_end(full[:-10] + "\n" + full[-10:]).forbidden()  # 14 notes: go on
    two_bars, busy = "GABc dBAG|" * 2 + "\n", "G/A/B/c/ d/B/A/G/ G/A/B/c/ d/B/A/G/|"  # 16 notes
    last_two = rules_at_end(two_bars + full)  # 6 bars written, the line full at 32 notes
    assert "G" not in last_two.forbidden() and "\n" in last_two.forbidden()  # the last 2 bars join it
    assert rules_at_end(two_bars + "GABc dBAG|" * 2 + busy * 2).forbidden() == BODY_CHARACTERS - {"\n"}  # 48


def rules_at_end(body: str) -> BodyRules:
    """The rules after body, its last bar's end judged (an 8-bar part of AABB in 4/4)."""
    rules = BodyRules(Structure.parse("AABB"), HEAD)
    rules.start(len(HEAD))
    rules.replay(HEAD + body)
    if body.endswith("|"):
        assert rules.bar_end(HEAD + body).action == "go on"
    return rules


def test_the_lexer_keeps_tuplets_lengths_grace_notes_and_chord_symbols_whole():
    assert {"(", "|", "\n"} <= lexer_after("GA(3B").forbidden(False)  # two notes of the (3 to come
    assert "|" not in lexer_after("GA(3Bcd").forbidden(False)
    assert "(" in lexer_after("GA(3").forbidden(False) and "/" in lexer_after("GA(3").forbidden(False)
    assert "/" in lexer_after("GA/2").forbidden(False) and "/" not in lexer_after("GA/").forbidden(False)
    assert {"|", "\n", "("} <= lexer_after("G{ag").forbidden(False)
    assert lexer_after("G{agag").forbidden(False) == BODY_CHARACTERS - {"}"}
    assert "m" in lexer_after('G"').forbidden(False) and "A" not in lexer_after('G"').forbidden(False)
    assert '"' not in lexer_after('G"Abbbbbbb').forbidden(False) and "m" in lexer_after('G"Abbbbbbb').forbidden(False)


def test_every_chord_symbol_the_check_knows_can_be_written():
    from abcgen.abc import CHORD_SYMBOL
    from abcgen.structure import CHORD_CHARACTERS

    kinds = "m 7 m7 dim 6 aug m6 aug7 maj7 M7 dim7 9 m9 sus4 sus 7sus4 m7b5 + 11 5".split()
    for symbol in ("C#" + kind + "/F#" for kind in kinds):
        assert CHORD_SYMBOL.fullmatch(symbol) and set(symbol) <= CHORD_CHARACTERS, symbol
    assert CHORD_SYMBOL.fullmatch("Bbm/e") and set("Bbm/e") <= CHORD_CHARACTERS


def test_a_chord_symbol_left_open_cannot_swallow_a_bar_line():
    inside = lexer_after('GABc "Edim').forbidden(False)
    assert {"|", " ", "\n"} <= inside and '"' not in inside  # close it first


def test_a_slur_still_open_ends_on_the_parts_last_note():
    end, text = bar_end_after("GABc (d2B2|" + "GABc d2B2|" * 7)
    assert (end.action, end.closing) == ("close", "):|\n|:")
    closed = text[:-1] + "):|\n|:" + "GABc d2B2|" * 7 + "G8:|"
    assert check_tune(closed).ok


@pytest.fixture(scope="module")
def random_model():
    """The shipped model's vocabulary and shape with random weights: it wants nothing in particular."""
    shipped = load_checkpoint(PRETRAINED)
    torch.manual_seed(0)
    model = build_model(shipped.config).eval()
    return TuneModel(Checkpoint(model, shipped.vocab, shipped.meta))


def test_the_rules_hold_whatever_the_model_wants(random_model):
    tunes = random_model.generate(
        n=6, seed=1, check=False, meter="6/8", key="G", title="Random", length="1/8", structure="AABB", max_chars=3000
    )
    for tune in tunes:
        result = check_tune(tune)
        # Random weights rarely fill a bar and may never end one; once the rewinds are spent
        # a bar may keep a bad length, tie or character (--check then writes the tune
        # again), but repeats and endings always pair and the tune always ends closed.
        assert result.rule not in ("repeat", "ending", "end", "field"), (result.reason, tune)
        assert tune_form(tune).repeats_paired or result.tune is None


def test_the_shipped_model_writes_the_form_asked_for():
    model = TuneModel(load_checkpoint(PRETRAINED))
    tunes = model.generate(n=4, seed=3, check=False, meter="4/4", structure="AABBCC")
    for tune in tunes:
        assert check_tune(tune).ok, tune
        assert structure_of(tune) == "AABBCC", tune
        assert tune_form(tune).ends_on_tonic
