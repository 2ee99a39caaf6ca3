"""What the ranker returns: scores with their exits and costs, and every exit's records."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elasticir.compute.exits import Policy
from elasticir.compute.levels import Level

__all__ = ["LayerRecords", "RankerOutput"]


@dataclass(frozen=True)
class RankerOutput:
    """Scores of ``n`` pairs, where each exited and what it cost.

    ``scores`` ``(n,)`` float32 (the exit head's logit; higher is more relevant),
    ``exit_layers`` ``(n,)`` 1-based, ``flops`` ``(n,)`` the transformer FLOPs each pair really
    spent, ``full_flops`` ``(n,)`` what the full model (every layer, full width) costs on it.
    """

    scores: np.ndarray
    exit_layers: np.ndarray
    flops: np.ndarray
    full_flops: np.ndarray
    level: Level
    policy: Policy | None

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def total_flops(self) -> int:
        return int(self.flops.sum())

    @property
    def flops_ratio(self) -> float:
        """FLOPs spent over the full model's on the same pairs (1.0 for no pairs)."""
        full = float(self.full_flops.sum())
        return float(self.flops.sum()) / full if full else 1.0

    @property
    def speedup(self) -> float:
        """The full model's FLOPs over those spent: ``1 / flops_ratio``."""
        spent = float(self.flops.sum())
        return float(self.full_flops.sum()) / spent if spent else 1.0

    @property
    def mean_exit_layer(self) -> float:
        return float(self.exit_layers.mean()) if len(self) else 0.0


@dataclass(frozen=True)
class LayerRecords:
    """Every exit of a level for ``n`` pairs, recorded by running every layer (no exit).

    ``scores``, ``saturation`` (cosine of each layer's exit state -- [CLS], or the pooled
    head's product -- with the previous one's, the embeddings' for layer 1) and
    ``classifier`` (the exit classifier's probability, None when the ranker has none) are
    ``(n, depth)`` float32; ``layer_cost`` ``(n,)`` is one layer's FLOPs at the level's width
    for each pair, ``full_cost`` the full model's. ``states``, when
    asked for, is ``(n, depth + 1, hidden)`` float32: the exit state after the embeddings and
    after each layer (what the exit heads read), for diagnostics that refit heads.
    """

    scores: np.ndarray
    saturation: np.ndarray
    classifier: np.ndarray | None
    layer_cost: np.ndarray
    full_cost: np.ndarray
    level: Level
    num_layers: int
    states: np.ndarray | None = None

    @property
    def depth(self) -> int:
        return int(self.scores.shape[1])
