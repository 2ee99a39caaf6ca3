"""Errors for bad input files: they always name the file, the line and what was expected."""

from __future__ import annotations

from os import PathLike


class InputFormatError(ValueError):
    """A file does not have the format its reader expects.

    The message reads ``path:line: expected ...; got ...`` so editors and terminals can jump to it.
    ``line`` is 1-based; ``None`` when the problem is with the file as a whole.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        line: int | None,
        expected: str,
        got: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.expected = expected
        self.got = got
        where = f"{self.path}:{line}" if line is not None else self.path
        message = f"{where}: expected {expected}"
        if got is not None:
            shown = got if len(got) <= 120 else got[:117] + "..."
            message += f"; got {shown!r}"
        super().__init__(message)


class MissingResourceError(FileNotFoundError):
    """A named dataset, model or index cannot be found; the message says how to get it."""
