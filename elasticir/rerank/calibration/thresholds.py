"""Calibrate: choose a policy family's threshold by Learn-then-Test (as in CALM).

The ranker runs *once* per calibration pair (:meth:`ElasticRanker.layer_records`); each of the
family's thresholds, from most conservative to most aggressive, is simulated from those
records (:mod:`~elasticir.rerank.calibration.simulation`) and scored per query against the
ranker at the same level without early exit (:mod:`~elasticir.rerank.calibration.losses`).
Learn-then-Test (:mod:`~elasticir.rerank.calibration.ltt`) keeps the most aggressive
threshold shown safe: with probability at least ``1 - epsilon`` over the draw of calibration
queries, the chosen policy's risk on new queries from the same distribution is at most
``delta``. When nothing is rejected, the policy is the level itself (no early exit).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from elasticir.compute.exits import FixedLevel, Policy
from elasticir.compute.levels import FULL, Level
from elasticir.rerank.calibration.data import CalibrationQuery, flatten_queries
from elasticir.rerank.calibration.families import PolicyFamily, as_family
from elasticir.rerank.calibration.losses import LOSSES, query_losses
from elasticir.rerank.calibration.ltt import learn_then_test
from elasticir.rerank.calibration.simulation import first_stage_ranks, fit_rank_exits, simulate

if TYPE_CHECKING:
    from elasticir.models.ranker import ElasticRanker, LayerRecords

__all__ = ["Calibration", "calibrate", "calibrate_families", "calibrate_records"]


@dataclass(frozen=True)
class Calibration:
    """What Learn-then-Test chose, and the evidence (one entry per threshold tried).

    ``policy`` is the chosen policy, or ``FixedLevel(level)`` (no early exit) when not even
    the most conservative threshold was shown safe. ``speedups[j]`` is the reference's FLOPs
    (``level`` without exit) over threshold ``j``'s on the calibration pairs;
    ``full_speedup`` compares the chosen policy with the full model (every layer, full width).
    ``fit_queries``: calibration queries used to fit a rank family's exit weights (kept out of
    ``n_queries``, the queries Learn-then-Test ran on). The guarantee holds for the policy run
    at ``level``: score with ``ranker.score_pairs(..., level=calibration.level,
    policy=calibration.policy)`` (and ``ranks=`` for a rank policy).
    """

    family: PolicyFamily
    level: Level
    delta: float
    epsilon: float
    bound: str
    loss: str
    k: int
    thresholds: tuple[float, ...]
    risks: tuple[float, ...]
    pvalues: tuple[float, ...]
    speedups: tuple[float, ...]
    mean_exit_layers: tuple[float, ...]
    chosen: int | None
    n_queries: int
    n_pairs: int
    full_speedup: float
    policy: Policy = field(compare=False)
    fit_queries: int = 0

    @property
    def threshold(self) -> float | None:
        return None if self.chosen is None else self.thresholds[self.chosen]

    @property
    def risk(self) -> float:
        """Empirical risk of the chosen policy on the calibration queries (0 without exit)."""
        return 0.0 if self.chosen is None else self.risks[self.chosen]

    @property
    def speedup(self) -> float:
        return 1.0 if self.chosen is None else self.speedups[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (the policy as its ``spec``)."""
        return {
            "family": self.family.measure,
            "min_layer": self.family.min_layer,
            "level": str(self.level),
            "delta": self.delta,
            "epsilon": self.epsilon,
            "bound": self.bound,
            "loss": self.loss,
            "k": self.k,
            "policy": self.policy.spec,
            "threshold": self.threshold,
            "risk": self.risk,
            "speedup": self.speedup,
            "full_speedup": self.full_speedup,
            "n_queries": self.n_queries,
            "n_pairs": self.n_pairs,
            "fit_queries": self.fit_queries,
            "thresholds": list(self.thresholds),
            "risks": list(self.risks),
            "pvalues": list(self.pvalues),
            "speedups": list(self.speedups),
            "mean_exit_layers": list(self.mean_exit_layers),
        }


