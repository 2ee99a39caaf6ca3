"""``elasticir profile``: the operating points of a search pipeline on this machine."""

from __future__ import annotations

from pathlib import Path

import typer
from elasticir.cli.common import reports_errors


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(part) for part in _split(text)]
    except ValueError:
        raise ValueError(
            f"{what}: expected comma-separated positive integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise ValueError(f"{what}: expected comma-separated positive integers, got {text!r}")
    return values


@reports_errors
def main(
    index: Path = typer.Option(..., "--index", "-i", help="Dense index directory to serve"),
    topics: Path = typer.Option(..., "--topics", help="Development queries: qid<TAB>text"),
    qrels: Path = typer.Option(
        None,
        "--qrels",
        help="Their judgements (TREC qrels). Without them quality is overlap@10 with the most "
        "expensive choice, a judgement-free proxy",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Points file to write (JSON)"),
    rerank: str = typer.Option(
        "", help="Rerankers to load: dipair, ranker or dipair,ranker [default: none]"
    ),
    choices: str = typer.Option(
        None,
        help="Comma-separated choices to measure, e.g. L4,full>ranker%20@calibrated:rank "
        "[default: every query level, and at full each reranker at each --depths]",
    ),
    depths: str = typer.Option("20", help="Rerank depths of the default choices"),
    ranker_compute: str = typer.Option(
        "full,calibrated:rank",
        help="Ranker levels or policies of the default choices (calibrated:NAME: a shipped "
        "calibration)",
    ),
    metric: str = typer.Option("nDCG@10", help="The quality the policies compare"),
    extra_metrics: str = typer.Option("RR@10", help="Also record these (comma-separated)"),
    batch_sizes: str = typer.Option("1,2,4,8,16", help="Batch sizes to time each choice at"),
    repeats: int = typer.Option(3, min=1, help="Timings per batch size"),
    max_queries: int = typer.Option(
        0, min=0, help="Use the first N topics only (0: all) for quality"
    ),
    plot: Path = typer.Option(None, help="PNG of the points [default: beside --output]"),
    overwrite: bool = typer.Option(False, help="Replace an existing points file"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
) -> None:
    """Measure every compute choice of a search pipeline on this machine: its service time as
    a function of the batch size (fitted as fixed + per-query seconds, with the spread of the
    measurements) and its quality on judged development queries. Writes one JSON file (the
    choices, cost models, quality per query, the machine and the date) with the Pareto frontier
    marked, and a PNG of quality against single-query time. `elasticir serve --points` and
    `elasticir simulate --points` read it.

    Example: elasticir profile -i indexes/dl19 --rerank ranker --topics dl19/queries.tsv
    --qrels dl19/qrels.txt -o points/dl19.json
    """
    from elasticir.data.files import check_writable
    from elasticir.data.topics import read_topics
    from elasticir.data.trec import read_qrels
    from elasticir.schedule.choices import Choice
    from elasticir.schedule.executor import PipelineExecutor, default_choices
    from elasticir.schedule.plots import plot_points
    from elasticir.schedule.profile import profile_pipeline
    from elasticir.schedule.quality import check_metric

    if output.exists() and not overwrite:
        raise ValueError(f"{output} exists: pass --overwrite to replace it")
    plot = plot or output.with_suffix(".png")
    check_writable(output, "points file")
    check_writable(plot, "plot")
    kinds = _split(rerank)
    sizes = _ints(batch_sizes, "--batch-sizes")
    wanted = [Choice.parse(c) for c in _split(choices)] if choices else None
    metric = check_metric(metric)
    extra = [check_metric(m) for m in _split(extra_metrics)]
    queries = read_topics(topics)
    if max_queries:
        queries = queries[:max_queries]
    judgements = read_qrels(qrels) if qrels is not None else None
    if wanted is None:
        depth_list = _ints(depths, "--depths")
    executor = PipelineExecutor(index, kinds, progress=not quiet)
    if wanted is None:
        wanted = default_choices(executor.levels, kinds, depth_list, _split(ranker_compute))
    points = profile_pipeline(
        executor,
        wanted,
        queries,
        qrels=judgements,
        metric=metric,
        extra_metrics=extra,
        batch_sizes=sizes,
        repeats=repeats,
        progress=not quiet,
        say=lambda line: typer.echo(line, err=True),
        dev={"topics": str(topics), "qrels": None if qrels is None else str(qrels)},
    )
    points.save(output)
    plot_points(points, plot)
    name = points.metric
    typer.echo(f"{'choice':<34} {'1 query ms':>10} {'16 queries ms':>13} {name:>10}  frontier")
    for point in sorted(points.points, key=lambda p: p.cost.predict(1)):
        typer.echo(
            f"{str(point.choice):<34} {point.cost.predict(1) * 1000:>10.1f} "
            f"{point.cost.predict(16) * 1000:>13.1f} {point.value(name):>10.4f}  "
            f"{'*' if point.frontier else ''}"
        )
    cpu = points.machine.get("cpu_model", "?")
    flags = " ".join(points.machine.get("flags", []))
    typer.echo(f"machine: {cpu} ({points.machine.get('cores')} cores; {flags})")
    typer.echo(f"points: {output}  plot: {plot}")
