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
from abcgen.structure import Part, Structure, corpus_forms, structure_of


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


@pytest.fixture(scope="module")
def random_model():
    """The shipped model's vocabulary and shape with random weights: it wants nothing in particular."""
    shipped = load_checkpoint(PRETRAINED)
    torch.manual_seed(0)
    model = build_model(shipped.config).eval()
    return TuneModel(Checkpoint(model, shipped.vocab, shipped.meta))


def test_the_rules_hold_whatever_the_model_wants(random_model):
    tunes = random_model.generate(n=6, seed=1, check=False, meter="6/8", key="G", title="Random", length="1/8", structure="AABB",
                                  max_chars=3000)
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
