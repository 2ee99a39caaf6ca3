"""``elasticir search``: retrieve with a dense or BM25 index and write a TREC run."""

from __future__ import annotations

from pathlib import Path

import typer
from elasticir.cli.common import reports_errors, stem


@reports_errors
def main(
    index: Path = typer.Option(..., "--index", "-i", help="Index directory (dense or BM25)"),
    topics: Path = typer.Option(
        ..., "--topics", help="Queries: qid<TAB>text, or a DPR qas file (ids = line numbers)"
    ),
    output: Path = typer.Option(
        None, "--output", "-o", help="TREC run to write [default: runs/<index>.<topics>.trec]"
    ),
    k: int = typer.Option(1000, "-k", min=1, help="Passages per query"),
    level: str = typer.Option(
        "full",
        help="Query-encoder compute level (dense only): full, L<depth>, L<depth>-W<width %> "
        "(e.g. L6-W50) or L<depth>-H<heads %>-F<FFN %> (e.g. L6-H100-F23); the model's "
        "elasticir.json lists the levels it was trained for",
    ),
    model: str = typer.Option(
        None, help="Query encoder [default: the model recorded in the index's meta.json]"
    ),
    batch_size: int = typer.Option(64, help="Queries per encoder batch"),
    tag: str = typer.Option(None, help="Run tag in the 6th column [default: the index name]"),
    threads: int = typer.Option(2, help="Search threads (BM25)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
) -> None:
    """Search INDEX with every query in TOPICS; write the top-k as a TREC run under runs/.

    A dense index refuses a query encoder whose fingerprint differs from the one it was built
    with (vectors from another model live in another space). The output may only replace a
    TREC run; everything is checked before the model loads.
    """
    from elasticir import api

    output = output or Path("runs") / f"{index.name}.{stem(topics)}.trec"
    config = api.SearchConfig(
        index=index,
        topics=topics,
        output=output,
        k=k,
        level=level,
        model=model,
        batch_size=batch_size,
        tag=tag or index.name,
        threads=threads,
        progress=not quiet,
    )
    run = api.search(config)
    typer.echo(f"run: {output} ({len(run)} queries)")
