"""The one type of error that means "what you gave me is wrong", not "captioner has a bug".

Everything a user can get wrong (a config key, a checkpoint file, a dataset record, a
command-line value, an image file) raises a subclass of :class:`UserError` with a message
that names the file or value and says what to do. The command line prints such errors
as one line and exits with code 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; ``str(error)`` is a complete one-line message."""


class ArgumentError(UserError, ValueError):
    """A value given to a function or on the command line is not usable."""
