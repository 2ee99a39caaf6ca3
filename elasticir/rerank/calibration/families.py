"""Policy families: the thresholds calibration chooses among.

A *family* is a measure and a ``min_layer``; each threshold gives one policy of the compute
vocabulary (:mod:`elasticir.compute.exits`), and the thresholds are ordered from most
conservative (never exits early) to most aggressive, the order Learn-then-Test walks them in
(:mod:`elasticir.rerank.calibration.ltt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from elasticir.compute.exits import (
    MEASURES,
    ConfidencePolicy,
    CutoffPolicy,
    EntropyPolicy,
    RankPolicy,
    RankWeights,
    check_cutoff,
    check_min_layer,
    check_rank_weights,
)

__all__ = ["CUTOFFS", "FAMILIES", "PolicyFamily", "as_family"]

FAMILIES = ("entropy", *MEASURES, "rank", "cutoff")
CUTOFFS = (1000, 500, 300, 200, 150, 100, 90, 80, 70, 60, 50, 40, 30, 25, 20, 15, 10)


@dataclass(frozen=True)
class PolicyFamily:
    """A policy family for calibration: a measure (``"entropy"``, ``"margin"``,
    ``"saturation"``, ``"classifier"``, ``"rank"``, ``"cutoff"``) and a ``min_layer``; one
    policy per threshold (for ``"cutoff"``, the threshold is the list cutoff). The rank family
    also needs its exit ``weights`` (:func:`fit_rank_exits`); left out, calibration fits them
    on a share of the calibration queries."""

    measure: str
    min_layer: int = 1
    weights: RankWeights | None = None

    def __post_init__(self) -> None:
        if self.measure not in FAMILIES:
            raise ValueError(f"policy family is one of {FAMILIES}, got {self.measure!r}")
        object.__setattr__(self, "min_layer", check_min_layer(self.min_layer))
        if self.measure == "cutoff" and self.min_layer != 1:
            raise ValueError("the cutoff family has no exit layers: leave min_layer at 1")
        if self.weights is not None:
            if self.measure != "rank":
                raise ValueError(f"only the rank family has exit weights, not {self.measure!r}")
            object.__setattr__(self, "weights", check_rank_weights(self.weights))

    def policy(
        self, threshold: float
    ) -> EntropyPolicy | ConfidencePolicy | RankPolicy | CutoffPolicy:
        if self.measure == "cutoff":
            return CutoffPolicy(check_cutoff(threshold))
        if self.measure == "entropy":
            return EntropyPolicy(float(threshold), self.min_layer)
        if self.measure == "rank":
            if self.weights is None:
                raise ValueError(
                    "the rank family's policies need fitted exit weights (fit_rank_exits; "
                    "calibrate fits them on part of the calibration queries)"
                )
            return RankPolicy(float(threshold), self.weights, self.min_layer)
        return ConfidencePolicy(self.measure, float(threshold), self.min_layer)

    @property
    def increasing(self) -> bool:
        """Whether larger thresholds exit more (entropy, rank) rather than fewer."""
        return self.measure in ("entropy", "rank")

    def default_thresholds(self) -> tuple[float, ...]:
        """41 thresholds, most conservative (never exits early) first, denser where the
        decisions are cautious: ``u in {0} + logspace(-4, 0, 40)``, as the entropy itself or
        as ``1 - u`` for a confidence. Cutoffs: ``CUTOFFS``, 1000 candidates down to 10."""
        if self.measure == "cutoff":
            return tuple(float(c) for c in CUTOFFS)
        u = np.concatenate([[0.0], np.logspace(-4, 0, 40)])
        values = u if self.increasing else 1.0 - u
        return tuple(float(round(v, 10)) for v in values)

    def is_ordered(self, thresholds: Sequence[float]) -> bool:
        """Whether ``thresholds`` go from conservative to aggressive for this family."""
        diffs = np.diff(np.asarray(thresholds, dtype=np.float64))
        return bool(np.all(diffs > 0) if self.increasing else np.all(diffs < 0))


def as_family(family: str | PolicyFamily) -> PolicyFamily:
    """``family`` as a :class:`PolicyFamily` (a measure's name gets ``min_layer`` 1)."""
    return family if isinstance(family, PolicyFamily) else PolicyFamily(str(family))
