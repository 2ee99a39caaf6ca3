"""How much early exit could save with a ranker's exits as they are (no calibration margin).

    python benchmarks/exit_headroom.py --ranker models/ranker-minilm-cpu

The reranking benchmark calibrates each exit-policy family by Learn-then-Test and reports the
speedup of the chosen threshold. This script asks the question before calibration: over every
threshold of a family, what FLOPs speedup does the *empirical* consistency risk (mean
``1 - nDCG@10`` against the full ranker's own top 10, no labels) allow at a given delta? No
finite-sample margin is taken, so these are upper bounds on what a calibrated policy of the
family can reach on these exits.

Besides the per-candidate families of ``elasticir.rerank.policies`` it simulates *rank
pruning*, a cascade inside the model: from layer ``min_layer`` on, after each layer only the
best ``max(keep, ceil(rho * live))`` of a query's still-running candidates (by that layer's
score) go on; the others stop there and rank below every candidate that went deeper. If even
that rule needs a large risk for 1.5x, the limit is the exits' agreement with the last layer,
not the choice of confidence signal.

Data: ``--queries`` MS MARCO dev-subset queries (unlabelled; none of the DL19 queries, and
none of the reranking benchmark's calibration sample), each with its dense top-100 from the
DL19 corpus, recorded once at full width. Writes ``results/exit-headroom.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from foundation import encode, log, machine  # noqa: E402
from rerank import _dense, _passages  # noqa: E402

from elasticir.data import get_dataset  # noqa: E402
from elasticir.data.topics import read_queries_any  # noqa: E402
from elasticir.encoders.denser import ElasticDenser  # noqa: E402
from elasticir.index.store import EmbeddingStore  # noqa: E402
from elasticir.rerank.policies import (  # noqa: E402
    FAMILIES,
    calibrate_records,
    calibration_queries,
    query_losses,
)
from elasticir.rerank.ranker import ElasticRanker  # noqa: E402

DELTAS = (0.02, 0.05, 0.1)
RHOS = (0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranker", required=True, help="Trained ElasticRanker directory")
    parser.add_argument("--queries", type=int, default=80)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument(
        "--calibration-queries",
        type=int,
        default=200,
        help="Size of the reranking benchmark's calibration sample, left out here",
    )
    parser.add_argument("--keep", type=int, default=20, help="Rank pruning never keeps fewer")
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--out", type=Path, default=Path("results/exit-headroom"))
    args = parser.parse_args()

    started = time.time()
    dl = get_dataset("msmarco-dl19")
    base = ElasticDenser()
    ranker = ElasticRanker(args.ranker)
    store = EmbeddingStore(encode(base, dl.corpus, "dl19")).load()
    passages = _passages([dl.corpus])
    topics = read_queries_any(get_dataset("msmarco-dev-subset").queries)
    # the same draw as benchmarks/rerank.py's calibration sample, which is left out
    calibration = {q.query_id for q in random.Random(13).sample(topics, args.calibration_queries)}
    pool = [q for q in topics if q.query_id not in calibration]
    sample = random.Random(args.seed).sample(pool, min(args.queries, len(pool)))
    run = _dense(base, store, sample, args.depth)
    texts = {d: passages[d].encoder_text() for docs in run.values() for d in docs}
    data = calibration_queries(run, {q.query_id: q.text for q in sample}, texts, depth=args.depth)
    log(f"recording every exit of {sum(len(c.passages) for c in data)} pairs")
    records = ranker.layer_records(
        [c.query for c in data for _ in c.passages],
        [p for c in data for p in c.passages],
        progress=True,
    )
    offsets = np.cumsum([0] + [len(c.passages) for c in data])

    curves = {}
    for family in FAMILIES:
        if family == "classifier" and records.classifier is None:
            continue
        # only the per-threshold risks and speedups are read; delta and epsilon pick the
        # calibrated threshold, which this script does not use
        cal = calibrate_records(records, offsets, family, delta=0.05, epsilon=0.1)
        curves[family] = list(zip(cal.risks, cal.speedups))
    for min_layer in (1, 2, 3):
        curves[f"rank pruning, from layer {min_layer}"] = [
            rank_pruning(records, offsets, rho, min_layer, args.keep) for rho in RHOS
        ]
    report = {
        "machine": machine(),
        "ranker": args.ranker,
        "queries": len(data),
        "pairs": int(offsets[-1]),
        "keep": args.keep,
        "seconds": round(time.time() - started, 1),
        "frontier": {
            name: {str(d): best_speedup(points, d) for d in DELTAS}
            for name, points in curves.items()
        },
        "risk_at_1.5x": {name: risk_at(points, 1.5) for name, points in curves.items()},
        "curves": {
            name: [[round(r, 4), round(s, 3)] for r, s in pts] for name, pts in curves.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(report))
    print(render(report))


def rank_pruning(records, offsets, rho: float, min_layer: int, keep: int) -> tuple[float, float]:
    """(empirical consistency risk, FLOPs speedup) of rank pruning with ``rho``."""
    depth = records.depth
    scores = records.scores
    exit_layers = np.full(len(scores), depth, dtype=np.int64)
    for q in range(len(offsets) - 1):
        a, b = int(offsets[q]), int(offsets[q + 1])
        live = np.arange(a, b)
        for layer in range(min_layer, depth):
            kept = max(keep, math.ceil(rho * len(live)))
            if kept >= len(live):
                continue
            order = live[np.argsort(-scores[live, layer - 1], kind="stable")]
            exit_layers[order[kept:]] = layer
            live = order[:kept]
    chosen = scores[np.arange(len(scores)), exit_layers - 1]
    # a candidate that went deeper ranks above every one that stopped earlier
    tiered = exit_layers * 1e6 + chosen
    losses = query_losses(tiered, scores[:, depth - 1], offsets)
    spent = float((exit_layers * records.layer_cost).sum())
    return float(losses.mean()), float(records.layer_cost.sum()) * depth / spent


def best_speedup(points, delta: float) -> float:
    """The largest FLOPs speedup among thresholds whose empirical risk is <= delta."""
    return round(max([s for r, s in points if r <= delta] or [1.0]), 3)


def risk_at(points, speedup: float) -> float | None:
    """The smallest empirical risk among thresholds reaching ``speedup`` (None: none does)."""
    risks = [r for r, s in points if s >= speedup]
    return round(min(risks), 4) if risks else None


def render(report: dict) -> str:
    lines = [
        "# Early-exit headroom of the ranker's exits",
        "",
        f"Ranker `{report['ranker']}`; {report['queries']} MS MARCO dev queries (unlabelled, "
        f"not in the reranking benchmark's calibration sample) x their dense top-100 from the "
        f"DL19 corpus ({report['pairs']} pairs), every exit recorded at full width. Risk: mean "
        "1 - nDCG@10 against the full ranker's own top 10, measured on these queries with no "
        "calibration margin, so each speedup is an upper bound for a calibrated policy of that "
        f"family. Rank pruning keeps at least {report['keep']} candidates. Command: "
        f"`python benchmarks/exit_headroom.py --ranker {report['ranker']}`.",
        "",
        "| family | "
        + " | ".join(f"FLOPs speedup at risk <= {d}" for d in DELTAS)
        + " | lowest risk at >= 1.5x |",
        "|---|" + "---|" * (len(DELTAS) + 1),
    ]
    for name, row in report["frontier"].items():
        risk = report["risk_at_1.5x"][name]
        cells = " | ".join(f"{row[str(d)]:.2f}x" for d in DELTAS)
        lines.append(f"| {name} | {cells} | {'never reached' if risk is None else risk} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
