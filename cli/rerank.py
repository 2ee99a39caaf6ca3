"""``elasticir rerank``: rescore a TREC run's candidates with one reranker or a cascade."""

from __future__ import annotations

from pathlib import Path

import typer
from elasticir.cli.common import reports_errors, stem


@reports_errors
def main(
    run: Path = typer.Option(..., "--run", "-r", help="TREC run whose candidates to rerank"),
    topics: Path = typer.Option(
        ..., "--topics", help="Queries: qid<TAB>text, or a DPR qas file (ids = line numbers)"
    ),
    corpus: Path = typer.Option(
        ..., "--corpus", help="Corpus holding the run's documents (any format `index` reads)"
    ),
    ranker: list[str] = typer.Option(
        ["elastic"],
        "--ranker",
        help="A reranking stage KIND[:MODEL][%K], repeatable for a cascade (each reranks "
        "the previous one's output, keeping its top K). KIND: elastic (ElasticRanker "
        "cross-encoder), dipair (DiPair head), biencoder (the dense model's own dot "
        "product). E.g. --ranker dipair:models/dipair%100 --ranker elastic:models/ranker",
    ),
    level: str = typer.Option(
        "full", help="Compute level of the elastic ranker (or the bi-encoder's query level)"
    ),
    policy: str = typer.Option(
        None,
        help="Early-exit policy of the elastic ranker: entropy:T, margin:T, saturation:T, "
        "classifier:T, cutoff:R (rescore only the run's top R, the rest kept below in "
        "their order), or calibrated:FILE.json (from calibration; the way to use a rank "
        "policy, which reads the run's ranks) [default: the fixed --level]",
    ),
    depth: int = typer.Option(
        1000, "--depth", min=1, help="Candidates read per query from the input run"
    ),
    k: int = typer.Option(1000, "-k", min=1, help="Documents per query written"),
    output: Path = typer.Option(
        None, "--output", "-o", help="TREC run to write [default: runs/<run>.reranked.trec]"
    ),
    on_missing: str = typer.Option(
        "error",
        help="Documents not in the corpus or run queries not in the topics: error (stop), "
        "or skip (counted and reported; skipped documents stay below the rescored ones)",
    ),
    batch_size: int = typer.Option(32, help="Pairs per model batch"),
    precision: str = typer.Option(
        "fp32",
        help="fp32, or bf16 autocast for the elastic and biencoder stages (about 2x faster on "
        "CPUs with AMX/AVX512-BF16, likely slower without them; scores differ slightly)",
    ),
    token_cache: Path = typer.Option(
        None,
        help="DiPair passage-token cache folder; built from --corpus when missing "
        "(resumable) [default: encode passages on the fly]",
    ),
    tag: str = typer.Option(None, help="Run tag [default: the last stage's kind]"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
) -> None:
    """Rerank the candidates of RUN and write a TREC run.

    Reads the top --depth candidates per query of RUN, looks their texts up in --corpus, and
    rescores them with each --ranker in turn; a stage with %K keeps its top K for the next.
    Nothing is dropped silently: missing documents or queries stop the command, or with
    --on-missing skip are counted and reported.
    """
    from elasticir import api
    from elasticir.data.trec import check_run_output, write_run

    stages = [api.parse_rerank_stage(spec) for spec in ranker]
    output = output or Path("runs") / f"{stem(run)}.reranked.trec"
    if output.resolve() == run.resolve():
        raise ValueError(f"{output} is the input run; write the reranked run elsewhere")
    check_run_output(output)
    api.check_token("run tag", tag or stages[-1].kind)
    result = api.rerank(
        api.RerankConfig(
            run=run,
            topics=topics,
            corpus=corpus,
            stages=tuple(stages),
            level=level,
            policy=policy,
            depth=depth,
            on_missing=on_missing,
            batch_size=batch_size,
            token_cache=token_cache,
            progress=not quiet,
            precision=precision,
        )
    )
    write_run(output, result.run, tag=tag or stages[-1].kind, k=k)
    for stage, counts in result.reports.items():
        for what, count in sorted(counts.items()):
            typer.echo(f"{stage}: {what}: {count}")
    typer.echo(f"run: {output} ({len(result.run)} queries)")
