"""``elasticir eval``: measure a TREC run with ir-measures and/or DPR answer accuracy."""

from __future__ import annotations

from pathlib import Path

import typer
from elasticir.cli.common import reports_errors


@reports_errors
def main(
    run: Path = typer.Argument(..., help="TREC run file (qid Q0 docid rank score tag)"),
    qrels: Path = typer.Option(None, help="TREC qrels (qid 0 docid rel)"),
    measures: str = typer.Option(
        None,
        "--measures",
        "-m",
        help="Comma-separated ir-measures names [default: nDCG@10,RR@10,R@100,AP; for TREC "
        "DL use nDCG@10,RR(rel=2)@10,R(rel=2)@100,AP(rel=2)]",
    ),
    qas: Path = typer.Option(
        None, help="DPR qas file (question<TAB>['answer', ...]) for top-k answer accuracy"
    ),
    corpus: Path = typer.Option(None, help="Corpus the run retrieved from (needed with --qas)"),
    topics: Path = typer.Option(
        None, help="Topics of the run, to match its query ids to --qas questions by text"
    ),
    ks: str = typer.Option("1,5,20,100", help="Cut-offs for answer accuracy"),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table"),
) -> None:
    """Evaluate RUN: ir-measures on --qrels, and DPR-style Top-k accuracy on --qas."""
    import json

    from elasticir import api

    names = tuple(m.strip() for m in measures.split(",")) if measures else None
    try:
        cutoffs = tuple(int(k) for k in ks.split(","))
    except ValueError:
        raise ValueError(
            f"--ks must be comma-separated integers such as 1,5,20; got {ks!r}"
        ) from None
    if any(k < 1 for k in cutoffs):
        raise ValueError(f"--ks cut-offs must be positive, got {ks!r}")
    results = api.evaluate_run(
        run, qrels=qrels, measures=names, qas=qas, corpus=corpus, topics=topics, ks=cutoffs
    )
    if json_out:
        typer.echo(json.dumps(results, indent=2))
        return
    width = max(len(name) for name in results)
    for name, value in results.items():
        typer.echo(f"{name:<{width}}  {value:.4f}")
