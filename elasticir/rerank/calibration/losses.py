"""Ranking losses: how much a policy's ranking of a query's candidates loses, in [0, 1].

The reference is the ranker at the same level without early exit:

* ``"consistency"`` (no labels): the reference ranking is graded -- its top ``k`` get grades
  ``k, k-1, ..., 1``, the rest 0 (:func:`consistency_grades`) -- and the loss is
  ``1 - nDCG@k`` of the policy's ranking;
* ``"qrels"``: ``max(0, nDCG@k(reference) - nDCG@k(policy))`` on the query's judgements.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LOSSES", "consistency_grades", "ndcg_at_k", "query_losses"]

LOSSES = ("consistency", "qrels")


def ndcg_at_k(scores: np.ndarray, gains: np.ndarray, k: int = 10) -> float:
    """nDCG@k of ranking by ``scores`` (descending; ties by position) with linear ``gains``
    and ``1 / log2(rank + 1)`` discounts; 0 when no gain is positive."""
    gains = np.asarray(gains, dtype=np.float64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    discounts = 1.0 / np.log2(np.arange(2, len(order) + 2))
    ideal = np.sort(gains)[::-1][:k]
    best = float((ideal * discounts[: len(ideal)]).sum())
    if best <= 0:
        return 0.0
    return float((gains[order] * discounts).sum()) / best


def consistency_grades(reference: np.ndarray, k: int = 10) -> np.ndarray:
    """Graded relevance from a reference ranking: its top ``k`` get ``k, ..., 1``, others 0."""
    order = np.argsort(-np.asarray(reference, dtype=np.float64), kind="stable")
    grades = np.zeros(len(order), dtype=np.float64)
    top = order[:k]
    grades[top] = k - np.arange(len(top))
    return grades


def query_losses(
    policy_scores: np.ndarray,
    reference_scores: np.ndarray,
    offsets: np.ndarray,
    *,
    k: int = 10,
    loss: str = "consistency",
    relevance: Sequence[np.ndarray | None] | None = None,
) -> np.ndarray:
    """Per-query loss in [0, 1] (see the module docstring); ``offsets`` delimit the queries'
    candidates in the score arrays (``offsets[q]:offsets[q + 1]``)."""
    if loss not in LOSSES:
        raise ValueError(f"loss is one of {LOSSES}, got {loss!r}")
    out = np.empty(len(offsets) - 1, dtype=np.float64)
    for q in range(len(out)):
        a, b = int(offsets[q]), int(offsets[q + 1])
        if loss == "consistency":
            grades = consistency_grades(reference_scores[a:b], k)
            out[q] = 1.0 - ndcg_at_k(policy_scores[a:b], grades, k)
        else:
            grades = None if relevance is None else relevance[q]
            if grades is None:
                raise ValueError(f"loss='qrels' needs the relevance of every query (query {q})")
            drop = ndcg_at_k(reference_scores[a:b], grades, k) - ndcg_at_k(
                policy_scores[a:b], grades, k
            )
            out[q] = max(0.0, drop)
    return np.clip(out, 0.0, 1.0)
