"""``elasticir loadtest``: send a request trace to a local server and write the run report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from elasticir.cli.common import reports_errors


def _concurrencies(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"expected C1,C2,... such as 1,2,4,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"expected positive concurrencies such as 1,2,4,8, got {text!r}")
    return values


def _show_progress(progress) -> None:
    total = f"/{progress.total}" if progress.total is not None else ""
    p95 = "-" if progress.p95_ms is None else f"{progress.p95_ms:.1f} ms"
    line = (
        f"{progress.elapsed:7.1f} s  sent {progress.sent}{total}  answered {progress.answered}  "
        f"rejected {progress.rejected}  errors {progress.errors}  p95 (last 5 s) {p95}"
    )
    sys.stderr.write("\r" + line.ljust(100))
    sys.stderr.flush()


@reports_errors
def main(
    url: str = typer.Argument(
        ...,
        metavar="URL",
        help="The server's base URL on this machine: http://127.0.0.1:PORT, http://[::1]:PORT "
        "or http://localhost:PORT (any other host is refused)",
    ),
    topics: Path = typer.Option(
        ...,
        "--topics",
        help="Queries: qid<TAB>text, or a DPR qas file; request j carries query j mod N",
    ),
    duration: float = typer.Option(
        ..., "--duration", help="Seconds of measured load (closed loop: per concurrency)"
    ),
    trace: str = typer.Option(
        "poisson",
        "--trace",
        help="Arrival shape over --rate: poisson, step[:low=0.5,high=2,at=0.5], "
        "burst[:low=0.5,high=4,on=30,every=120], diurnal[:low=0.25,high=2,period=600], or a "
        "FILE of arrival times in seconds (one a line, or a JSON list)",
    ),
    rate: float = typer.Option(
        None, "--rate", help="Reference rate R in requests/s (open loop; required there)"
    ),
    qrels: Path = typer.Option(
        None, "--qrels", help="TREC qrels: score every returned ranking with --metric"
    ),
    metric: str = typer.Option(
        "nDCG@10", "--metric", help="Quality of a ranking (ir_measures name, e.g. RR@10)"
    ),
    slo_ms: float = typer.Option(
        None,
        "--slo-ms",
        help="Latency SLO in ms; a later answer counts as late [default: the server's, from "
        "/healthz]",
    ),
    k: int = typer.Option(10, "--k", help="Passages asked for per query"),
    seed: int = typer.Option(0, "--seed", help="Seed of the arrival times (as the simulator's)"),
    timeout_s: float = typer.Option(
        30.0,
        "--timeout-s",
        help="A request with no answer this long after its intended send time is an error; "
        "after Ctrl-C, the wait for answers in flight",
    ),
    max_connections: int = typer.Option(
        256,
        "--max-connections",
        help="Keep-alive connections at most; with all busy a request waits, and the wait "
        "counts in its latency",
    ),
    closed: str = typer.Option(
        None,
        "--closed",
        help="Closed loop instead: C1,C2,... concurrent clients, each level for --duration s; "
        "reports throughput and latency per C",
    ),
    warmup_s: float = typer.Option(
        0.0,
        "--warmup-s",
        help="Seconds of unrecorded load first (open loop: Poisson at the trace's opening "
        "rate; closed loop: before each level)",
    ),
    cpu: int = typer.Option(
        None,
        "--cpu",
        help="Pin the generator to this CPU (keep it off the server's cores); the report says so",
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Report folder [default: runs/loadtest-<trace>-<rate>-<time>]",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Write into an existing non-empty report folder"
    ),
) -> None:
    """Send queries to a running `elasticir serve` and measure it: latency, goodput, quality.

    Open loop (the default): each request is sent at its time in the trace, however many are
    still in flight, and its latency runs from that intended time, so a stalled server (or a
    late generator) shows in every request that waited. Closed loop (--closed): C clients
    each send as soon as their previous answer is back.

    The report folder holds requests.jsonl (one record per request), summary.json,
    summary.md (the table printed at the end, and the machine) and timeseries.png (load,
    queue, chosen compute, rolling p95 against the SLO, rolling quality); a closed loop adds
    closed.png. The generator's own CPU share and sending lag are reported, so a saturated
    generator is visible. Ctrl-C stops sending, waits up to --timeout-s for answers, and
    writes the report of what was sent, marked interrupted.

    Every input is checked before a request is sent. At most 2,000,000 requests and 4 hours.

    \b
    Examples:
      elasticir loadtest http://127.0.0.1:8000 --trace poisson --rate 50 --duration 60 \\
          --topics queries.tsv --qrels qrels.txt --cpu 1
      elasticir loadtest http://127.0.0.1:8000 --trace burst:high=4 --rate 20 --duration 300 \\
          --topics queries.tsv -o runs/burst-20
      elasticir loadtest http://127.0.0.1:8000 --closed 1,2,4,8,16 --duration 10 \\
          --topics queries.tsv
    """
    from elasticir.loadtest import LoadTestConfig, run_loadtest
    from elasticir.machine import machine

    config = LoadTestConfig(
        url=url,
        topics=topics,
        duration=duration,
        trace=trace,
        rate=rate,
        qrels=qrels,
        metric=metric,
        slo_ms=slo_ms,
        k=k,
        seed=seed,
        timeout_s=timeout_s,
        max_connections=max_connections,
        closed=_concurrencies(closed),
        warmup_s=warmup_s,
        cpu=cpu,
        output=output,
        overwrite=overwrite,
        command=shlex.join(["elasticir", *sys.argv[1:]]),
    )
    live = sys.stderr.isatty()
    try:
        result = run_loadtest(config, machine=machine, progress=_show_progress if live else None)
    finally:
        if live:
            sys.stderr.write("\n")
    typer.echo(result.table(), nl=False)
    generator = result.meta["generator"]
    share = generator["cpu_share_of_one_core"]
    lag = generator["dispatch_lag_p99_ms"]
    pinned = generator["pinned_cpu"]
    typer.echo(
        f"generator: {share * 100:.0f}% of one core"
        + (f" (pinned to CPU {pinned})" if pinned is not None else " (not pinned)")
        + (f", dispatch lag p99 {lag:.2f} ms" if lag is not None else "")
        + f", {generator['connections_opened']} connections opened"
    )
    if (share or 0) > 0.8 or (lag or 0) > 10:
        typer.echo(
            "warning: the generator itself was busy or late; its latencies include that "
            "(pin it with --cpu, or lower the rate)",
            err=True,
        )
    if result.meta["interrupted"]:
        typer.echo("interrupted: the report covers what was sent before Ctrl-C", err=True)
    typer.echo(f"report: {result.output}")
