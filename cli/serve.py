"""``elasticir serve``: an HTTP search server whose compute follows the load."""

from __future__ import annotations

from pathlib import Path

import typer
from elasticir.cli.common import reports_errors


def _list(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


@reports_errors
def main(
    index: Path = typer.Option(..., "--index", "-i", help="Dense index directory to search"),
    rerank: str = typer.Option(
        None,
        help="Reranking stages to load: dipair, ranker or dipair,ranker [default: the stages "
        "the served choices use; none for the default choices]",
    ),
    points: Path = typer.Option(
        None,
        help="Operating points file from `elasticir profile` (each choice's measured cost and "
        "quality) [default: a brief profile at start-up on pseudo-queries from the corpus, "
        "with rough costs and overlap@10 as its quality]",
    ),
    choices: str = typer.Option(
        None,
        help="Comma-separated choices to serve, e.g. L4,full,'full>ranker%20' (LEVEL or "
        "LEVEL>KIND%DEPTH[@COMPUTE]); with --points a subset of its choices [default: every "
        "choice of the points file; without one, each query level and, at full, each loaded "
        "reranker over the top 20]",
    ),
    policy: str = typer.Option(
        "deadline",
        help="How each batch's choice is picked: deadline[:M] (the best choice that still "
        "meets the oldest waiting query's deadline and leaves the rest of the queue, and the "
        "queries expected within one SLO, feasible; deadlines planned M of the SLO early, "
        "default 0.2), queue[:H] (by queue length, hysteresis H, default 0.25) or "
        "static:CHOICE (always CHOICE)",
    ),
    slo_ms: float = typer.Option(
        None,
        "--slo-ms",
        help="Latency objective in milliseconds: each query's deadline is its arrival plus "
        "this [default: 4x the predicted single-query time of the most expensive frontier "
        "choice, rounded up; printed at start-up]",
    ),
    max_batch: int = typer.Option(16, help="Most queries run together in one batch"),
    max_wait_ms: float = typer.Option(
        2.0, help="Longest a query waits for its batch to fill before it goes anyway (ms)"
    ),
    max_queue: int = typer.Option(
        1024, help="Most queries waiting; past it a request gets 503 with Retry-After"
    ),
    shed: bool = typer.Option(
        False,
        "--shed",
        help="Refuse (503, reason shed) queries that cannot meet their deadline even at the "
        "cheapest choice, instead of answering them late",
    ),
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on (a non-loopback one needs --allow-remote)"
    ),
    port: int = typer.Option(8000, help="Port to listen on (0: any free port, printed)"),
    allow_remote: bool = typer.Option(
        False,
        "--allow-remote",
        help="Allow a non-loopback --host: the server has no authentication or TLS, so put "
        "it behind a proxy that has",
    ),
    k_max: int = typer.Option(1000, help="Largest k a request may ask for"),
    threads: int = typer.Option(None, help="Torch threads for inference [default: torch's]"),
) -> None:
    """Serve INDEX over HTTP, choosing each batch's compute from the live load.

    Models load once; queries are batched (up to --max-batch, waiting at most
    --max-wait-ms) and each batch runs at the choice --policy picks from the operating
    points, so under load the server trades quality for latency instead of queueing past
    the SLO. Everything is checked, and the port bound, before a model loads.

    \b
    POST /search   {"query": "text", "k": 10} or {"queries": ["a", "b"], "k": 10}
                   (optional "id" / "ids" are echoed back) -> {"results": [{"id", "hits":
                   [{"doc_id", "score", "rank"}], "choice", "late", "timings"}]}
    GET /metrics   Prometheus text format (latency, service time per choice, batch
                   sizes, queue length, SLO misses, rejections, switches, memory)
    GET /healthz   {"status": "ok", "policy", "slo_ms", "choices", "queue_length"}

    Bad requests get a 4xx JSON {"error": ...}; a full queue or a shed query gets 503 with
    Retry-After. SIGTERM or Ctrl-C stops accepting, answers every query in flight or
    queued, and exits 0.

    \b
    Example:
      elasticir profile -i indexes/dl19 --rerank ranker --topics dl19/queries.tsv
          --qrels dl19/qrels.txt -o points/dl19.json
      elasticir serve -i indexes/dl19 --points points/dl19.json --slo-ms 50
      curl -s localhost:8000/search -d '{"query": "who wrote hamlet", "k": 5}'
    """
    from elasticir.serve import ServeConfig, serve

    config = ServeConfig(
        index=index,
        rerank=_list(rerank) if rerank is not None else None,
        points=points,
        choices=_list(choices),
        policy=policy,
        slo_ms=slo_ms,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        shed=shed,
        host=host,
        port=port,
        allow_remote=allow_remote,
        k_max=k_max,
        threads=threads,
    )
    serve(config, say=lambda line: typer.echo(line, err=True))
