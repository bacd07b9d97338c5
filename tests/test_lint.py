"""The code passes the linter, the formatter's check and the type checker as configured in
pyproject.toml: ruff (pyflakes, import sorting, `ruff format`) and mypy. CI runs the test
suite, so a lint or type error fails it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["abcgen", "tests", "bench"]


def tool(name: str) -> str | None:
    beside_python = Path(sys.executable).with_name(name)
    return str(beside_python) if beside_python.exists() else shutil.which(name)


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


@pytest.mark.skipif(tool("ruff") is None, reason="ruff is not installed (pip install -e '.[dev]')")
def test_ruff_finds_nothing():
    result = run(tool("ruff"), "check", "--no-cache", *CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(tool("ruff") is None, reason="ruff is not installed (pip install -e '.[dev]')")
def test_code_is_formatted():
    result = run(tool("ruff"), "format", "--check", "--no-cache", *CHECKED)
    assert result.returncode == 0, "run `ruff format`:\n" + result.stdout + result.stderr


@pytest.mark.skipif(tool("mypy") is None, reason="mypy is not installed (pip install -e '.[dev]')")
def test_mypy_finds_nothing():
    result = run(tool("mypy"), "--no-incremental", "--cache-dir", "/dev/null")
    assert result.returncode == 0, result.stdout + result.stderr
