"""abcgen: generate folk tunes in ABC notation with a character-level LSTM.

    >>> import abcgen
    >>> model = abcgen.load_model()          # the shipped Nottingham model
    >>> print(model.generate(n=1, temperature=0.8)[0])

Heavy modules (torch, music21) are imported only when first used, so that
`import abcgen` and the command line start quickly.
"""

__version__ = "0.1.0"

__all__ = ["AbcgenError", "load_model", "__version__"]

from abcgen.errors import AbcgenError


def load_model(path=None, device="cpu"):
    """Load a trained model (the shipped one when path is None) for sampling."""
    from abcgen.sample import load_model as _load_model

    return _load_model(path, device=device)
