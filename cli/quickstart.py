"""``elasticir quickstart``: the whole chain on nq-open (or the built-in sample), as a table."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from elasticir.cli.common import reports_errors


@reports_errors
def main(
    dataset: str = typer.Option(
        "nq-open", help="Dataset from the data folder: nq-open or msmarco-dl19 (or sample)"
    ),
    data_dir: Path = typer.Option(
        None,
        help="Data folder; it must exist [default: $ELASTICIR_DATA, else ../shared/data, "
        "else the 40-passage sample shipped in the package]",
    ),
    k: int = typer.Option(100, "-k", help="Passages retrieved per query"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
) -> None:
    """Index, search and evaluate dense, BM25 and hybrid retrieval; print the results.

    Uses the data folder when it exists, otherwise the small sample shipped in the package
    (and says so). Indexes go to indexes/ (the quickstart's own ones are rebuilt), runs to
    runs/.
    """
    from rich.console import Console
    from rich.table import Table

    from elasticir.quickstart import NO_DATA_HINT, choose_dataset, run_quickstart

    console = Console()
    start = time.perf_counter()
    chosen, used_sample = choose_dataset(dataset, data_dir)
    if used_sample:
        console.print(f"[yellow]{NO_DATA_HINT}[/yellow]")
    result = run_quickstart(chosen, k=k, progress=not quiet, used_sample=used_sample)
    measures = list(next(iter(result.rows.values())))
    table = Table(title=f"elasticir quickstart: {result.dataset} (top-{k})")
    table.add_column("system")
    for name in measures:
        table.add_column(name, justify="right")
    for system, values in result.rows.items():
        table.add_row(system, *(f"{values[m]:.4f}" for m in measures))
    console.print(table)
    for system, path in result.runs.items():
        console.print(f"run {system}: {path}")
    console.print(f"done in {time.perf_counter() - start:.0f} s")