def calibrate(
    ranker: ElasticRanker,
    calibration_queries: Iterable[CalibrationQuery | Sequence[Any]],
    family: str | PolicyFamily,
    delta: float,
    epsilon: float,
    thresholds: Sequence[float] | None = None,
    *,
    level: Level | str = FULL,
    loss: str = "consistency",
    k: int = 10,
    bound: str = "hb",
    batch_size: int | None = None,
    progress: bool = False,
) -> Calibration:
    """Learn-then-Test: the most aggressive threshold of ``family`` whose risk is shown to be at
    most ``delta`` with probability ``1 - epsilon`` (see the module docstring).

    ``calibration_queries``: ``(query, passages[, relevance])`` items (or
    :class:`CalibrationQuery`), e.g. the top-100 of a first-stage run
    (:func:`calibration_queries`). ``thresholds`` go from most conservative to most
    aggressive (default :meth:`PolicyFamily.default_thresholds`). ``level`` sets the width and
    the deepest layer; the loss compares with that level without early exit. The ranker runs
    once per pair (:meth:`ElasticRanker.layer_records`); :func:`calibrate_records` does the rest.
    """
    family = as_family(family)
    records, offsets, relevance = _recorded(
        ranker, calibration_queries, level, batch_size, family.measure == "classifier", progress
    )
    return calibrate_records(
        records,
        offsets,
        family,
        delta,
        epsilon,
        thresholds,
        loss=loss,
        k=k,
        bound=bound,
        relevance=relevance,
    )


def calibrate_families(
    ranker: ElasticRanker,
    calibration_queries: Iterable[CalibrationQuery | Sequence[Any]],
    families: Sequence[str | PolicyFamily],
    delta: float,
    epsilon: float,
    *,
    level: Level | str = FULL,
    loss: str = "consistency",
    k: int = 10,
    bound: str = "hb",
    batch_size: int | None = None,
    progress: bool = False,
) -> dict[str, Calibration]:
    """:func:`calibrate` for several policy families at once, with their default thresholds:
    the ranker runs once per pair for all of them (one :meth:`ElasticRanker.layer_records`
    pass), keyed by each family's ``measure``. A family that cannot be calibrated (the
    classifier of a ranker without one, a ``min_layer`` deeper than ``level``) raises."""
    chosen = [as_family(f) for f in families]
    if not chosen:
        raise ValueError("no policy families to calibrate")
    if any(f.measure == "classifier" for f in chosen) and not ranker.has_classifier:
        raise ValueError("this ranker has no exit classifier: leave out the classifier family")
    records, offsets, relevance = _recorded(
        ranker,
        calibration_queries,
        level,
        batch_size,
        any(f.measure == "classifier" for f in chosen),
        progress,
    )
    return {
        family.measure: calibrate_records(
            records,
            offsets,
            family,
            delta,
            epsilon,
            loss=loss,
            k=k,
            bound=bound,
            relevance=relevance,
        )
        for family in chosen
    }


def _recorded(
    ranker: ElasticRanker,
    calibration_queries: Iterable[CalibrationQuery | Sequence[Any]],
    level: Level | str,
    batch_size: int | None,
    classifier: bool,
    progress: bool = False,
) -> tuple[LayerRecords, np.ndarray, list[np.ndarray | None]]:
    """The layer records of every calibration pair, the queries' offsets and relevance."""
    data, queries, passages, offsets = flatten_queries(calibration_queries)
    records = ranker.layer_records(
        queries,
        passages,
        ranker.check_level(level),
        batch_size=batch_size,
        classifier=classifier,
        progress=progress,
    )
    relevance = [None if d.relevance is None else np.asarray(d.relevance) for d in data]
    return records, offsets, relevance


