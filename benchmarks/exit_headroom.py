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
not the choice of confidence signal. Two rows ask whether the first stage could stand in for the
exits: reranking only the first stage's top R (no early exit at all), and a CALM-style exit
classifier that reads the candidate's first-stage rank beside the exit's score (fitted on the
refit queries, so only with ``--refit-queries`` > 0). Per exit it also reports how well that
exit's scores correlate with the last exit's within a query (and the first stage's scores with
it, for reference), and the risk of stopping every pair there.

``--refit-queries N`` (default 120; 0 skips it) asks whether cheaper training could fix the
exits: on N further dev queries (disjoint from both samples) it records every layer's [CLS]
state, refits the heads of exits 1..L-1 with the trunk and the last head frozen (MSE to the
last exit's score plus a listwise KL over each query's candidates, a self-distillation that
needs no labels), and recomputes the entropy, margin and rank-pruning curves with the refit
heads on the same evaluation queries. The refit heads are not saved.

Data: ``--queries`` MS MARCO dev-subset queries (unlabelled; none of the DL19 queries, none
the ranker was trained on, and none of the reranking benchmark's calibration sample), each
with its dense top-100 from the DL19 corpus, recorded once at full width.
Writes ``results/exit-headroom.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from local files, never the hub

from elasticir.bench import (  # noqa: E402
    dense_search,
    encode,
    load_corpora,
    log,
    machine,
    report_path,
    trained_query_ids,
)
from elasticir.data import get_dataset  # noqa: E402
from elasticir.data.topics import read_queries_any  # noqa: E402
from elasticir.index.store import EmbeddingStore  # noqa: E402
from elasticir.models.denser import ElasticDenser  # noqa: E402
from elasticir.rerank.policies import (  # noqa: E402
    MEASURES,
    calibrate_records,
    calibration_queries,
    first_stage_ranks,
    query_losses,
)
from elasticir.rerank.ranker import ElasticRanker  # noqa: E402

DELTAS = (0.02, 0.05, 0.1)
RHOS = (0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
CUTOFFS = (90, 80, 70, 60, 50, 40, 35, 30, 25, 20, 15, 10)
TAUS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
CUTOFF = "no early exit: rerank only the first stage's top R"
RANK_AWARE = "exit classifier reading exit score + first-stage rank"


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
    parser.add_argument(
        "--refit-queries",
        type=int,
        default=120,
        help="Dev queries to refit the exit heads on (0: skip the refit diagnostic)",
    )
    parser.add_argument("--refit-steps", type=int, default=600)
    parser.add_argument("--out", type=Path, default=Path("results/exit-headroom"))
    args = parser.parse_args()

    started = time.time()
    dl = get_dataset("msmarco-dl19")
    base = ElasticDenser()
    ranker = ElasticRanker(args.ranker)
    store = EmbeddingStore(encode(base, dl.corpus, "dl19")).load()
    passages = load_corpora([dl.corpus])
    topics = read_queries_any(get_dataset("msmarco-dev-subset").queries)
    # the queries the ranker was trained on (its anchor groups') and the same draw as
    # benchmarks/rerank.py's calibration sample are both left out
    trained = trained_query_ids(ranker)
    topics = [q for q in topics if q.query_id not in trained]
    calibration = {q.query_id for q in random.Random(13).sample(topics, args.calibration_queries)}
    pool = [q for q in topics if q.query_id not in calibration]
    sample = random.Random(args.seed).sample(pool, min(args.queries, len(pool)))
    data, first = _candidates(base, store, passages, sample, args.depth)
    log(f"recording every exit of {sum(len(c.passages) for c in data)} pairs")
    refit = args.refit_queries > 0
    records = _records(ranker, data, states=refit)
    offsets = np.cumsum([0] + [len(c.passages) for c in data])

    curves = {}
    for family in ("entropy", *MEASURES):  # the exits alone; the rank-aware row is below
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
    ranks = first_stage_ranks(offsets)
    curves[CUTOFF] = [depth_cutoff(records, offsets, ranks, r) for r in CUTOFFS]
    refit_report = None
    if refit:
        chosen = {q.query_id for q in sample}
        rest = [q for q in pool if q.query_id not in chosen]
        extra = random.Random(args.seed + 1).sample(rest, min(args.refit_queries, len(rest)))
        train, train_first = _candidates(base, store, passages, extra, args.depth)
        log(f"refit diagnostic: recording every exit of {len(train) * args.depth} more pairs")
        train_records = _records(ranker, train, states=True, classifier=False)
        train_offsets = np.cumsum([0] + [len(c.passages) for c in train])
        refit_scores, fit = refit_heads(
            ranker, train_records, train_offsets, records.states, args.refit_steps, args.seed
        )
        refit_scores = np.column_stack([refit_scores, records.scores[:, -1]])
        refitted = dataclasses.replace(records, scores=refit_scores, classifier=None, states=None)
        for family in ("entropy", "margin"):
            cal = calibrate_records(refitted, offsets, family, delta=0.05, epsilon=0.1)
            curves[f"{family}, refit heads"] = list(zip(cal.risks, cal.speedups))
        curves["rank pruning, from layer 3, refit heads"] = [
            rank_pruning(refitted, offsets, rho, 3, args.keep) for rho in RHOS
        ]
        # a CALM-style exit classifier that also reads the candidate's first-stage rank,
        # fitted on the refit queries (no labels: the target is the full ranker's own top 10)
        probabilities = rank_aware_classifier(
            train_records, train_offsets, first_stage_ranks(train_offsets), records, ranks
        )
        curves[RANK_AWARE] = [classifier_exit(records, offsets, probabilities, tau) for tau in TAUS]
        refit_report = {
            "queries": len(train),
            "pairs": int(train_offsets[-1]),
            **fit,
            "exits_after": exit_correlation(refitted, offsets),
        }
    report = {
        "machine": machine(),
        "ranker": args.ranker,
        "queries": len(data),
        "pairs": int(offsets[-1]),
        "keep": args.keep,
        "seconds": round(time.time() - started, 1),
        "exits": exit_correlation(records, offsets),
        "first_stage_correlation": round(
            mean_correlation(first, records.scores[:, -1], offsets), 4
        ),
        "refit": refit_report,
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
    report_path(args.out, ".json").write_text(json.dumps(report, indent=2) + "\n")
    report_path(args.out, ".md").write_text(render(report))
    print(render(report))


def _candidates(base, store, passages, queries, depth: int) -> tuple[list, np.ndarray]:
    """Each query's dense top ``depth`` (in first-stage order: a candidate's position is its
    first-stage rank) and the first-stage scores of all candidates, in the same order."""
    run = dense_search(base, store, queries, depth)
    texts = {d: passages[d].encoder_text() for docs in run.values() for d in docs}
    data = calibration_queries(run, {q.query_id: q.text for q in queries}, texts, depth=depth)
    ranked = [sorted(run[q.query_id].values(), reverse=True)[:depth] for q in queries]
    first = np.array([s for scores in ranked for s in scores], dtype=np.float32)
    if len(first) != sum(len(c.passages) for c in data):
        raise SystemExit("first-stage scores and candidates disagree (a query without text?)")
    return data, first


def _records(ranker, data, states: bool, classifier: bool = True):
    return ranker.layer_records(
        [c.query for c in data for _ in c.passages],
        [p for c in data for p in c.passages],
        classifier=classifier,
        progress=True,
        states=states,
    )


def mean_correlation(x: np.ndarray, y: np.ndarray, offsets) -> float:
    """Mean within-query Pearson correlation of ``x`` and ``y`` (queries with a constant side
    are left out)."""
    values = []
    for q in range(len(offsets) - 1):
        a, b = int(offsets[q]), int(offsets[q + 1])
        if b - a > 1 and x[a:b].std() > 0 and y[a:b].std() > 0:
            values.append(float(np.corrcoef(x[a:b], y[a:b])[0, 1]))
    return float(np.mean(values))


def exit_correlation(records, offsets) -> list[dict]:
    """Per exit: the mean within-query Pearson correlation of its scores with the last exit's,
    and the consistency risk of stopping every pair at that exit."""
    scores, last = records.scores, records.scores[:, -1]
    out = []
    for layer in range(records.depth):
        risk = float(query_losses(scores[:, layer], last, offsets).mean())
        out.append(
            {
                "exit": layer + 1,
                "correlation": round(mean_correlation(scores[:, layer], last, offsets), 4),
                "risk_all_stop_here": round(risk, 4),
            }
        )
    return out


def refit_heads(ranker, train, offsets, states, steps: int, seed: int) -> tuple[np.ndarray, dict]:
    """Refit exits 1..L-1 on ``train``'s recorded [CLS] states (trunk and last head frozen):
    MSE to the last exit's score plus the listwise KL of each query's softmax over its
    candidates, AdamW over 16 queries a step. Returns the refit heads' scores on ``states``
    for exits 1..L-1 and the fit's statistics."""
    import copy

    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    heads = copy.deepcopy(ranker.net.heads).float().train()
    depth = train.depth
    # the last exit is the teacher: left as it is
    modules = [*heads.out[: depth - 1], *heads.dense[: depth - 1]]  # pooled heads: no dense
    trained = [p for m in modules for p in m.parameters()]
    for parameter in trained:
        parameter.requires_grad_(True)
    x = torch.from_numpy(train.states)
    target = torch.from_numpy(train.scores[:, -1])
    groups = [np.arange(offsets[q], offsets[q + 1]) for q in range(len(offsets) - 1)]
    sizes = {len(g) for g in groups}
    if len(sizes) != 1:
        raise SystemExit("the refit needs every query to have the same number of candidates")
    optimizer = torch.optim.AdamW(trained, lr=1e-3, weight_decay=1e-2)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        picks = rng.choice(len(groups), min(16, len(groups)), replace=False)
        rows = torch.from_numpy(np.concatenate([groups[j] for j in picks]))
        t = target[rows]
        loss = 0.0
        for layer in range(depth - 1):
            h = heads(layer, x[rows, layer + 1])
            listwise = F.kl_div(
                F.log_softmax(h.view(len(picks), -1), -1),
                F.log_softmax(t.view(len(picks), -1), -1),
                log_target=True,
                reduction="batchmean",
            )
            loss = loss + F.mse_loss(h, t) + listwise
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    heads.eval()
    with torch.inference_mode():
        held = torch.from_numpy(states)
        columns = [heads(layer, held[:, layer + 1]).numpy() for layer in range(depth - 1)]
    fit = {"steps": steps, "final_train_loss": round(float(loss.item()), 4)}
    return np.stack(columns, 1), fit


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


def depth_cutoff(records, offsets, ranks, cutoff: int) -> tuple[float, float]:
    """(risk, FLOPs speedup) of reranking only the first stage's top ``cutoff``: the others
    are never scored and keep their first-stage order below the reranked ones."""
    depth = records.depth
    scored = ranks <= cutoff
    tiered = np.where(scored, 1e6 + records.scores[:, -1], -ranks.astype(np.float64))
    losses = query_losses(tiered, records.scores[:, -1], offsets)
    spent = float(records.layer_cost[scored].sum()) * depth
    return float(losses.mean()), float(records.layer_cost.sum()) * depth / spent


def _logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iterations: int = 50):
    """Weights of an L2-regularised logistic regression (Newton steps; ``x`` gets a bias
    column and is standardised). Returns a function from features to probabilities."""
    mean, scale = x.mean(0), x.std(0) + 1e-9
    design = np.column_stack([np.ones(len(x)), (x - mean) / scale])
    w = np.zeros(design.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-design @ w))
        gradient = design.T @ (p - y) / len(y) + l2 * w
        hessian = (design * (p * (1 - p))[:, None]).T @ design / len(y) + l2 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break

    def predict(features: np.ndarray) -> np.ndarray:
        z = np.column_stack([np.ones(len(features)), (features - mean) / scale]) @ w
        return 1.0 / (1.0 + np.exp(-z))

    return predict


def _in_top10(records, offsets) -> np.ndarray:
    top = np.zeros(len(records.scores), dtype=bool)
    last = records.scores[:, -1]
    for q in range(len(offsets) - 1):
        a, b = int(offsets[q]), int(offsets[q + 1])
        top[a + np.argsort(-last[a:b], kind="stable")[:10]] = True
    return top


def rank_aware_classifier(train, train_offsets, train_ranks, records, ranks) -> np.ndarray:
    """Per exit 1..L-1, the probability that a candidate is in the full ranker's top 10 from
    that exit's score and the log of its first-stage rank: a logistic regression fitted on
    ``train`` and applied to ``records``, ``(pairs, L - 1)``."""
    target = _in_top10(train, train_offsets).astype(np.float64)
    columns = []
    for layer in range(records.depth - 1):
        fit = _logistic(
            np.column_stack([train.scores[:, layer], np.log(train_ranks)]).astype(np.float64),
            target,
        )
        columns.append(fit(np.column_stack([records.scores[:, layer], np.log(ranks)])))
    return np.stack(columns, 1)


def classifier_exit(records, offsets, probabilities, tau: float) -> tuple[float, float]:
    """(risk, FLOPs speedup) of exiting after the first layer whose probability is below
    ``tau``; a candidate that went deeper ranks above every one that stopped earlier."""
    depth = records.depth
    exit_layers = np.full(len(records.scores), depth, dtype=np.int64)
    running = np.ones(len(records.scores), dtype=bool)
    for layer in range(depth - 1):
        now = running & (probabilities[:, layer] < tau)
        exit_layers[now] = layer + 1
        running &= ~now
    chosen = records.scores[np.arange(len(exit_layers)), exit_layers - 1]
    losses = query_losses(exit_layers * 1e6 + chosen, records.scores[:, -1], offsets)
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
        "none the ranker was trained on, none in the reranking benchmark's calibration sample) "
        "x their dense top-100 from the "
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
    lines += [
        "",
        "Each exit against the last one, on the same pairs: mean within-query Pearson "
        "correlation of the scores, and the risk of stopping every pair at that exit.",
        "",
        "| exit | correlation with the last exit | risk if every pair stops here |",
        "|---|---|---|",
    ]
    lines += [
        f"| {e['exit']} | {e['correlation']} | {e['risk_all_stop_here']} |" for e in report["exits"]
    ]
    if "first_stage_correlation" in report:
        lines.append(
            f"| first stage (the bi-encoder's cosine) | {report['first_stage_correlation']} | |"
        )
    if CUTOFF in report["frontier"]:
        lines += [
            "",
            f"*{CUTOFF}*: the candidates below rank R are never scored and keep the first "
            "stage's order under the reranked ones (R from "
            f"{CUTOFFS[0]} down to {CUTOFFS[-1]}); it is what any cascade gets by cutting the "
            "list, with no early exit.",
        ]
    if RANK_AWARE in report["frontier"]:
        lines[-1] += (
            f" *{RANK_AWARE}*: per exit, a logistic regression of "
            "'in the full ranker's top 10' on that exit's score and the log of the candidate's "
            "first-stage rank, fitted on the refit queries' recorded exits (no labels); a "
            "candidate stops at the first exit where the probability is below tau. When the two "
            "rows match, the speedup comes from the first stage's ranking, not from the exits."
        )
    refit = report.get("refit")
    if refit:
        lines += [
            "",
            f"Refit heads (the rows marked *refit heads* above): exits 1 to "
            f"{len(refit['exits_after']) - 1} refit on {refit['queries']} further dev queries "
            f"({refit['pairs']} pairs) with the trunk and the last exit frozen, "
            f"{refit['steps']} steps; the same evaluation pairs after the refit:",
            "",
            "| exit | correlation with the last exit | risk if every pair stops here |",
            "|---|---|---|",
        ]
        lines += [
            f"| {e['exit']} | {e['correlation']} | {e['risk_all_stop_here']} |"
            for e in refit["exits_after"]
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
