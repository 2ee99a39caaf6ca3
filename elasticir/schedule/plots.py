"""The operating points as a picture: quality against single-query service time, the Pareto
frontier joined, each point labelled with its choice."""

from __future__ import annotations

import os

from elasticir.data.files import atomic_file
from elasticir.schedule.points import OperatingPoints

__all__ = ["plot_points"]


def plot_points(points: OperatingPoints, path: str | os.PathLike[str], title: str = "") -> None:
    """Write a PNG of ``points`` to ``path`` (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for point in points.points:
        x, y = point.cost.predict(1) * 1000, point.value(points.metric)
        ax.scatter([x], [y], color="tab:blue" if point.frontier else "tab:gray", zorder=3)
        ax.annotate(
            str(point.choice),
            (x, y),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
            color="black" if point.frontier else "dimgray",
        )
    front = points.frontier
    ax.plot(
        [p.cost.predict(1) * 1000 for p in front],
        [p.value(points.metric) for p in front],
        color="tab:blue",
        label="Pareto frontier",
        zorder=2,
    )
    ax.set_xscale("log")
    ax.set_xlabel("service time of one query (ms, log scale; measured on this machine)")
    ax.set_ylabel(points.metric + ("" if points.dev.get("judged", True) else " (no judgements)"))
    cpu = points.machine.get("cpu_model", "")
    ax.set_title(title or f"operating points ({len(points.points)} choices) {cpu}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
