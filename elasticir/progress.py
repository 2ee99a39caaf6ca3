"""Progress bars for long work, drawn with rich on stderr; a no-op when disabled.

When stderr is not a terminal (a run under ``nohup`` or with ``2> log``), rich would draw
nothing until the end, so plain lines are written instead: one every ``log_every`` seconds
(30 by default, ``$ELASTICIR_PROGRESS_SECONDS``) and one at the end, each with the count, the
elapsed time, an estimate of the time left and the latest status text.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


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

    console = Console(stderr=True)
    if not console.is_terminal:
        with line_progress(sys.stderr, total, label, completed) as advance:
            yield advance
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    ) as bar:
        task = bar.add_task(label, total=total, completed=completed, status="")

        def advance(n: int, status: str | None = None) -> None:
            if status is None:
                bar.advance(task, n)
            else:
                bar.update(task, advance=n, status=status)

        yield advance


@contextmanager
def line_progress(
    stream: TextIO,
    total: int | None,
    label: str,
    completed: int = 0,
    log_every: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Callable[..., None]]:
    """Progress as plain lines on ``stream``, at most one per ``log_every`` seconds, plus a
    last line when the work ends (also when it ends by an exception)."""
    if log_every is None:
        log_every = float(os.environ.get("ELASTICIR_PROGRESS_SECONDS", "30"))
    start = clock()
    state = {"done": completed, "status": "", "written": start, "dirty": False}

    def write() -> None:
        elapsed = clock() - start
        done = state["done"]
        count = f"{done}/{total}" if total is not None else str(done)
        parts = [f"{label}: {count}", f"elapsed {_clock(elapsed)}"]
        new = done - completed
        if total is not None and new > 0 and done < total:
            parts.append(f"left ~{_clock(elapsed / new * (total - done))}")
        if state["status"]:
            parts.append(str(state["status"]))
        stream.write("  ".join(parts) + "\n")
        stream.flush()
        state["written"], state["dirty"] = clock(), False

    def advance(n: int, status: str | None = None) -> None:
        state["done"] += n
        if status is not None:
            state["status"] = status
        state["dirty"] = True
        if clock() - state["written"] >= log_every:
            write()

    try:
        yield advance
    finally:
        if state["dirty"]:
            write()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
