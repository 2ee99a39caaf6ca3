"""Run fusion: reciprocal rank fusion and normalized score interpolation.

Both functions take and return :data:`~elasticir.data.records.Run` dicts
(``qid -> {doc_id: score}``) and are deterministic: ranks inside a run are taken by score,
descending, with ties broken by doc id, so the same inputs always give the same output
regardless of dict order. Pure Python; no JVM, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from elasticir.data.records import Run

__all__ = ["interpolate", "reciprocal_rank_fusion", "ranked"]

_NORMALIZATIONS = ("minmax", "zscore")


def ranked(scores: Mapping[str, float], depth: int | None = None) -> list[tuple[str, float]]:
    """``(doc_id, score)`` pairs best first, ties by doc id ascending, cut to ``depth``."""
    pairs = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return pairs if depth is None else pairs[:depth]


def reciprocal_rank_fusion(
    runs: Sequence[Run],
    k: int = 60,
    depth: int = 1000,
    weights: Sequence[float] | None = None,
) -> Run:
    """Fuse runs by reciprocal rank: ``score(d) = sum_i w_i / (k + rank_i(d))``.

    ``rank_i`` is 1-based and only the top ``depth`` documents of each run count (a document
    below that depth, or missing, adds nothing from that run), as in Cormack et al. (2009) and
    Pyserini's ``pyserini.fusion``. Every query found in any run appears in the output, which
    keeps the top ``depth`` fused documents per query. ``weights`` defaults to 1 per run.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if weights is None:
        weights = [1.0] * len(runs)
    if len(weights) != len(runs):
        raise ValueError(f"got {len(weights)} weights for {len(runs)} runs")

    fused: Run = {}
    for run, weight in zip(runs, weights, strict=True):
        for qid, scores in run.items():
            acc = fused.setdefault(qid, {})
            for rank, (doc_id, _) in enumerate(ranked(scores, depth), start=1):
                acc[doc_id] = acc.get(doc_id, 0.0) + weight / (k + rank)
    return {qid: dict(ranked(scores, depth)) for qid, scores in sorted(fused.items())}


def _normalize(pairs: list[tuple[str, float]], method: str) -> tuple[dict[str, float], float]:
    """Normalized scores of one query's ranked list and the value given to missing documents.

    Missing documents get the list's minimum normalized score (0 for min-max). Degenerate
    lists (all scores equal) map to 1.0 under min-max (a retrieved document still beats a
    missing one) and to 0.0 under z-score (no information about order).
    """
    if not pairs:
        return {}, 0.0
    values = [score for _, score in pairs]
    if method == "minmax":
        lo, hi = min(values), max(values)
        if hi == lo:
            return {doc: 1.0 for doc, _ in pairs}, 0.0
        return {doc: (score - lo) / (hi - lo) for doc, score in pairs}, 0.0
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    if std == 0.0:
        return {doc: 0.0 for doc, _ in pairs}, 0.0
    normed = {doc: (score - mean) / std for doc, score in pairs}
    return normed, min(normed.values())


def interpolate(
    run_a: Run,
    run_b: Run,
    alpha: float = 0.5,
    normalization: str = "minmax",
    depth: int = 1000,
) -> Run:
    """Per-query ``alpha * norm(a) + (1 - alpha) * norm(b)`` over each run's top ``depth``.

    ``normalization`` is ``"minmax"`` (to [0, 1]) or ``"zscore"`` (mean 0, unit variance),
    computed per query over the documents within ``depth``. A document missing from one run
    gets that run's minimum normalized score for the query (0 for min-max); a query missing
    from one run entirely takes its order from the other. The output keeps the top ``depth``
    documents per query.
    """
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")

    fused: Run = {}
    for qid in sorted(set(run_a) | set(run_b)):
        norm_a, floor_a = _normalize(ranked(run_a.get(qid, {}), depth), normalization)
        norm_b, floor_b = _normalize(ranked(run_b.get(qid, {}), depth), normalization)
        scores = {
            doc: alpha * norm_a.get(doc, floor_a) + (1.0 - alpha) * norm_b.get(doc, floor_b)
            for doc in norm_a.keys() | norm_b.keys()
        }
        fused[qid] = dict(ranked(scores, depth))
    return fused
