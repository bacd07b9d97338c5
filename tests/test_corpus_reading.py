"""Reading real-world corpora: broken lengths, encodings, odd paths, keys and meters by meaning.

Every fixture is written here; each test names the input a musician might really have.
"""

import codecs
import json

import pytest
from click.testing import CliRunner

from abcgen.cli import cli
from abcgen.corpus import Corpus, load_corpus, parse_length, summary
from abcgen.errors import AbcgenError

GOOD = "X:{n}\nT:Good {n}\nM:4/4\nL:1/8\nK:D\nDEFG ABcd|\n"
ZERO_LENGTH = "X:7\nT:Zero Below\nM:4/4\nL:1/4\nK:D\nA/0 B C D|\n"


def good(n: int) -> str:
    return GOOD.format(n=n)


def test_a_zero_denominator_is_an_error_not_a_division():
    assert parse_length("3/2") == parse_length("3//") * 2 == pytest.approx(1.5)
    with pytest.raises(ValueError, match="zero denominator"):
        parse_length("/0")


@pytest.mark.parametrize(
    "broken",
    [
        ZERO_LENGTH,
        "X:7\nT:Zero Below\nM:4/4\nL:1/0\nK:D\nABCD|\n",  # unit length
        "X:7\nT:Zero Below\nM:3/0\nK:D\nABCD|\n",  # meter, no L: (its default comes from M:)
        "X:7\nT:Zero Below\nM:4/4\nL:1/4\nK:D\nAB\nL:1/8\nC//0 D|\n",
    ],
)
@pytest.mark.parametrize("option", [[], ["--json"], ["--dump", "train"]])
def test_a_tune_with_a_zero_denominator_is_dropped_by_name_and_the_rest_go_through(tmp_path, broken, option):
    path = tmp_path / "tunes.abc"
    path.write_text(good(1) + "\n" + broken + "\n" + good(2))
    result = CliRunner().invoke(cli, ["corpus", str(path), *option])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and result.exception is None
    dropped = [line for line in result.stderr.splitlines() if line.startswith("dropped")]
    assert len(dropped) == 1 and "X:7 (Zero Below)" in dropped[0] and "zero denominator" in dropped[0]
    assert len(load_corpus(path).tunes) == 2


def test_a_file_of_only_unreadable_tunes_is_one_line(tmp_path):
    path = tmp_path / "zero.abc"
    path.write_text(ZERO_LENGTH)
    result = CliRunner().invoke(cli, ["corpus", str(path)])
    assert result.exit_code == 1 and result.exception.__class__ is SystemExit
    assert result.stderr.splitlines()[-1].startswith("Error: zero: no readable tunes")
    assert "X:7 (Zero Below)" in result.stderr


def test_latin1_on_stdin_is_read_as_a_latin1_file_is(tmp_path):
    data = "X:1\nT:Caf\xe9 au lait\nM:4/4\nL:1/8\nK:D\nDEFG ABcd|\n".encode("latin-1")
    result = CliRunner().invoke(cli, ["corpus", "-", "--dump", "train"], input=data)
    assert result.exit_code == 0, result.output
    assert "T:Café au lait" in result.stdout


@pytest.mark.parametrize(
    "encoding, bom",
    [
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
    ],
)
def test_a_byte_order_mark_is_read_and_dropped(tmp_path, encoding, bom):
    path = tmp_path / f"{encoding}.abc"
    path.write_bytes(bom + "X:1\nT:Café\nM:4/4\nL:1/8\nK:D\nDEFG ABcd|\n".encode(encoding))
    tunes = load_corpus(path).tunes
    assert len(tunes) == 1 and tunes[0].startswith("X:1\nT:Café\n")
    result = CliRunner().invoke(cli, ["corpus", "-", "--dump", "train"], input=path.read_bytes())
    assert result.stdout.startswith("X:1\nT:Café\n")


def test_nul_bytes_without_a_utf16_mark_are_still_binary(tmp_path):
    path = tmp_path / "tune.abc"
    path.write_bytes("X:1\nK:D\nDEFG|\n".encode("utf-16-le"))  # no mark: cannot tell
    with pytest.raises(AbcgenError, match="binary"):
        load_corpus(path)


def test_a_path_that_is_neither_folder_nor_file_is_one_line():
    result = CliRunner().invoke(cli, ["corpus", "/dev/null"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: /dev/null is neither a folder nor a file; point at a folder of .abc files "
        "or one .abc file (- reads standard input)"
    ]


def test_keys_and_meters_are_counted_by_meaning(tmp_path):
    spellings = [("C|", "Dmajor"), ("2/2", "D"), ("C", "Dmaj"), ("4/4", "Ador"), ("3/4", "Am")]
    tunes = [f"X:1\nT:T{n}\nM:{meter}\nL:1/8\nK:{key}\nDEFG ABcd|]" for n, (meter, key) in enumerate(spellings)]
    stats = summary(Corpus("spellings", train=tunes, val=[], test=[]))
    assert stats["meters"] == {"2/2": 2, "4/4": 2, "3/4": 1}
    assert stats["keys"] == {"D major": 3, "A dorian": 1, "A minor": 1}


def test_the_corpus_command_prints_keys_by_meaning(tmp_path):
    path = tmp_path / "keys.abc"
    path.write_text(
        "\n".join(
            f"X:{n}\nT:T{n}\nM:C\nL:1/8\nK:{key}\nDEFG AB{'c' * n}{'d' * (2 - n)}|]\n"
            for n, key in enumerate(["Dmajor", "D", "Dmaj"])
        )
    )
    report = CliRunner().invoke(cli, ["corpus", str(path)])
    assert report.exit_code == 0, report.output
    assert "keys        D major 3" in report.stdout and "meters      4/4 3" in report.stdout
    assert json.loads(CliRunner().invoke(cli, ["corpus", str(path), "--json"]).stdout)["keys"] == {"D major": 3}
