"""Closed-loop results: one summary per concurrency, as a table and a plot.

In a closed loop each of C clients waits for its answer before sending again, so the offered
load adapts to the server: it measures the throughput the server sustains at each concurrency
and the latency it costs, not the latency users at a given arrival rate would see (that is
the open loop's job).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from elasticir.data.files import atomic_file
from elasticir.schedule.report import RequestRecord, summarize

__all__ = ["closed_table", "level_summaries", "plot_closed"]


def level_summaries(
    records: Sequence[RequestRecord],
    levels: Sequence[tuple[int, float, float]],
    slo: float,
    judged: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """A :func:`summarize` per ``(concurrency, start, end)``, over the records sent in it,
    with ``concurrency`` and ``throughput`` (answers per second) added."""
    out = []
    for concurrency, start, end in levels:
        mine = [r for r in records if start <= r.intended < end]
        summary = summarize(mine, slo, end - start, judged=judged)
        out.append({"concurrency": concurrency, "throughput": summary["answered_rate"], **summary})
    return out


def _num(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def closed_table(levels: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table, one row per concurrency."""
    lines = [
        "| clients | requests | throughput (req/s) | p50 ms | p95 ms | p99 ms | max ms "
        "| within SLO | rejected | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        within = level.get("within_slo")
        lines.append(
            f"| {level['concurrency']} | {level['count']} | {_num(level['throughput'], '.4g')} "
            f"| {_num(level['p50_ms'], '.1f')} | {_num(level['p95_ms'], '.1f')} "
            f"| {_num(level['p99_ms'], '.1f')} | {_num(level['max_ms'], '.1f')} "
            f"| {_num(within * 100 if within is not None else None, '.1f')}% "
            f"| {level['rejected']} | {level['errors']} |"
        )
    return "\n".join(lines) + "\n"


def plot_closed(
    path: str | os.PathLike[str], levels: Sequence[Mapping[str, Any]], slo: float, title: str = ""
) -> Path:
    """Throughput and p95 latency against the number of clients, as a PNG (atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    clients = [level["concurrency"] for level in levels]
    nan = float("nan")
    ax.plot(clients, [level["throughput"] or 0.0 for level in levels], "o-", label="throughput")
    ax.set_xscale("log", base=2)
    ax.set_xticks(clients, [str(c) for c in clients])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("concurrent clients (closed loop)")
    ax.set_ylabel("answers per second")
    right = ax.twinx()
    p95 = [nan if level["p95_ms"] is None else level["p95_ms"] for level in levels]
    right.plot(clients, p95, "s--", color="tab:orange", label="p95 latency")
    right.axhline(slo * 1000, color="red", ls=":", lw=1, label=f"SLO {slo * 1000:g} ms")
    right.set_ylabel("p95 latency, ms")
    right.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    final = Path(path)
    with atomic_file(final) as tmp:
        fig.savefig(tmp, format="png")
    return final
