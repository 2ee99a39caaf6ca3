"""Exit simulation: what a policy would do, from one recorded run of every layer.

Calibration runs the ranker *once* per pair (:meth:`ElasticRanker.layer_records`), recording
every layer's score and signals; each threshold is then simulated from those records (the
decision at layer ``i`` depends only on layers ``<= i``), with the FLOPs each candidate would
have spent. The rank family's exit weights are fitted on such records too, without labels
(:func:`fit_rank_exits`), from the candidates' first-stage ranks (:func:`first_stage_ranks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from elasticir.compute.exits import (
    PRUNE_GAP,
    CutoffPolicy,
    FixedLevel,
    Policy,
    RankWeights,
    skipped_scores,
)

if TYPE_CHECKING:
    from elasticir.models.ranker import LayerRecords

__all__ = ["first_stage_ranks", "fit_rank_exits", "simulate"]


def simulate(
    policy: Policy, records: LayerRecords, ranks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(exit_layers, scores)`` the policy gives each recorded pair (1-based layers).

    Uses the same :meth:`ExitPolicy.exits` as the ranker's real early exit, on the recorded
    per-layer scores and signals: the decision after layer ``i`` needs nothing deeper. A
    pruning policy's scores are what the ranker returns (exit logit minus ``PRUNE_GAP`` per
    skipped layer). ``ranks``: each pair's 1-based first-stage rank, for rank and cutoff
    policies; a cutoff's skipped pairs get exit layer 0 and :func:`skipped_scores`.
    """
    n, depth = records.scores.shape
    if isinstance(policy, FixedLevel):
        stop = policy.level.resolve(records.num_layers).depth
        assert stop is not None
        if stop > depth:
            raise ValueError(f"policy {policy.spec} is deeper than the records ({depth} layers)")
        exit_layers = np.full(n, stop, dtype=np.int64)
    elif isinstance(policy, CutoffPolicy):
        if ranks is None or len(ranks) != n:
            raise ValueError(f"policy {policy.spec} needs one first-stage rank per record")
        skipped = policy.skips(np.asarray(ranks))
        exit_layers = np.where(skipped, 0, depth).astype(np.int64)
        chosen = records.scores[:, depth - 1].astype(np.float32)
        chosen[skipped] = skipped_scores(np.asarray(ranks)[skipped], depth)
        return exit_layers, chosen
    else:
        policy.check(depth)
        if policy.uses_classifier and records.classifier is None:
            raise ValueError("these records have no exit-classifier signal (untrained classifier)")
        scores = torch.from_numpy(records.scores)
        saturation = torch.from_numpy(records.saturation)
        classifier = None if records.classifier is None else torch.from_numpy(records.classifier)
        if policy.uses_ranks and (ranks is None or len(ranks) != n):
            raise ValueError(f"policy {policy.spec[:40]}... needs one first-stage rank per record")
        rank_tensor = None if ranks is None else torch.as_tensor(np.asarray(ranks, np.float64))
        exit_layers = np.full(n, depth, dtype=np.int64)
        running = np.ones(n, dtype=bool)
        for i in range(depth - 1):
            done = policy.exits(
                i + 1,
                scores[:, i],
                saturation[:, i],
                None if classifier is None else classifier[:, i],
                rank_tensor,
            ).numpy()
            now = done & running
            exit_layers[now] = i + 1
            running &= ~done
    chosen = records.scores[np.arange(n), exit_layers - 1].astype(np.float32)
    if getattr(policy, "prunes", False):
        chosen = chosen - np.float32(PRUNE_GAP) * (depth - exit_layers).astype(np.float32)
    return exit_layers, chosen


def first_stage_ranks(offsets: Sequence[int] | np.ndarray) -> np.ndarray:
    """1-based position of every pair within its query (queries own ``offsets[q]:offsets[q+1]``
    and list their candidates in first-stage order)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    return np.concatenate(
        [np.arange(1, b - a + 1, dtype=np.int64) for a, b in zip(offsets[:-1], offsets[1:])]
        or [np.zeros(0, dtype=np.int64)]
    )


def _logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 100) -> np.ndarray:
    """``(bias, *weights)`` of an L2-regularised logistic regression of ``y`` on the columns
    of ``x``, by Newton steps on standardised columns, returned for the raw columns."""
    mean, scale = x.mean(0), x.std(0) + 1e-9
    design = np.column_stack([np.ones(len(x)), (x - mean) / scale])
    w = np.zeros(design.shape[1])
    penalty = l2 * np.eye(len(w))
    penalty[0, 0] = 0.0  # the bias is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -50, 50)))
        gradient = design.T @ (p - y) / len(y) + penalty @ w
        hessian = (design * (p * (1 - p))[:, None]).T @ design / len(y) + penalty
        step = np.linalg.solve(hessian + 1e-12 * np.eye(len(w)), gradient)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    slopes = w[1:] / scale
    return np.concatenate([[w[0] - float(slopes @ mean)], slopes])


def fit_rank_exits(
    records: LayerRecords,
    offsets: Sequence[int] | np.ndarray,
    *,
    k: int = 10,
    ranks: np.ndarray | None = None,
    l2: float = 1e-3,
) -> RankWeights:
    """Exit weights for :class:`RankPolicy`, fitted without labels: for each exit but the
    deepest, a logistic regression of "in the deepest exit's top ``k`` of its query" on that
    exit's score and ``ln(rank)`` (``ranks`` default: positions within each query)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    ranks = first_stage_ranks(offsets) if ranks is None else np.asarray(ranks)
    depth = records.depth
    if depth < 2:
        raise ValueError("a one-layer level has no exit to fit")
    last = records.scores[:, depth - 1]
    target = np.zeros(len(last), dtype=np.float64)
    for a, b in zip(offsets[:-1], offsets[1:]):
        target[a + np.argsort(-last[a:b], kind="stable")[:k]] = 1.0
    if target.min() == target.max():
        raise ValueError(f"every candidate is in its query's top {k}: nothing to fit")
    log_ranks = np.log(ranks.astype(np.float64))
    weights = []
    for i in range(depth - 1):
        x = np.column_stack([records.scores[:, i].astype(np.float64), log_ranks])
        weights.append(tuple(float(w) for w in _logistic(x, target, l2)))
    return tuple(weights)  # type: ignore[return-value]
