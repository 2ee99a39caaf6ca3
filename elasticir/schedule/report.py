"""The report of one serving run, measured (``elasticir loadtest``) or simulated, in one format.

A run is a list of :class:`RequestRecord`, one per request sent, in the order of its intended
send time. :func:`summarize` turns it into the numbers runs are compared by;
:func:`write_report` writes a run folder::

    requests.jsonl    one record per line (read back with read_records)
    summary.json      {"format": "elasticir-run-report", "version": 1, "meta": {...},
                       "summary": {...}}: meta says what ran (trace, rate, duration, url or
                       points, policy, slo_ms, machine, date, command)
    summary.md        the run's row of comparison_table, and the machine it ran on
    timeseries.png    offered load and goodput, queue length, chosen compute, rolling p95
                      latency against the SLO and rolling effective quality, over time

Latency runs from the *intended* send time (open loop, no coordinated omission). A late
answer is an ``ok`` record whose latency exceeds the SLO; it counts as answered but not as
good, and its quality counts 0 in the effective quality (as a rejected or failed one does).
Every value that has nothing to be computed from is None, never NaN.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from elasticir.data.errors import InputFormatError
from elasticir.data.files import atomic_file
from elasticir.schedule.traces import parse_trace

__all__ = [
    "REPORT_FORMAT",
    "STATUSES",
    "RequestRecord",
    "comparison_table",
    "machine_line",
    "plot_timeseries",
    "read_records",
    "read_report",
    "summarize",
    "write_records",
    "write_report",
]

REPORT_FORMAT = "elasticir-run-report"
STATUSES = ("ok", "rejected", "error")
BIN_S = 1.0  # the time series' bin
WINDOW_S = 5.0  # the rolling p95 and quality windows


@dataclass
class RequestRecord:
    """One request of a run. Times are seconds; ``intended`` from the run's start.

    ``latency``: intended send time to the answer (None when no answer came back);
    ``status``: ``ok``, ``rejected`` (503) or ``error`` (another status, a broken
    connection, a timeout); ``quality``: the metric of the returned ranking (None: the query
    is unjudged, or no ranking came back). ``send_lag`` (how late the generator itself wrote
    the request), ``server_latency`` (the server's own arrival-to-answer seconds, from the
    answer's timings) and ``error`` (what went wrong) are filled in by the load generator
    only.
    """

    id: int
    qid: str
    intended: float
    latency: float | None
    status: str
    choice: str | None = None
    quality: float | None = None
    queue_length: int | None = None
    batch_size: int | None = None
    doc_ids: list[str] = field(default_factory=list)
    send_lag: float | None = None
    server_latency: float | None = None
    error: str | None = None

    def within(self, slo: float) -> bool:
        """Answered, and within ``slo`` seconds of its intended send time."""
        return self.status == "ok" and self.latency is not None and self.latency <= slo


_FIELDS = {f.name for f in fields(RequestRecord)}
_REQUIRED = ("id", "qid", "intended", "latency", "status")


def _percentile_ms(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q) * 1000.0) if values.size else None


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def summarize(
    records: Sequence[RequestRecord],
    slo: float,
    duration: float,
    *,
    judged: Collection[str] | None = None,
) -> dict[str, Any]:
    """The numbers a run is compared by (``slo`` and ``duration`` in seconds).

    Latency percentiles (linear interpolation) are over answered requests; ``within_slo`` is
    the share of *all* requests answered within the SLO and ``goodput`` their number per
    second of ``duration``. ``mean_quality`` averages the judged answers;
    ``effective_quality`` averages every request of a judged query, a late, rejected or
    failed one counting 0. ``judged`` names the judged query ids; without it, a query is
    judged when any of its records has a quality. ``switch_rate`` is the share of
    consecutive answered requests (in intended order) whose choice differs from the one
    before.
    """
    count = len(records)
    ok = [r for r in records if r.status == "ok"]
    latencies = np.asarray([r.latency for r in ok if r.latency is not None], dtype=float)
    good = sum(1 for r in records if r.within(slo))
    if judged is None:
        judged = {r.qid for r in records if r.quality is not None}
    judged_records = [r for r in records if r.qid in judged]
    answered_quality = [r.quality for r in ok if r.quality is not None and r.qid in judged]
    effective = [
        (r.quality or 0.0) if r.within(slo) else 0.0 for r in judged_records
    ]  # an on-time answer of a judged query without a ranking scores 0
    ordered = sorted(ok, key=lambda r: (r.intended, r.id))
    switches = sum(1 for a, b in zip(ordered, ordered[1:]) if a.choice != b.choice)
    shares: dict[str, float] = {}
    for r in ordered:
        key = r.choice if r.choice is not None else "unknown"
        shares[key] = shares.get(key, 0) + 1
    lags = np.asarray([r.send_lag for r in records if r.send_lag is not None], dtype=float)
    outside = np.asarray(outside_times(ok), dtype=float)
    return {
        "count": count,
        "answered": len(ok),
        "late": sum(1 for r in ok if r.latency is not None and r.latency > slo),
        "rejected": sum(1 for r in records if r.status == "rejected"),
        "errors": sum(1 for r in records if r.status == "error"),
        "duration_s": float(duration),
        "slo_ms": float(slo) * 1000.0,
        "offered_rate": count / duration if duration > 0 else None,
        "answered_rate": len(ok) / duration if duration > 0 else None,
        "p50_ms": _percentile_ms(latencies, 50),
        "p95_ms": _percentile_ms(latencies, 95),
        "p99_ms": _percentile_ms(latencies, 99),
        "max_ms": float(latencies.max() * 1000.0) if latencies.size else None,
        "mean_ms": float(latencies.mean() * 1000.0) if latencies.size else None,
        "within_slo": good / count if count else None,
        "goodput": good / duration if duration > 0 else None,
        "judged": len(judged_records),
        "mean_quality": _mean(answered_quality),
        "effective_quality": _mean(effective),
        "switch_rate": switches / (len(ordered) - 1) if len(ordered) > 1 else None,
        "choice_shares": {k: v / len(ordered) for k, v in sorted(shares.items())},
        "send_lag_p99_ms": _percentile_ms(lags, 99),
        "outside_p50_ms": _percentile_ms(outside, 50),
    }


def outside_times(records: Iterable[RequestRecord]) -> list[float]:
    """Seconds each answered request spent outside the server's own clock (HTTP, JSON, the
    client's side): its latency minus the server's total, where the answer carried one."""
    return [
        r.latency - r.server_latency
        for r in records
        if r.status == "ok" and r.latency is not None and r.server_latency is not None
    ]


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def write_records(path: str | os.PathLike[str], records: Iterable[RequestRecord]) -> None:
    """``records`` as JSON lines, atomically."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(_finite(asdict(record)), separators=(",", ":")) + "\n")


def read_records(path: str | os.PathLike[str]) -> list[RequestRecord]:
    """The records of a ``requests.jsonl``; a bad line is an error naming it."""
    records = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                raise InputFormatError(path, number, "a JSON request record", line[:80]) from None
            if not isinstance(item, dict) or any(k not in item for k in _REQUIRED):
                raise InputFormatError(
                    path, number, "an object with " + ", ".join(_REQUIRED), line[:80]
                )
            if item["status"] not in STATUSES:
                raise InputFormatError(
                    path, number, "status " + ", ".join(STATUSES), repr(item["status"])
                )
            try:
                records.append(RequestRecord(**{k: v for k, v in item.items() if k in _FIELDS}))
            except TypeError as error:
                raise InputFormatError(path, number, "a request record", str(error)) from None
    return records


def machine_line(machine: Mapping[str, Any] | None) -> str:
    """``machine: <CPU model>, <n> cores (flags ...), Python x`` from a machine dict."""
    if not machine:
        return "machine: unknown"
    model = machine.get("cpu_model") or machine.get("cpu") or "unknown CPU"
    parts = [str(model)]
    if machine.get("cores"):
        parts.append(f"{machine['cores']} cores")
    text = "machine: " + ", ".join(parts)
    if machine.get("flags"):
        text += f" (flags: {' '.join(machine['flags'])})"
    if machine.get("python"):
        text += f", Python {machine['python']}"
    return text


def _cell(value: Any, spec: str = "", suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and spec:
        return format(value, spec) + suffix
    return f"{value}{suffix}"


def comparison_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """One Markdown table, a row per run: each run is a ``summary.json`` payload (``meta`` and
    ``summary``) or a summary alone. A run's name is ``meta["name"]``, else its folder."""
    head = (
        "| run | policy | trace | rate (req/s) | p50 ms | p95 ms | p99 ms | within SLO "
        "| goodput (req/s) | eff. quality | switch rate |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for i, run in enumerate(runs):
        meta = run.get("meta", {}) if "summary" in run else {}
        summary = run.get("summary", run)
        name = meta.get("name") or (Path(meta["output"]).name if meta.get("output") else i + 1)
        rate = meta.get("rate", summary.get("offered_rate"))
        within = summary.get("within_slo")
        cells = [
            str(name),
            str(meta.get("policy") or "-"),
            str(meta.get("trace") or "-"),
            _cell(float(rate) if rate is not None else None, ".4g"),
            _cell(summary.get("p50_ms"), ".1f"),
            _cell(summary.get("p95_ms"), ".1f"),
            _cell(summary.get("p99_ms"), ".1f"),
            _cell(within * 100 if within is not None else None, ".1f", "%"),
            _cell(summary.get("goodput"), ".4g"),
            _cell(summary.get("effective_quality"), ".4f"),
            _cell(summary.get("switch_rate"), ".3f"),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: str | os.PathLike[str],
    records: Sequence[RequestRecord],
    summary: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> dict[str, Path]:
    """Write the run folder (see the module docstring); every file atomically. Files of
    other names already in ``out_dir`` are left alone. Returns the written paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "requests": out / "requests.jsonl",
        "summary": out / "summary.json",
        "markdown": out / "summary.md",
        "timeseries": out / "timeseries.png",
    }
    write_records(paths["requests"], records)
    payload = {"format": REPORT_FORMAT, "version": 1, "meta": meta, "summary": summary}
    with atomic_file(paths["summary"]) as tmp:
        text = json.dumps(_finite(payload), indent=2, sort_keys=True, allow_nan=False)
        tmp.write_text(text + "\n", encoding="utf-8")
    title = "interrupted run" if meta.get("interrupted") else "run"
    with atomic_file(paths["markdown"]) as tmp:
        tmp.write_text(
            f"# {title} {meta.get('name') or out.name}\n\n"
            + comparison_table([{**payload, "meta": {"name": out.name, **meta}}])
            + "\n"
            + machine_line(meta.get("machine"))
            + "\n",
            encoding="utf-8",
        )
    slo = float(summary["slo_ms"]) / 1000.0
    plot_timeseries(paths["timeseries"], records, slo, float(summary["duration_s"]), meta)
    return paths


def read_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``summary.json`` (or the folder holding it), checked for its format."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputFormatError(path, error.lineno, "a JSON run report") from None
    if not isinstance(payload, dict) or payload.get("format") != REPORT_FORMAT:
        raise InputFormatError(path, None, f'"format": "{REPORT_FORMAT}"')
    return payload


def _rolling(times: np.ndarray, values: np.ndarray, ends: np.ndarray, reduce) -> np.ndarray:
    """``reduce`` of the values whose time lies in ``[end - WINDOW_S, end)``, per end."""
    order = np.argsort(times, kind="stable")
    times, values = times[order], values[order]
    lo = np.searchsorted(times, ends - WINDOW_S, side="left")
    hi = np.searchsorted(times, ends, side="left")
    return np.asarray(
        [reduce(values[a:b]) if b > a else np.nan for a, b in zip(lo, hi)], dtype=float
    )


def _nominal_rate(meta: Mapping[str, Any], times: np.ndarray, duration: float) -> Any:
    """The trace's own rate at ``times`` when meta names a shape trace and a rate."""
    if not meta.get("trace") or meta.get("rate") is None:
        return None
    try:
        trace = parse_trace(str(meta["trace"]))
    except ValueError:
        return None
    if trace.path is not None:
        return None  # a file's own rate is the offered line itself
    return trace.rate_at(times, float(meta["rate"]), duration)


def plot_timeseries(
    path: str | os.PathLike[str],
    records: Sequence[RequestRecord],
    slo: float,
    duration: float,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """The run over time (1 s bins of the intended send time), written as a PNG atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    meta = meta or {}
    edges = np.arange(0.0, max(duration, BIN_S) + BIN_S, BIN_S)
    ends = edges[1:]
    intended = np.asarray([r.intended for r in records], dtype=float)
    ok = np.asarray([r.status == "ok" for r in records], dtype=bool)
    good = np.asarray([r.within(slo) for r in records], dtype=bool)
    offered, _ = np.histogram(intended, edges)
    goodput, _ = np.histogram(intended[good], edges)

    fig = Figure(figsize=(9, 11), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(5, 1, sharex=True)
    title = f"{meta.get('policy') or 'run'}: trace {meta.get('trace', '?')}"
    if meta.get("rate") is not None:
        title += f", rate {meta['rate']:g} req/s"
    fig.suptitle(title + (" (interrupted)" if meta.get("interrupted") else ""), fontsize=10)

    ax = axes[0]
    fine = np.linspace(0.0, duration, 600)
    nominal = _nominal_rate(meta, fine, duration)
    if nominal is not None:
        ax.plot(fine, nominal, ":", color="grey", label="trace rate")
    ax.stairs(offered / BIN_S, edges, label="offered (sent)")
    ax.stairs(goodput / BIN_S, edges, label="answered within SLO")
    ax.set_ylabel("req/s")
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[1]
    queued = [(r.intended, r.queue_length) for r in records if r.queue_length is not None]
    if queued:
        qt, qv = (np.asarray(x, dtype=float) for x in zip(*queued))
        ax.plot(qt, qv, ".", ms=2, alpha=0.4, label="per request")
        index = np.digitize(qt, edges) - 1
        peak = np.full(len(edges) - 1, np.nan)
        for i in np.unique(index[(index >= 0) & (index < len(peak))]):
            peak[i] = qv[index == i].max()
        ax.stairs(peak, edges, label="max per second")
        ax.legend(fontsize=7, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no queue lengths reported", ha="center", transform=ax.transAxes)
    ax.set_ylabel("queue length")

    ax = axes[2]
    labels = sorted({r.choice or "unknown" for r in records if r.status == "ok"})
    rows = []
    for label in labels:
        chosen = intended[[r.status == "ok" and (r.choice or "unknown") == label for r in records]]
        rows.append(np.histogram(chosen, edges)[0])
    for status in ("rejected", "error"):
        counts = np.histogram(intended[[r.status == status for r in records]], edges)[0]
        if counts.any():
            labels.append(status)
            rows.append(counts)
    if rows:
        tops = np.cumsum(np.asarray(rows, dtype=float) / np.maximum(offered, 1), axis=0)
        for i, label in enumerate(labels):
            base = tops[i - 1] if i else 0.0
            ax.stairs(tops[i], edges, baseline=base, fill=True, label=label)
        ax.legend(fontsize=6, loc="upper left", ncol=max(1, len(labels) // 4))
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of requests")

    ax = axes[3]
    answered = [(r.intended, r.latency) for r, a in zip(records, ok) if a and r.latency is not None]
    if answered:
        at, lat = (np.asarray(x, dtype=float) for x in zip(*answered))
        p95 = _rolling(at, lat * 1000.0, ends, lambda v: np.percentile(v, 95))
        ax.plot(ends, p95, label=f"p95 over {WINDOW_S:g} s")
    ax.axhline(slo * 1000.0, color="red", ls="--", lw=1, label=f"SLO {slo * 1000:g} ms")
    ax.set_ylabel("latency ms")
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[4]
    judged = {r.qid for r in records if r.quality is not None}
    scored = [r for r in records if r.qid in judged]
    if scored:
        st = np.asarray([r.intended for r in scored], dtype=float)
        eff = np.asarray([(r.quality or 0.0) if r.within(slo) else 0.0 for r in scored])
        ax.plot(ends, _rolling(st, eff, ends, np.mean), label=f"effective, {WINDOW_S:g} s mean")
        served = [r for r in scored if r.status == "ok" and r.quality is not None]
        if served:
            ax.plot(
                ends,
                _rolling(
                    np.asarray([r.intended for r in served], dtype=float),
                    np.asarray([r.quality for r in served], dtype=float),
                    ends,
                    np.mean,
                ),
                ls=":",
                label="of the answers",
            )
        ax.legend(fontsize=7, loc="lower left")
    else:
        ax.text(0.5, 0.5, "no judged requests (no qrels)", ha="center", transform=ax.transAxes)
    ax.set_ylabel(str(meta.get("metric") or "quality"))
    ax.set_xlabel("intended send time, s from the start")
    fig.tight_layout()
    final = Path(path)
    with atomic_file(final) as tmp:
        fig.savefig(tmp, format="png")
    return final
