"""abcgen: generate folk tunes in ABC notation with a character-level LSTM.

    >>> import abcgen
    >>> model = abcgen.load_model()          # the shipped Nottingham model
    >>> print(model.generate(n=1, temperature=0.8)[0])

Heavy modules (torch, music21) are imported only when first used, so that
`import abcgen` and the command line start quickly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from abcgen.errors import AbcgenError
from abcgen.options import SAMPLING_DEVICE, SamplingOptions

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from abcgen.sample import TuneModel

__all__ = ["AbcgenError", "SamplingOptions", "load_model", "__version__"]


def load_model(
    path: str | Path | None = None, device: str = SAMPLING_DEVICE, log: Callable[[str], None] | None = None
) -> TuneModel:
    """Load a trained model (the shipped one when path is None) for sampling."""
    from abcgen.sample import load_model as _load_model

    return _load_model(path, device=device, log=log)


def __getattr__(name: str) -> str:
    """abcgen.__version__: the installed package's version, written once, in pyproject.toml
    (read when first asked for: importlib.metadata costs the command line's start-up time)."""
    if name == "__version__":
        from importlib.metadata import version

        return version("abcgen")
    raise AttributeError(f"module 'abcgen' has no attribute {name!r}")
