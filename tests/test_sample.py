import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from abcgen.abc import check_tune
from abcgen.cli import cli
from abcgen.corpus import load_corpus
from abcgen.errors import AbcgenError
from abcgen.sample import Draft, SamplingRun, TuneModel, close_cut_tune, header_plan, load_model
from abcgen.shaping import draw, next_char_probs, pitch_mask, pitch_nucleus, softmax
from abcgen.train import TrainConfig, train
from abcgen.watch import Segment, Snapshot, header_value_ok, watch_bars


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small model trained for a few seconds on the test tunes: it writes ABC-like text."""
    from tests.conftest import FIXTURE_TUNES

    folder = tmp_path_factory.mktemp("corpus")
    (folder / "tunes.abc").write_text(FIXTURE_TUNES)
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(epochs=40, batch_size=4, seq_len=32, lr=2e-2, weight_decay=0.0, precision="fp32", device="cpu")
    # Characters only: in a few seconds the form classes spread its few tunes too thin to
    # learn headers (tests/test_form.py covers sampling with them).
    train(folder, out, {"hidden": 48, "layers": 1, "dropout": 0.0, "form": 0}, config, force=True, progress=False)
    return out / "last.pt"


def generate(model_path, **options):
    return load_model(model_path).generate(**options)


def test_header_is_complete_and_in_standard_order(tiny_model):
    tunes = generate(tiny_model, n=3, seed=1, check=False, max_chars=400)
    assert len(tunes) == 3
    for number, tune in enumerate(tunes, 1):
        fields = [line[:2] for line in tune.splitlines() if line[:2] in ("X:", "T:", "M:", "L:", "K:")]
        first = [name for i, name in enumerate(fields) if name not in fields[:i]]
        assert first == ["X:", "T:", "M:", "L:", "K:"], tune  # a second T: (a subtitle) may follow
        assert fields[:2] == ["X:", "T:"]
        assert tune.startswith(f"X:{number}\n")


def test_same_seed_same_tunes_and_other_seed_differs(tiny_model):
    first = generate(tiny_model, n=4, seed=7, check=False)
    assert first == generate(tiny_model, n=4, seed=7, check=False)
    assert first != generate(tiny_model, n=4, seed=8, check=False)


def test_musicians_controls_are_in_the_header(tiny_model):
    controls = dict(meter="6/8", key="D", title="Seaside", length="1/8")
    tune = generate(tiny_model, seed=2, check=False, **controls)[0]
    assert tune.splitlines()[:4] == ["X:1", "T:Seaside", "M:6/8", "L:1/8"]
    # The tiny model may write header lines of its own into the body (a later K: wins when
    # the tune is tidied), so the key is checked in the text as written.
    options = SamplingRun(0.8, None, 1.0, 400, True, True, np.random.default_rng(2))
    [(text, _)] = load_model(tiny_model).sample_batch(1, header_plan(**controls), options)
    assert text.startswith("X:1\nT:Seaside\nM:6/8\nL:1/8\nK:D\n")


def test_prime_with_bars_follows_the_header(tiny_model):
    tune = generate(tiny_model, seed=3, key="G", prime='|:"G"GAB', check=False)[0]
    body = tune.split("K:G\n", 1)[1]
    assert body.startswith('|:"G"GAB')


def test_prime_with_unknown_characters_names_them(tiny_model):
    with pytest.raises(AbcgenError, match="'@'"):
        generate(tiny_model, prime="|:GAB@")


def test_unseen_meter_warns(tiny_model):
    model = load_model(tiny_model)
    model.generate(meter="3/2", seed=1, check=False)
    assert any("3/2" in w for w in model.warnings)
    model.generate(meter="4/4", seed=1, check=False, max_chars=200)  # each call keeps its own warnings
    assert not any("3/2" in w for w in model.warnings)


def test_max_chars_cuts_after_last_complete_bar():
    text = "X:1\nT:t\nM:4/4\nL:1/8\nK:G\nGABc dedc|BAGF GABc|de"
    assert close_cut_tune(text).endswith("|BAGF GABc|]")


def test_stream_follows_its_plan():
    draft = Draft(plan=header_plan(title="T1", meter=None, length="1/8", key="G"))
    draft.next_segment()
    for ch in "X:1\nT:T1\nM:" + "3/4\n" + "L:1/8\nK:G\n" + "abc\n\nzzz":
        if not draft.done:
            draft.feed(ch, max_chars=1000)
    assert draft.done and not draft.cut
    assert draft.text == "X:1\nT:T1\nM:3/4\nL:1/8\nK:G\nabc"


def test_check_regenerates_failing_tunes(tiny_model, monkeypatch):
    import abcgen.abc
    import abcgen.sample

    calls = []

    def first_call_fails(text):
        calls.append(text)
        return abcgen.abc.CheckResult(ok=len(calls) != 1, reason="bar 1 is too long")

    monkeypatch.setattr(abcgen.sample, "check_tune", first_call_fails)
    messages = []
    tunes = generate(tiny_model, n=2, seed=1, retries=3, fix_bars=False, log=messages.append)
    assert len(tunes) == 2 and len(calls) == 3
    assert messages == ["regenerated 1 tune(s) that failed the ABC check (1 with a bar of the wrong length)"]


def test_batched_generation_writes_every_tune_whole(tiny_model):
    model = load_model(tiny_model)
    batch = model.generate(n=5, seed=4, check=False, max_chars=300)
    assert [t.split("\n", 1)[0] for t in batch] == [f"X:{i}" for i in range(1, 6)]
    for tune in batch:  # each its own tune: one header, in order, then a body of its own
        assert re.match(r"X:\d+\nT:.*\nM:.*\nL:1/8\nK:.*\n", tune), tune
        assert tune.count("X:") == 1 and tune.split("\nK:", 1)[1].partition("\n")[2].strip(), tune


def test_score_reports_loss_and_accuracy(tiny_model, tiny_abc):
    corpus = load_corpus(tiny_abc)
    result = load_model(tiny_model).score(corpus.train)
    assert 0 < result["loss"] < 5 and 0 < result["accuracy"] <= 1
    assert result["bpc"] == pytest.approx(result["loss"] / 0.6931471805599453)


def test_cli_writes_only_abc_to_stdout(tiny_model, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["sample", "--model", str(tiny_model), "-n", "2", "--seed", "5", "--no-check", "--meter", "6/8", "--key", "D"],
    )
    assert result.exit_code == 0, result.output
    tunes = result.stdout.strip("\n").split("\n\n")
    assert len(tunes) == 2 and all("M:6/8\nL:" in t and "\nK:D" in t for t in tunes)
    out = tmp_path / "t.abc"
    again = runner.invoke(
        cli,
        [
            "sample",
            "--model",
            str(tiny_model),
            "-n",
            "2",
            "--seed",
            "5",
            "--no-check",
            "--meter",
            "6/8",
            "--key",
            "D",
            "-o",
            str(out),
        ],
    )
    assert again.exit_code == 0 and out.read_text() == result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "0"], "--temperature must be between 0.01 and 10"),
        (["--temperature", "-1"], "--temperature must be between 0.01 and 10"),
        (["--temperature", "1e-45"], "--temperature must be between 0.01 and 10"),
        (["--temperature", "inf"], "--temperature must be between 0.01 and 10"),
        (["--top-k", "0"], "--top-k must be at least 1"),
        (["--max-chars", "20"], "--max-chars must be at least 100"),
        (["--meter", "abc"], "--meter 'abc' is not an ABC meter"),
        (["--key", "Xyz"], "--key 'Xyz' is not an ABC key"),
        (["--key", "D\nX:2"], "--key must be one line"),
        (["--length", "foo"], "--length must be a unit note length"),
        (["--length", "3/8"], "--length must be a unit note length"),
        (["--prime", "@/no/such/file"], "does not exist"),
        (["--model", "/no/such/model.pt"], "does not exist"),
        (["--retries", "-1"], "--retries must be at least 0"),
        (["--prime", "X:1\nT:Mine\nM:6/8\nK:D\n", "--meter", "3/4"], "--prime starts with its own header"),
    ],
)
def test_sample_bad_options_give_one_line(tiny_model, args, message):
    model_args = [] if "--model" in args else ["--model", str(tiny_model)]
    result = CliRunner().invoke(cli, ["sample", *model_args, *args])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output


def test_model_from_environment_variable(tiny_model, monkeypatch):
    monkeypatch.setenv("ABCGEN_MODEL", str(tiny_model))
    result = CliRunner().invoke(cli, ["sample", "--seed", "1", "--no-check", "-q"])
    assert result.exit_code == 0 and result.stdout.startswith("X:1\n")


def test_sample_export_writes_files_beside_the_abc(tiny_model, tmp_path, monkeypatch):
    import abcgen.export

    seen = {}

    def fake_export(text, out_dir, formats, **options):
        seen.update(text=text, out_dir=out_dir, formats=formats)
        return abcgen.export.ExportReport(tunes=1, written=[tmp_path / "001-x.mid"])

    monkeypatch.setattr(abcgen.export, "export_tunes", fake_export)
    result = CliRunner().invoke(
        cli,
        ["sample", "--model", str(tiny_model), "--seed", "1", "--no-check", "--export", str(tmp_path), "-f", "midi"],
    )
    assert result.exit_code == 0, result.output
    assert seen["text"] == result.stdout and seen["formats"] == ["midi"]
    assert str(tmp_path / "001-x.mid") not in result.stdout


def test_shipped_model_writes_tunes_that_pass_the_check(monkeypatch):
    from abcgen.abc import check_tune
    from abcgen.sample import PRETRAINED

    monkeypatch.delenv("ABCGEN_MODEL", raising=False)
    assert PRETRAINED.stat().st_size < 5 * 1024 * 1024
    tunes = load_model().generate(n=4, seed=11, meter="6/8", key="D")
    for tune in tunes:
        assert check_tune(tune).ok, tune
        assert "M:6/8\nL:1/8\nK:D\n" in tune


HEADER = "X:1\nT:T\nM:3/4\nL:1/8\nK:G\n"


def write_body(body: str, done: bool = False) -> tuple[Draft, object]:
    """Feed body to a bar watch as a sampler would; stop at the first rewind."""
    draft = Draft(plan=[], text=HEADER, mode=Segment.BODY)
    for ch in body:
        draft.text += ch
        target = watch_bars(draft, ch, lambda: Snapshot(len(draft.text) - 1, None, None))
        if target is not None:
            return draft, target
    if done:
        draft.done = True
        return draft, watch_bars(draft, "\n", None)
    return draft, None


def test_bar_watch_finds_where_bars_begin():
    body = 'D|"G"GAB [GB]2d|\nP:B\n[1 e2d B2G:|[2 A6||[M:2/4]'
    draft, target = write_body(body)
    assert target is None
    # The pickup, a bar after a chord symbol, after a field line and an ending, after
    # a second ending, and at an inline meter change.
    assert [s.length - len(HEADER) for s in draft.bars.starts] == [0, 2, 24, 36, 40]


def test_a_bar_of_the_wrong_length_is_written_again_from_its_start():
    draft, target = write_body("GAB c2d|e2d B2|A")
    assert target is not None and target.length == len(HEADER + "GAB c2d|")
    assert draft.text == HEADER + "GAB c2d|"


def test_bars_of_the_right_length_are_kept():
    for body in ("D|GAB c2d|e2d B2|]", "GAB c2d|e2d B2:|\n|:B2|c6|", "GAB c2d|z6|z6|"):
        draft, target = write_body(body + "A", done=False)
        assert target is None, body


def test_a_last_bar_too_long_is_written_again_when_the_tune_ends():
    draft, target = write_body("GAB c2d|e2d B2G A|]", done=True)
    assert target is not None and draft.text == HEADER + "GAB c2d|" and not draft.done


def test_a_tune_that_ends_before_its_first_bar_is_written_again():
    draft = Draft(plan=[], text=HEADER, mode=Segment.BODY)
    draft.feed("\n", max_chars=1000)  # a blank line: the model ends the tune at once
    assert draft.done and draft.text == HEADER[:-1]
    target = watch_bars(draft, "\n", lambda: Snapshot(len(HEADER), None, None))
    assert target is not None and target.length == len(HEADER)
    assert draft.text == HEADER and not draft.done


def test_an_ending_inside_a_bar_is_left_to_the_whole_tune_check():
    # `[2` inside a bar is an ending (ABC 2.1 allows one to start mid-bar): the bars are
    # kept, and the whole tune's check refuses the [2 that has no [1.
    from abcgen.abc import check_tune

    draft, target = write_body("GAB c2d|e2d [2B2|A2B c2d|e2d c3|]", done=True)
    assert target is None
    assert check_tune(draft.text).rule == "ending"


def test_header_values_the_training_tunes_never_used_are_refused():
    meta = {"meters": {"6/8": 3, "4/4": 5}, "keys": {"D": 4, "Ador": 1}}
    assert header_value_ok("M", "6/8", meta) and not header_value_ok("M", "4/8", meta)
    assert not header_value_ok("M", "A/4", meta) and header_value_ok("K", "Ador", meta)
    assert not header_value_ok("K", "Q", meta)
    assert header_value_ok("L", "1/8", meta) and not header_value_ok("L", "1/7", meta)
    assert header_value_ok("T", "The Kesh", meta) and not header_value_ok("T", "", meta)
    assert header_value_ok("M", "4/8", {})  # an old checkpoint without the lists


def test_fixing_writes_only_meters_and_keys_the_model_knows(tiny_model):
    model = load_model(tiny_model)
    meta = model.checkpoint.meta

    def value(text, name):  # in the header as written (the tiny model's bodies hold header lines too)
        _, found, rest = text.partition(f"\n{name}:")
        return rest.split("\n")[0] if found else None  # None: a title ran past max_chars

    def unknown(fix_bars):
        options = SamplingRun(0.8, None, 1.0, 200, fix_bars, False, np.random.default_rng(3))
        texts = [text for text, _ in model.sample_batch(60, header_plan(), options)]
        return sum(
            not all(value(text, name) is not None and header_value_ok(name, value(text, name), meta) for name in "MK")
            for text in texts
        )

    # The tiny model gets a meter or key right about one time in ten, so even 8 tries
    # often fail (about half of its headers, over seeds 0-15 at 20 tunes: 7 to 15 of 20);
    # the shipped model's headers all pass (see bench/sample.py).
    free, fixed = unknown(fix_bars=False), unknown(fix_bars=True)
    assert free >= 30 and fixed <= free * 0.75


def test_fixing_bars_mends_what_the_model_miscounts(tiny_model):
    from abcgen.abc import check_tune
    from abcgen.watch import LOCAL_RULES

    def bar_faults(tunes):
        return sum(check_tune(t).rule in LOCAL_RULES for t in tunes)  # what fixing bars mends

    # A fixed header: the tiny model's own headers are rarely readable.
    options = dict(
        n=20,
        seed=2,
        check=False,
        max_chars=400,
        meter="4/4",
        key="G",
        length="1/8",
        keep_rhythm=False,
        structure="none",
    )
    model = load_model(tiny_model)
    free = model.generate(fix_bars=False, **options)
    fixed = model.generate(**options)
    assert bar_faults(free) >= 5 and bar_faults(fixed) <= bar_faults(free) / 2


def test_the_temperature_sharpens_the_pitches_only():
    chars = list("ABc2/| \n")
    pitches = pitch_mask(chars)
    assert pitches.tolist() == [True, True, True, False, False, False, False, False]
    logits = np.random.default_rng(0).standard_normal((3, len(chars)))  # the same every run
    plain = softmax(logits)
    for temperature in (0.5, 0.8, 1.5):
        probs = next_char_probs(logits, temperature, None, pitches)
        assert np.allclose(probs.sum(axis=-1), 1.0)
        assert np.allclose(probs[:, :3].sum(-1), plain[:, :3].sum(-1))  # a pitch as likely
        assert np.allclose(probs[:, 3:], plain[:, 3:])  # lengths and the rest unchanged
        sharpened = softmax(logits[:, :3] / temperature)
        assert np.allclose(probs[:, :3] / probs[:, :3].sum(-1, keepdims=True), sharpened)
    assert np.allclose(next_char_probs(logits, 1.0, None, pitches), plain)
    assert np.allclose(plain, torch.softmax(torch.from_numpy(logits), dim=-1).numpy())
    masked = logits.copy()
    masked[:, :3] = -np.inf  # no pitch allowed: the rest keeps its odds, nothing is NaN
    assert np.allclose(next_char_probs(masked, 0.8, None, pitches)[:, 3:], softmax(masked)[:, 3:])
    top = next_char_probs(logits, 0.8, 2, pitches)
    assert ((top > 0).sum(axis=-1) == 2).all()


def test_pitch_nucleus_leaves_out_the_unlikeliest_pitches_only():
    shares = np.array([[0.05, 0.5, 0.15, 0.3]])
    kept = pitch_nucleus(shares, 0.9)  # 0.5 + 0.3 + 0.15 reaches 0.9; the 0.05 is left out
    assert np.allclose(kept, np.array([[0.0, 0.5, 0.15, 0.3]]) / 0.95)
    assert np.array_equal(pitch_nucleus(shares, 0.4), np.array([[0.0, 1.0, 0.0, 0.0]]))
    pitches = pitch_mask("ABCDc2/| \n")
    logits = np.array([[4.0, 3.0, 0.0, -2.0, -3.0, 1.0, 0.0, 2.0, 0.5, -1.0]])
    full = next_char_probs(logits, 0.8, None, pitches)
    cut = next_char_probs(logits, 0.8, None, pitches, pitch_top_p=0.9)
    assert cut[0, 2:5].sum() == 0 and full[0, 2:5].sum() > 0  # the tail of the pitches
    assert np.allclose(cut[0, 5:], full[0, 5:])  # lengths, barlines, endings: unchanged
    assert np.allclose(cut[0, :5].sum(), full[0, :5].sum())  # as likely to write a pitch
    with pytest.raises(AbcgenError, match="pitch_top_p"):
        TuneModel(None).generate(pitch_top_p=0)


def test_draw_follows_the_probabilities_and_never_draws_a_zero():
    probs = np.array([[0.0, 0.7, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0]])
    drawn = np.array([draw(probs, np.random.default_rng(seed)) for seed in range(2000)])
    assert set(drawn[:, 0]) == {1, 3} and set(drawn[:, 1]) == {0}
    assert abs((drawn[:, 0] == 1).mean() - 0.7) < 0.04
    assert np.array_equal(draw(probs, np.random.default_rng(5)), draw(probs, np.random.default_rng(5)))


def test_a_unit_length_is_written_as_asked_with_the_same_music(monkeypatch):
    from abcgen.abc import read_tune

    monkeypatch.delenv("ABCGEN_MODEL", raising=False)
    model = load_model()  # the shipped model: its tunes parse, so their notes can be compared
    # seed 5 once gave a tune with a garbled barline (`BGG:\` then `||` on the next line)
    # that music21 reads one note short in L:1/8 but not in L:1/4: see the closing note of
    # issue 6; this seed gives ordinary tunes.
    options = dict(n=2, seed=7, meter="6/8", key="D")
    eighths = model.generate(**options)
    for length in ("1/4", "1/16"):
        tunes = model.generate(length=length, **options)
        for ours, theirs in zip(tunes, eighths):
            assert f"\nL:{length}\n" in ours and "\nL:1/8\n" in theirs
            assert read_tune(ours).notes == read_tune(theirs).notes  # same durations in quarters


def test_a_prime_that_ends_in_a_blank_line_does_not_end_the_tune():
    from abcgen.prime import read_prime

    assert read_prime("|:GABc|\n\n") == "|:GABc|\n"
    assert read_prime("|:GABc") == "|:GABc"


def test_the_command_ends_at_once_with_all_its_output_written(tmp_path, monkeypatch):
    """`abcgen sample` skips the interpreter's slow teardown of torch (os._exit): what it
    wrote to a pipe, and to stderr, must all be there, and a failure keeps its status."""
    import subprocess
    import sys

    monkeypatch.delenv("ABCGEN_MODEL", raising=False)
    run = subprocess.run(
        [sys.executable, "-m", "abcgen", "sample", "-n", "3", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    tunes = run.stdout.strip().split("\n\n")
    assert len(tunes) == 3 and all(check_tune(tune).ok for tune in tunes)
    failed = subprocess.run(
        [sys.executable, "-m", "abcgen", "sample", "--top-k", "0"], capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 1 and "--top-k" in failed.stderr
