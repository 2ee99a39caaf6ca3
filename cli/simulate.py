"""``elasticir simulate``: schedule policies against operating points, without a model."""

from __future__ import annotations

import datetime as _dt
import sys
import time
from pathlib import Path

import typer
from elasticir.cli.common import reports_errors


@reports_errors
def main(
    points_file: Path = typer.Option(
        ..., "--points", help="Operating points (JSON) written by `elasticir profile`"
    ),
    trace: str = typer.Option(
        "poisson",
        help="Arrivals: poisson, step, burst, diurnal (options as burst:low=0.5,high=4,on=30,"
        "every=120) or a file of arrival times in seconds",
    ),
    rate: float = typer.Option(..., help="Reference rate R in requests/s (the trace scales it)"),
    duration: float = typer.Option(60.0, help="Seconds of arrivals"),
    policy: str = typer.Option(
        "deadline",
        help="Schedule policies to compare, separated by ';' or ',' (static:CHOICE, queue[:H], "
        "deadline[:M], or 'frontier' for static:C of every frontier choice)",
    ),
    slo_ms: float = typer.Option(..., "--slo-ms", help="Latency objective per request (ms)"),
    servers: int = typer.Option(1, min=1, help="Parallel servers (cores, GPUs, replicas)"),
    max_batch: int = typer.Option(16, min=1, help="Largest batch a server runs"),
    max_wait_ms: float = typer.Option(2.0, min=0.0, help="Dynamic batching: longest wait (ms)"),
    max_queue: int = typer.Option(1024, min=1, help="Waiting requests before rejecting"),
    shed: bool = typer.Option(
        False, help="Refuse requests that cannot make their deadline even at the cheapest choice"
    ),
    overhead_ms: float = typer.Option(
        0.0, min=0.0, help="Per-request time outside the model (HTTP, JSON) added to each answer"
    ),
    overhead_from: Path = typer.Option(
        None,
        "--overhead-from",
        exists=True,
        dir_okay=False,
        help="A load generator's requests.jsonl from a real run: each simulated answer draws "
        "its time outside the model from that run's answers (latency minus the server's own "
        "total) instead of --overhead-ms",
    ),
    cpu_per_request_ms: float = typer.Option(
        0.0,
        min=0.0,
        help="Per-request CPU the server spends on its own core beside the model (HTTP, JSON, "
        "scheduling; /metrics: process_cpu_seconds_total minus "
        "elasticir_model_cpu_seconds_total, per query): added to each batch's service time",
    ),
    topics: Path = typer.Option(
        None,
        help="Query order (qid<TAB>text): request j asks query j mod n, as `elasticir loadtest` "
        "does [default: the points' development queries, in profiling order]",
    ),
    seed: int = typer.Option(0, help="Seed of the arrivals and of the service-time draws"),
    output: Path = typer.Option(
        None, "--output", "-o", help="Folder for the reports [default: runs/simulate-<time>]"
    ),
    overwrite: bool = typer.Option(False, help="Replace files in an existing output folder"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress"),
) -> None:
    """Run schedule policies against a points file's cost models in a discrete-event simulation
    of the server (the same policy and scheduler code, N parallel servers, service times drawn
    with their measured spread, each answer worth its choice's profiled quality for its query;
    late or refused answers worth 0). Writes, per policy, the load generator's report (requests,
    summary JSON and Markdown, a time-series PNG) and one comparison table.

    Example: elasticir simulate --points points/dl19.json --trace burst --rate 20
    --duration 300 --slo-ms 400 --policy "deadline;queue;frontier"
    """
    from elasticir.data.topics import read_topics
    from elasticir.progress import progress_bar
    from elasticir.schedule.points import OperatingPoints
    from elasticir.schedule.policies import parse_schedule
    from elasticir.schedule.report import (
        comparison_table,
        outside_times,
        read_records,
        summarize,
        write_report,
    )
    from elasticir.schedule.traces import parse_trace
    from elasticir.simulation import simulate

    points = OperatingPoints.load(points_file)
    shape = parse_trace(trace)
    overhead: float | list[float] = overhead_ms / 1000
    if overhead_from is not None:
        if overhead_ms:
            raise ValueError("give --overhead-ms or --overhead-from, not both")
        overhead = [max(0.0, t) for t in outside_times(read_records(overhead_from))]
        if not overhead:
            raise ValueError(
                f"{overhead_from}: no answered request carries the server's own latency "
                "(records from elasticir loadtest against elasticir serve do)"
            )
    if slo_ms <= 0:
        raise ValueError(f"--slo-ms must be positive, got {slo_ms}")
    if duration <= 0 or rate <= 0:
        raise ValueError("--rate and --duration must be positive")
    specs = [s.strip() for s in policy.replace(";", ",").split(",") if s.strip()]
    expanded: list[str] = []
    for spec in specs:
        if spec == "frontier":
            expanded += [f"static:{p.choice}" for p in points.frontier]
        else:
            expanded.append(spec)
    policies = [parse_schedule(s) for s in expanded]
    for p in policies:  # a static choice the points lack: fail now, naming what was profiled
        p.bind(points, slo_ms / 1000, max_batch)
    if topics is not None:
        query_ids = [q.query_id for q in read_topics(topics)]
    else:
        query_ids = list(points.dev.get("query_ids") or sorted(points.points[0].per_query))
    if not query_ids:
        raise ValueError(f"{points_file}: no development query ids; pass --topics")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = output or Path("runs") / f"simulate-{stamp}"
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} exists and is not empty: pass --overwrite, or another -o")
    arrivals = shape.arrivals(rate, duration, seed)
    if len(arrivals) > 5_000_000:
        raise ValueError(f"{len(arrivals):,} requests: more than this command simulates (5M)")
    slo = slo_ms / 1000
    summaries = []
    for spec, sched in zip(expanded, policies):
        started = time.perf_counter()
        with progress_bar(not quiet, len(arrivals), f"simulating {spec}") as advance:
            result = simulate(
                points,
                sched,
                arrivals,
                query_ids,
                slo=slo,
                servers=servers,
                max_batch=max_batch,
                max_wait=max_wait_ms / 1000,
                max_queue=max_queue,
                shed=shed,
                overhead=overhead,
                cpu_per_request=cpu_per_request_ms / 1000,
                seed=seed,
                progress=advance,
            )
        seconds = time.perf_counter() - started
        summary = summarize(result.records, slo, duration)
        meta = {
            "kind": "simulation",
            "points": str(points_file),
            "policy": spec,
            "trace": str(shape),
            "rate": rate,
            "duration": duration,
            "slo_ms": slo_ms,
            "servers": servers,
            "max_batch": max_batch,
            "max_wait_ms": max_wait_ms,
            "max_queue": max_queue,
            "shed": shed,
            "overhead_ms": overhead_ms,
            "overhead_from": None if overhead_from is None else str(overhead_from),
            "cpu_per_request_ms": cpu_per_request_ms,
            "seed": seed,
            "simulated_in_s": round(seconds, 2),
            "switches": result.switches,
            "counts": result.counts,
            "utilisation": [round(b / max(duration, 1e-9), 4) for b in result.busy],
            "machine_of_points": points.machine,
            "command": " ".join(sys.argv),
        }
        folder = out / spec.replace(":", "_").replace(">", "_").replace("%", "_").replace("@", "_")
        write_report(folder, result.records, summary, meta)
        summaries.append({"meta": {**meta, "name": spec}, "summary": summary})
        typer.echo(
            f"{spec}: {len(result.records):,} requests simulated in {seconds:.1f} s", err=True
        )
    table = comparison_table(summaries)
    (out / "comparison.md").write_text(table + "\n", encoding="utf-8")
    typer.echo(table)
    typer.echo(f"reports: {out}")
