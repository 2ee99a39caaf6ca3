"""``elasticir fuse``: combine runs by reciprocal rank fusion or score interpolation."""

from __future__ import annotations

from pathlib import Path

import typer
from elasticir.cli.common import reports_errors


@reports_errors
def main(
    runs: list[Path] = typer.Argument(..., help="TREC runs to fuse (interpolation: exactly 2)"),
    output: Path = typer.Option(..., "--output", "-o", help="Fused TREC run to write"),
    method: str = typer.Option("rrf", help="rrf (reciprocal rank) or interpolate (scores)"),
    k: int = typer.Option(
        1000, "-k", min=1, help="Depth read from each run and kept in the output"
    ),
    rrf_k: int = typer.Option(60, help="RRF constant: score = sum 1/(rrf_k + rank)"),
    alpha: float = typer.Option(
        0.5, help="Interpolation weight of the first run: alpha*a + (1-alpha)*b"
    ),
    normalization: str = typer.Option(
        "minmax", help="Per-query score normalization: minmax, zscore"
    ),
    tag: str = typer.Option("fused", help="Run tag"),
) -> None:
    """Fuse RUNS into one TREC run (dense + BM25 hybrids, for instance)."""
    from elasticir import api
    from elasticir.data.trec import check_run_output, write_run

    if any(output.resolve() == r.resolve() for r in runs):
        raise ValueError(f"{output} is one of the input runs; write the fused run elsewhere")
    check_run_output(output)
    api.check_token("run tag", tag)
    fused = api.fuse_runs(
        list(runs), method, k=k, rrf_k=rrf_k, alpha=alpha, normalization=normalization
    )
    write_run(output, fused, tag=tag, k=k)
    typer.echo(f"run: {output} ({len(fused)} queries)")
