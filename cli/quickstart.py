"""``elasticir quickstart``: the shipped elastic models on nq-open (or DL19, or the sample)."""

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
    rerank_queries: int = typer.Option(
        50, help="Queries (a seeded sample) the reranking rows rerank"
    ),
    depth: int = typer.Option(20, help="Dense candidates each reranker rescores per query"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
) -> None:
    """Show what one elastic model buys: index once, search at every query level of the
    shipped ElasticDenser, rerank with the shipped DiPair and ElasticRanker (full, and under
    its shipped calibrated exit policy); one table and a PNG of quality against latency.

    Latency (median single query) and pairs/s are measured in this run, as ratios to full
    compute. The reranking rows are over a seeded sample of the queries (the table says how
    many). The index goes to indexes/ (the quickstart's own is rebuilt), runs, the plot and
    a JSON summary to runs/.
    """
    from rich.console import Console
    from rich.table import Table

    from elasticir.quickstart import NO_DATA_HINT, choose_dataset, run_quickstart

    if k < 1 or rerank_queries < 1 or depth < 1:
        raise ValueError(
            f"-k, --rerank-queries and --depth must be >= 1 (got {k}, {rerank_queries}, {depth})"
        )
    console = Console()
    if not console.is_terminal:  # piped or logged: the whole table, not cut at 80 columns
        console = Console(width=160)
    start = time.perf_counter()
    chosen, used_sample = choose_dataset(dataset, data_dir)
    if used_sample:
        console.print(f"[yellow]{NO_DATA_HINT}[/yellow]")

    def say(text: str) -> None:
        if not quiet:
            console.print(f"[dim]{time.perf_counter() - start:5.0f}s[/dim] {text}")

    result = run_quickstart(
        chosen,
        k=min(k, 1000),
        rerank_queries=rerank_queries,
        depth=depth,
        progress=not quiet,
        used_sample=used_sample,
        say=say,
    )
    measures = list(result.rows[0].quality)
    table = Table(title=f"elasticir quickstart: {result.dataset}")
    for name in [
        "system",
        "queries",
        *measures,
        "FLOPs",
        "latency ms",
        "x full",
        "pairs/s",
        "speedup",
    ]:
        table.add_column(name, justify="left" if name == "system" else "right")

    def num(value: float | None, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    for row in result.rows:
        table.add_row(
            row.system,
            str(row.queries),
            *(num(row.quality.get(m), ".4f") for m in measures),
            num(row.flops, ".2f"),
            num(row.latency_ms, ".1f"),
            num(row.latency_ratio, ".2f"),
            num(row.pairs_per_s, ".0f"),
            num(row.speedup, ".2f") + ("x" if row.speedup is not None else ""),
        )
    console.print(table)
    for note in result.notes:
        console.print(f"  {note}")
    console.print(f"plot: {result.plot}")
    console.print(f"runs and summary: {result.runs['summary'].parent}/{result.dataset}-*")
    console.print(f"done in {time.perf_counter() - start:.0f} s")
