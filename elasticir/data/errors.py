"""Errors for bad input files: they always name the file, the line and what was expected."""

from __future__ import annotations

from os import PathLike


class InputFormatError(ValueError):
    """A file does not have the format its reader expects.

    The message reads ``path:line: expected ...; got ... (hint)`` so editors and terminals can
    jump to it. ``line`` is 1-based; ``None`` when the problem is with the file as a whole;
    ``hint`` says what to do about it, when that is not obvious (a corrupt cache file).
    """

    def __init__(
        self,
        path: str | PathLike[str],
        line: int | None,
        expected: str,
        got: str | None = None,
        *,
        hint: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.expected = expected
        self.got = got
        self.hint = hint
        where = f"{self.path}:{line}" if line is not None else self.path
        message = f"{where}: expected {expected}"
        if got is not None:
            shown = got if len(got) <= 120 else got[:117] + "..."
            message += f"; got {shown!r}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class MissingResourceError(FileNotFoundError):
    """A named dataset, model or index cannot be found; the message says how to get it."""


class CountedWarning(UserWarning):
    """Something was done to the input that the user must hear of, with how often: queries
    cut to a length limit, judged queries missing from a run. The CLI prints each one as a
    ``warning:`` line on stderr; from Python, ``warnings.catch_warnings`` collects them."""
