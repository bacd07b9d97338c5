"""The abcgen command line: thin click commands over the library.

Heavy imports (torch, music21, requests) happen inside the commands that need
them, so `abcgen --help` and `abcgen sample` start quickly.
"""

import os
import sys

import click

from abcgen import __version__
from abcgen.errors import AbcgenError


class AbcgenGroup(click.Group):
    """Turns AbcgenError (and Ctrl-C) into one line on stderr, no traceback.

    ABCGEN_DEBUG=1 lets the traceback through.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AbcgenError as error:
            if os.environ.get("ABCGEN_DEBUG"):
                raise
            click.echo(f"Error: {error}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            if os.environ.get("ABCGEN_DEBUG"):
                raise
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


@click.group(cls=AbcgenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="abcgen")
def cli():
    """Generate folk tunes in ABC notation with a character-level LSTM."""


def main():
    cli(prog_name="abcgen")


# ---- commands are added below, one section per pipeline stage ----
