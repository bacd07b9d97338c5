"""Shared fixtures: small ABC tunes written by this project, and the real corpus when present."""

from pathlib import Path

import pytest

SHARED_NOTTINGHAM = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "nottingham"


@pytest.fixture
def nottingham_dir():
    """The real Nottingham corpus in ../shared, or skip."""
    if not (SHARED_NOTTINGHAM / "SHA256SUMS").exists():
        pytest.skip(f"real Nottingham corpus not found at {SHARED_NOTTINGHAM}")
    return SHARED_NOTTINGHAM


# Short tunes written for these tests, in the style of the Nottingham files
# (a % comment, S: and Y: fields, a meter after K:, an odd chord symbol).
FIXTURE_TUNES = """\
% a file written for abcgen's tests
X: 1
T:Test Jig One
% Nottingham Music Database
S:abcgen tests
Y:AB
M:4/4
K:D
M:6/8
P:A
A|"D"dfa afd|"G"gbg "A7"fed|"D"dfa afd|"Gd"e3 d2:|
P:B
f/2g/2|"D/f+"a2f d2f|"G"g2e c2e|"D"d3 "A"c3|"D"d3 d2||

X: 2
T:Test Reel Two
M:4/4
L:1/8
K:G
|:"G"GABc dBGB|"C"cBcd e2dc|"G"BGBd gdBG|"D"A2F2 D4:|
|:"G"g2fg edef|"C"gfed cBAG|"D"FGAB cAFA|"G"G2B2 G4:|

X: 3
T:Test Waltz Three
M:3/4
K:A
"A"A2 c2 e2|"E"B2 d2 e2|"A"c3 B A2|"E7"B4 e2|
"A"a2 g2 f2|"D"f2 e2 d2|"E7"c2 B2 A2|"A"A6|]

X: 4
T:Test Polka Four
M:2/4
L:1/8
K:Em
"Em"E/F/G/A/ B2|"D"A/B/A/F/ D2|"Em"E/F/G/A/ B/c/d|"Bm"B2 B2:|

X: 5
T:No Key Here
M:4/4
abcd|

X: 6
T:No Notes Here
M:4/4
K:C
"C"||
"""


@pytest.fixture
def tiny_abc(tmp_path):
    """A folder with one small .abc file: four good tunes, one without K:, one without notes."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "tunes.abc").write_text(FIXTURE_TUNES)
    return folder


def interrupt_training_at(monkeypatch, step: int):
    """Make training send itself SIGINT (Ctrl-C) just after `step`; returns the undo."""
    import signal

    from abcgen.train import Run

    original_step = Run.train_step

    def step_then_interrupt(run):
        loss = original_step(run)
        if run.step == step:
            signal.raise_signal(signal.SIGINT)
        return loss

    monkeypatch.setattr(Run, "train_step", step_then_interrupt)
    return lambda: monkeypatch.setattr(Run, "train_step", original_step)
