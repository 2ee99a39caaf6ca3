"""Progress bars for long work, drawn with rich on stderr; a no-op when disabled."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(
    enabled: bool, total: int | None, label: str, completed: int = 0
) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n, status=None)``: moves the bar forward by ``n`` items.

    ``completed`` starts the bar part-way (a resumed run); ``status`` replaces the text shown
    after the bar (training losses, say).
    """
    if not enabled:
        yield lambda n, status=None: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(label, total=total, completed=completed, status="")

        def advance(n: int, status: str | None = None) -> None:
            if status is None:
                bar.advance(task, n)
            else:
                bar.update(task, advance=n, status=status)

        yield advance
