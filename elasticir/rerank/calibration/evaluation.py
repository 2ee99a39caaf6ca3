"""Held-out evaluation: a policy measured on queries by really running it.

:func:`evaluate_policy` scores the queries under the policy (early exit and all) and at its
level without early exit, and measures the per-query loss as calibration does
(:func:`~elasticir.rerank.calibration.losses.query_losses`): on queries calibration did not
see, the held-out check of the calibrated ``delta``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from elasticir.compute.exits import FixedLevel, Policy, parse_policy
from elasticir.compute.levels import FULL, Level
from elasticir.rerank.calibration.data import CalibrationQuery, flatten_queries
from elasticir.rerank.calibration.losses import query_losses
from elasticir.rerank.calibration.simulation import first_stage_ranks

if TYPE_CHECKING:
    from elasticir.models.ranker import ElasticRanker

__all__ = ["PolicyEvaluation", "evaluate_policy"]


@dataclass(frozen=True)
class PolicyEvaluation:
    """A policy measured on queries by really running it (early exit and all).

    ``risk`` is the mean of ``losses`` (one per query, as in calibration); ``speedup`` the
    FLOPs of ``level`` without exit over the policy's; ``full_speedup`` against the full model.
    """

    policy: Policy
    level: Level
    loss: str
    k: int
    losses: np.ndarray
    speedup: float
    full_speedup: float
    mean_exit_layer: float
    n_pairs: int

    @property
    def risk(self) -> float:
        return float(self.losses.mean())

    @property
    def n_queries(self) -> int:
        return len(self.losses)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.spec,
            "level": str(self.level),
            "loss": self.loss,
            "k": self.k,
            "risk": self.risk,
            "speedup": self.speedup,
            "full_speedup": self.full_speedup,
            "mean_exit_layer": self.mean_exit_layer,
            "n_queries": self.n_queries,
            "n_pairs": self.n_pairs,
        }


def evaluate_policy(
    ranker: ElasticRanker,
    policy: Policy | str,
    queries: Iterable[CalibrationQuery | Sequence[Any]],
    *,
    level: Level | str = FULL,
    loss: str = "consistency",
    k: int = 10,
    batch_size: int | None = None,
) -> PolicyEvaluation:
    """Run ``policy`` (at ``level``'s width, up to its depth) and ``level`` without early exit
    on ``queries`` and measure the per-query loss as :func:`calibrate` does -- on queries it
    did not see, this is the held-out check of the calibrated ``delta``. Each query's
    candidates are in first-stage order (what a rank policy reads as their ranks)."""
    policy = parse_policy(policy)
    level = ranker.check_level(level)
    data, texts, passages, offsets = flatten_queries(queries)
    relevance = [None if d.relevance is None else np.asarray(d.relevance) for d in data]
    reference = ranker.score_pairs(texts, passages, level=level, batch_size=batch_size)
    if isinstance(policy, FixedLevel):
        run = ranker.score_pairs(texts, passages, policy=policy, batch_size=batch_size)
    else:
        ranks = first_stage_ranks(offsets)
        run = ranker.score_pairs(
            texts, passages, level=level, policy=policy, batch_size=batch_size, ranks=ranks
        )
    losses = query_losses(
        run.scores, reference.scores, offsets, k=k, loss=loss, relevance=relevance
    )
    return PolicyEvaluation(
        policy=policy,
        level=level,
        loss=loss,
        k=int(k),
        losses=losses,
        speedup=float(reference.flops.sum()) / float(run.flops.sum()),
        full_speedup=run.speedup,
        mean_exit_layer=float(run.exit_layers.mean()),
        n_pairs=len(passages),
    )
