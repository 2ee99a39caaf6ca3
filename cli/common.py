"""What every command shares: turning library errors into one clear line and an exit code,
counted warnings into ``warning:`` lines, and input names into default output names."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT = 2


def reports_errors(command: F) -> F:
    """Bad input ends the command with ``error: <file:line: what was expected>``, exit 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from elasticir.data.errors import CountedWarning, InputFormatError, MissingResourceError

        def show(message: Any, category: type, *rest: Any, **more: Any) -> None:
            typer.echo(f"warning: {message}", err=True)

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", CountedWarning)
                warnings.showwarning = show  # restored when the block ends
                return command(*args, **kwargs)
        except PermissionError as err:
            typer.echo(f"error: {err.filename or err}: permission denied", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except (InputFormatError, MissingResourceError, ValueError, ImportError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
            # a path given on the command line that is missing or of the wrong kind
            what = {
                IsADirectoryError: "is a directory, expected a file",
                NotADirectoryError: "is not a directory",
            }.get(type(err), "not found")
            typer.echo(f"error: {err.filename or err}: {what}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; finished work is kept, rerun the command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"expected i/n such as 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise typer.BadParameter(f"expected 0 <= i < n, got {text!r}")
    return index, count


# Extensions dropped from an input's name to name what is made from it.
_SUFFIXES = (".gz", ".jsonl", ".json", ".tsv", ".txt", ".csv", ".trec", ".run", ".qrels")


def stem(path: Path) -> str:
    """``topics.a.tsv`` -> ``topics.a``; ``corpus.jsonl.gz`` -> ``corpus``: only known
    extensions go, so inputs that differ by an inner dot get different output names."""
    name = Path(path).name
    for _ in range(2):
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
    return name
