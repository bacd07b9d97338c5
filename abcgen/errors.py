"""The one exception type the command line turns into a one-line message."""


class AbcgenError(Exception):
    """A failure the user can act on: the message says what went wrong and what to do."""
