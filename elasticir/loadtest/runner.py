"""A load test from a frozen config: every input checked before anything is sent, the run, the
scoring against qrels, and the run folder (:mod:`elasticir.schedule.report`).

``run_loadtest(config)`` is what ``elasticir loadtest`` calls. The order is: :func:`check`
(URL, numbers, metric, trace, topics, qrels, output folder, CPU; no network), then the
server's ``/healthz`` (its SLO when the config gives none, and its policy for the report),
then the run, then the report.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from elasticir.data.errors import CountedWarning
from elasticir.data.files import atomic_file, check_writable
from elasticir.data.records import Qrels, Query
from elasticir.data.topics import read_queries_any
from elasticir.data.trec import read_qrels
from elasticir.loadtest.closed import closed_table, level_summaries, plot_closed
from elasticir.loadtest.generator import LoadRun, Progress, run_closed, run_open
from elasticir.loadtest.http import ServerAddress, get_json
from elasticir.schedule.quality import DEFAULT_METRIC, check_metric, ranking_quality
from elasticir.schedule.report import (
    REPORT_FORMAT,
    RequestRecord,
    machine_line,
    plot_timeseries,
    summarize,
    write_records,
    write_report,
)
from elasticir.schedule.traces import Trace, parse_trace

__all__ = [
    "MAX_DURATION_S",
    "MAX_REQUESTS",
    "LoadPlan",
    "LoadTestConfig",
    "LoadTestResult",
    "check",
    "run_loadtest",
    "score_records",
]

MAX_REQUESTS = 2_000_000
MAX_DURATION_S = 4 * 3600.0
HEALTH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LoadTestConfig:
    """What ``elasticir loadtest`` was asked for (times in seconds; see its ``--help``)."""

    url: str
    topics: Path
    duration: float
    trace: str = "poisson"
    rate: float | None = None  # requests/s; open loop only
    qrels: Path | None = None
    metric: str = DEFAULT_METRIC
    slo_ms: float | None = None
    k: int = 10
    seed: int = 0
    timeout_s: float = 30.0
    max_connections: int = 256
    closed: tuple[int, ...] = ()  # concurrencies; empty: open loop
    warmup_s: float = 0.0
    cpu: int | None = None
    output: Path | None = None
    overwrite: bool = False
    command: str = ""


@dataclass
class LoadPlan:
    """A checked config: the parsed inputs and the arrival times (open loop)."""

    config: LoadTestConfig
    address: ServerAddress
    queries: list[Query]
    qrels: Qrels | None
    metric: str
    trace: Trace | None
    arrivals: np.ndarray
    warmup: np.ndarray
    output: Path


@dataclass
class LoadTestResult:
    output: Path
    meta: dict[str, Any]
    summary: dict[str, Any]
    levels: list[dict[str, Any]] = field(default_factory=list)  # closed loop

    def table(self) -> str:
        """The Markdown table of ``summary.md``."""
        return (self.output / "summary.md").read_text(encoding="utf-8")


def _default_output(config: LoadTestConfig, trace: Trace | None) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if config.closed:
        name = f"loadtest-closed-{stamp}"
    else:
        shape = trace.path.stem if trace is not None and trace.path else str(trace)
        name = f"loadtest-{shape}-{config.rate:g}-{stamp}"
    return Path("runs") / re.sub(r"[^A-Za-z0-9._=-]+", "_", name)


def _check_numbers(config: LoadTestConfig) -> None:
    def positive(value: float, option: str) -> None:
        if not value > 0 or not np.isfinite(value):
            raise ValueError(f"{option} must be a positive number, got {value}")

    positive(config.duration, "--duration")
    positive(config.timeout_s, "--timeout-s")
    if config.slo_ms is not None:
        positive(config.slo_ms, "--slo-ms")
    if config.k < 1:
        raise ValueError(f"--k must be at least 1, got {config.k}")
    if config.max_connections < 1:
        raise ValueError(f"--max-connections must be at least 1, got {config.max_connections}")
    if not 0 <= config.warmup_s <= MAX_DURATION_S:
        raise ValueError(f"--warmup-s must be in [0, {MAX_DURATION_S:g}], got {config.warmup_s}")
    levels = len(config.closed) or 1
    total = levels * (config.duration + config.warmup_s)
    if total > MAX_DURATION_S:
        raise ValueError(
            f"the run would last {total:g} s; a load test is bounded to {MAX_DURATION_S:g} s (4 h)"
        )
    if config.closed:
        bad = [c for c in config.closed if c < 1]
        if bad:
            raise ValueError(f"--closed: concurrencies must be positive, got {bad[0]}")
        if max(config.closed) > config.max_connections:
            raise ValueError(
                f"--closed {max(config.closed)} needs that many connections; "
                f"--max-connections is {config.max_connections}"
            )
        return
    if config.rate is None:
        raise ValueError("--rate is required in open loop (without --closed)")
    positive(config.rate, "--rate")


def check(config: LoadTestConfig) -> LoadPlan:
    """Every input checked and read, nothing sent: ``ValueError`` (an ``InputFormatError``
    naming file and line for a bad file) on the first problem."""
    address = ServerAddress.parse(config.url)
    _check_numbers(config)
    metric = check_metric(config.metric)
    trace = None if config.closed else parse_trace(config.trace)
    queries = read_queries_any(config.topics)
    qrels = read_qrels(config.qrels) if config.qrels is not None else None
    if qrels is not None:
        judged = sum(1 for q in queries if qrels.get(q.query_id))
        if not judged:
            raise ValueError(
                f"{config.qrels}: judges none of the {len(queries)} queries of {config.topics} "
                "(do the qids match?)"
            )
        if judged < len(queries):
            warnings.warn(
                f"{len(queries) - judged} of {len(queries)} queries have no judgements in "
                f"{config.qrels}; their requests are left out of the quality numbers",
                CountedWarning,
                stacklevel=2,
            )
    arrivals = warmup = np.zeros(0)
    if trace is not None:
        assert config.rate is not None
        if trace.path is None and trace.peak(config.rate) * config.duration > MAX_REQUESTS:
            raise ValueError(
                f"--rate {config.rate:g} over --duration {config.duration:g} s offers more than "
                f"{MAX_REQUESTS:,} requests; shorten the run or lower the rate"
            )
        arrivals = trace.arrivals(config.rate, config.duration, config.seed)
        if len(arrivals) > MAX_REQUESTS:
            raise ValueError(
                f"{len(arrivals):,} requests: a load test sends at most {MAX_REQUESTS:,}"
            )
        if len(arrivals) == 0:
            raise ValueError(f"trace {trace} sends no request in {config.duration:g} s")
        if config.warmup_s > 0:  # at the trace's opening rate, with a seed of its own
            opening = float(trace.rate_at(0.0, config.rate, config.duration)) or config.rate
            warmup = parse_trace("poisson").arrivals(opening, config.warmup_s, config.seed + 1)
    output = config.output or _default_output(config, trace)
    if output.exists():
        if not output.is_dir():
            raise ValueError(f"output {output} is a file; expected a folder for the run report")
        if any(output.iterdir()) and not config.overwrite:
            raise ValueError(
                f"output folder {output} exists and is not empty; pass --overwrite to write "
                "the report into it (files of the same names are replaced, others kept)"
            )
    check_writable(output, "run report", directory=True)
    if config.cpu is not None:
        allowed = os.sched_getaffinity(0)
        if config.cpu not in allowed:
            raise ValueError(f"--cpu {config.cpu}: this process may only run on {sorted(allowed)}")
    return LoadPlan(config, address, queries, qrels, metric, trace, arrivals, warmup, output)


def server_health(address: ServerAddress, timeout: float = HEALTH_TIMEOUT_S) -> dict | None:
    """The server's ``/healthz`` object, or None when it answers but not with one (a server
    without that endpoint); ``ValueError`` when nothing answers, or when the server says it
    is not ready (503 with its state: starting, draining, stopped)."""
    try:
        status, body = asyncio.run(get_json(address, "/healthz", timeout))
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as error:
        why = "no answer" if isinstance(error, asyncio.TimeoutError) else str(error) or "closed"
        raise ValueError(
            f"cannot reach the server at {address.url()} ({why}); is `elasticir serve` running?"
        ) from None
    if status == 503 and isinstance(body, dict) and body.get("status"):
        raise ValueError(
            f"the server at {address.url()} is not ready (/healthz: {body['status']}); "
            "start the load test once it answers ok"
        )
    return body if status == 200 and isinstance(body, dict) else None


def score_records(records: list[RequestRecord], qrels: Qrels, metric: str) -> None:
    """Set the quality of every answered record of a judged query, one ir_measures pass.

    A ranking is scored in the order it was served (its scores are replaced by descending
    ranks), so ties in score cannot reorder it; an empty ranking scores 0."""
    answered = [r for r in records if r.status == "ok" and qrels.get(r.qid)]
    rankings = [
        (r.qid, {doc: float(len(r.doc_ids) - i) for i, doc in enumerate(r.doc_ids)})
        for r in answered
    ]
    for record, value in zip(answered, ranking_quality(rankings, qrels, metric)):
        record.quality = 0.0 if value is None else value


def _slo(config: LoadTestConfig, health: Mapping[str, Any] | None, url: str) -> float:
    if config.slo_ms is not None:
        return config.slo_ms / 1000.0
    value = (health or {}).get("slo_ms")
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{url}/healthz gives no slo_ms; pass --slo-ms")
    return float(value) / 1000.0


def run_loadtest(
    config: LoadTestConfig,
    *,
    machine: Callable[[], Mapping[str, Any]] = dict,
    progress: Callable[[Progress], None] | None = None,
) -> LoadTestResult:
    """Check, run, score and write the report folder; ``machine()`` describes this machine
    for the report (called after the run)."""
    plan = check(config)
    health = server_health(plan.address)
    if health is None and config.slo_ms is not None:
        warnings.warn(
            f"{plan.address.url('/healthz')} gives no health object; the report names no policy",
            CountedWarning,
            stacklevel=2,
        )
    slo = _slo(config, health, plan.address.url())
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    common = dict(
        k=config.k,
        timeout=config.timeout_s,
        max_connections=config.max_connections,
        warmup_s=config.warmup_s,
        cpu=config.cpu,
        progress=progress,
    )
    if config.closed:
        run = run_closed(
            plan.address, plan.queries, config.closed, duration=config.duration, **common
        )
    else:
        run = run_open(
            plan.address,
            plan.queries,
            plan.arrivals,
            duration=config.duration,
            warmup=plan.warmup,
            **common,
        )
    judged = None
    if plan.qrels is not None:
        score_records(run.records, plan.qrels, plan.metric)
        judged = {q.query_id for q in plan.queries if plan.qrels.get(q.query_id)}
    meta = _meta(plan, run, slo, health, started, machine())
    return _write(plan, run, slo, judged, meta)


def _meta(
    plan: LoadPlan,
    run: LoadRun,
    slo: float,
    health: Mapping[str, Any] | None,
    started: str,
    machine: Mapping[str, Any],
) -> dict[str, Any]:
    config = plan.config
    return {
        "name": plan.output.name,
        "output": str(plan.output),
        "mode": "closed" if config.closed else "open",
        "url": plan.address.url(),
        "trace": None if plan.trace is None else str(plan.trace),
        "rate": config.rate if not config.closed else None,
        "duration_s": config.duration,
        "measured_s": run.elapsed,
        "warmup_s": config.warmup_s,
        "seed": config.seed,
        "closed": list(config.closed),
        "topics": str(config.topics),
        "queries": len(plan.queries),
        "qrels": None if config.qrels is None else str(config.qrels),
        "metric": plan.metric,
        "k": config.k,
        "slo_ms": slo * 1000.0,
        "slo_from": "--slo-ms" if config.slo_ms is not None else "/healthz",
        "policy": (health or {}).get("policy"),
        "server": dict(health) if health else None,
        "timeout_s": config.timeout_s,
        "max_connections": config.max_connections,
        "generator": run.generator,
        "interrupted": run.interrupted,
        "machine": dict(machine),
        "date": started,
        "command": config.command,
    }


def _write(
    plan: LoadPlan, run: LoadRun, slo: float, judged: set[str] | None, meta: dict[str, Any]
) -> LoadTestResult:
    out = plan.output
    duration = run.elapsed if run.interrupted or plan.config.closed else plan.config.duration
    summary = summarize(run.records, slo, duration, judged=judged)
    if not plan.config.closed:
        write_report(out, run.records, summary, meta)
        return LoadTestResult(out, meta, summary)
    levels = level_summaries(run.records, run.levels, slo, judged)
    out.mkdir(parents=True, exist_ok=True)
    write_records(out / "requests.jsonl", run.records)
    payload = {
        "format": REPORT_FORMAT,
        "version": 1,
        "meta": meta,
        "summary": summary,
        "levels": levels,
    }
    with atomic_file(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    title = "interrupted closed-loop run" if run.interrupted else "closed-loop run"
    with atomic_file(out / "summary.md") as tmp:
        tmp.write_text(
            f"# {title} {out.name}\n\n{closed_table(levels)}\n{machine_line(meta['machine'])}\n",
            encoding="utf-8",
        )
    plot_closed(out / "closed.png", levels, slo, f"closed loop against {meta['url']}")
    end = max((e for _, _, e in run.levels), default=0.0)
    plot_timeseries(out / "timeseries.png", run.records, slo, end, meta)
    return LoadTestResult(out, meta, summary, levels)
