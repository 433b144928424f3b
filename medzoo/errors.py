"""medzoo's expected errors: bad input or missing state, told to the user in one line.

Each class also derives from the built-in exception a caller would expect (ValueError for a bad
value, FileNotFoundError for missing state, ...), so library code and notebooks can catch either.
The CLI prints a `MedzooError` as `error: <message>` (exit 1); any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations


class MedzooError(Exception):
    """An error the user can fix from its one-line message."""


class InvalidValue(MedzooError, ValueError):
    """An option, recipe field or data value that is not what was expected."""


class MissingState(MedzooError, FileNotFoundError):
    """A file, folder or earlier stage's output that is not there."""


class AlreadyExists(MedzooError, FileExistsError):
    """An output that exists and would be replaced or mixed with other results."""


class UnknownName(MedzooError, KeyError):
    """A name (zoo model, family, split) that is not known."""

    def __str__(self) -> str:  # KeyError would print the repr, quotes and all
        return str(self.args[0]) if self.args else ""


class StateMismatch(MedzooError, ValueError):
    """An earlier stage's output that was made with other settings than the recipe asks for."""


class Busy(MedzooError, BlockingIOError):
    """An output another medzoo process is writing right now."""