def calibrate_records(
    records: LayerRecords,
    offsets: Sequence[int] | np.ndarray,
    family: str | PolicyFamily,
    delta: float,
    epsilon: float,
    thresholds: Sequence[float] | None = None,
    *,
    loss: str = "consistency",
    k: int = 10,
    bound: str = "hb",
    relevance: Sequence[np.ndarray | None] | None = None,
    ranks: np.ndarray | None = None,
    fit_every: int = 3,
) -> Calibration:
    """Learn-then-Test on recorded exits: ``records`` hold the calibration pairs, query ``q``
    owning rows ``offsets[q]:offsets[q + 1]``; each threshold is simulated (:func:`simulate`)
    and scored with :func:`query_losses` against the deepest recorded exit.

    The rank and cutoff families read ``ranks`` (default: positions within each query, i.e.
    candidates in first-stage order). Without weights, the rank family's are fitted
    (:func:`fit_rank_exits`) on every ``fit_every``-th query (0, 3, 6, ...), and Learn-then-Test
    runs on the others only, so the test does not see the queries that shaped the thresholds'
    meaning."""
    family = as_family(family)
    offsets = np.asarray(offsets, dtype=np.int64)
    fit_queries = 0
    if family.measure in ("rank", "cutoff"):
        if offsets[0] != 0 or offsets[-1] != records.scores.shape[0]:
            raise ValueError("offsets must run from 0 to the number of records")
        ranks = first_stage_ranks(offsets) if ranks is None else np.asarray(ranks)
        if family.measure == "rank" and family.weights is None:
            if fit_every < 2 or len(offsets) - 1 < fit_every:
                raise ValueError(
                    f"fitting the rank exits needs fit_every >= 2 and at least {fit_every} "
                    f"calibration queries, got fit_every={fit_every} and {len(offsets) - 1}"
                )
            queries = np.arange(len(offsets) - 1)
            fit, test = queries[queries % fit_every == 0], queries[queries % fit_every != 0]
            fit_records, fit_offsets, fit_ranks, _ = _take(records, offsets, fit, ranks)
            weights = fit_rank_exits(fit_records, fit_offsets, k=k, ranks=fit_ranks)
            family = PolicyFamily("rank", family.min_layer, weights)
            records, offsets, ranks, relevance = _take(records, offsets, test, ranks, relevance)
            fit_queries = len(fit)
    grid = tuple(float(t) for t in (thresholds or family.default_thresholds()))
    if not grid:
        raise ValueError("no thresholds to test")
    if not family.is_ordered(grid):
        direction = "increasing" if family.increasing else "decreasing"
        raise ValueError(
            f"{family.measure} thresholds go from conservative to aggressive: strictly {direction}"
        )
    for t in grid:
        family.policy(t)  # validates the range
    if loss not in LOSSES:
        raise ValueError(f"loss is one of {LOSSES}, got {loss!r}")
    if offsets[0] != 0 or offsets[-1] != records.scores.shape[0] or np.any(np.diff(offsets) < 1):
        raise ValueError("offsets must run from 0 to the number of records, each query non-empty")
    depth = records.depth
    if family.min_layer > depth:
        raise ValueError(f"min_layer {family.min_layer} is deeper than level {records.level}")
    reference = records.scores[:, depth - 1]
    reference_flops = float(records.layer_cost.sum()) * depth
    columns, speedups, mean_layers = [], [], []
    for t in grid:
        exit_layers, scores = simulate(family.policy(t), records, ranks)
        columns.append(
            query_losses(scores, reference, offsets, k=k, loss=loss, relevance=relevance)
        )
        spent = float((exit_layers * records.layer_cost).sum())
        speedups.append(reference_flops / spent if spent else math.inf)
        mean_layers.append(float(exit_layers.mean()))
    risks, pvalues, chosen = learn_then_test(np.stack(columns, axis=1), delta, epsilon, bound)
    level = records.level
    policy: Policy = FixedLevel(level) if chosen is None else family.policy(grid[chosen])
    spent = reference_flops if chosen is None else reference_flops / speedups[chosen]
    return Calibration(
        family=family,
        level=level,
        delta=float(delta),
        epsilon=float(epsilon),
        bound=bound,
        loss=loss,
        k=int(k),
        thresholds=grid,
        risks=tuple(float(r) for r in risks),
        pvalues=tuple(float(p) for p in pvalues),
        speedups=tuple(speedups),
        mean_exit_layers=tuple(mean_layers),
        chosen=chosen,
        n_queries=len(offsets) - 1,
        n_pairs=int(offsets[-1]),
        full_speedup=float(records.full_cost.sum()) / spent,
        policy=policy,
        fit_queries=fit_queries,
    )


def _take(
    records: LayerRecords,
    offsets: np.ndarray,
    queries: np.ndarray,
    ranks: np.ndarray,
    relevance: Sequence[np.ndarray | None] | None = None,
) -> tuple[LayerRecords, np.ndarray, np.ndarray, list[np.ndarray | None] | None]:
    """The records, offsets, ranks and relevance of some queries only."""
    rows = np.concatenate([np.arange(offsets[q], offsets[q + 1]) for q in queries])
    sizes = [int(offsets[q + 1] - offsets[q]) for q in queries]

    def pick(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else array[rows]

    taken = dataclasses.replace(
        records,
        scores=records.scores[rows],
        saturation=records.saturation[rows],
        classifier=pick(records.classifier),
        layer_cost=records.layer_cost[rows],
        full_cost=records.full_cost[rows],
        states=pick(records.states),
    )
    kept = None if relevance is None else [relevance[q] for q in queries]
    return taken, np.cumsum([0, *sizes]), ranks[rows], kept
