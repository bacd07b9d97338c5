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
