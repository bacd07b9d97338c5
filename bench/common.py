"""Shared set-up for the benchmarks: the real Nottingham corpus and its training text."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTTINGHAM = ROOT.parent / "shared" / "corpora" / "nottingham"


def corpus_path(argv) -> Path:
    path = Path(argv[1]) if len(argv) > 1 else NOTTINGHAM
    if not path.exists():
        sys.exit(f"corpus not found at {path}; pass a folder of .abc files (e.g. corpora/nottingham)")
    return path
