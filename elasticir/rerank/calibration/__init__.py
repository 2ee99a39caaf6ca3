"""Learn-then-Test calibration of exit policies, and their simulation and evaluation.

The policies themselves are values of the compute vocabulary (:mod:`elasticir.compute.exits`).
A *family* (a measure and a ``min_layer``) has thresholds ordered from most conservative to
most aggressive (:mod:`.families`). The loss of one query is how much the policy's ranking of
its candidates loses against the ranker at the same level without early exit, in [0, 1]
(:mod:`.losses`). For each threshold, the empirical risk over the calibration queries gives
a p-value for ``H0: risk > delta``, and fixed-sequence testing at level ``epsilon`` keeps the
most aggressive threshold shown safe (:mod:`.ltt`): with probability at least
``1 - epsilon``, the chosen policy's risk on new queries from the same distribution is at
most ``delta``. The ranker runs *once* per calibration pair, recording every layer's score
and signals, and each threshold is simulated from those records (:mod:`.simulation`).

Modules: :mod:`.families` (policy families), :mod:`.simulation` (exit simulation, rank-exit
fitting), :mod:`.losses` (nDCG@k, per-query losses), :mod:`.ltt` (p-values, Learn-then-Test),
:mod:`.data` (calibration queries), :mod:`.thresholds` (:func:`calibrate` and its record-level
parts), :mod:`.evaluation` (held-out evaluation of a policy by really running it). Every
public name is re-exported here; ``elasticir.rerank.policies`` is the old import path.
"""

from __future__ import annotations

from elasticir.rerank.calibration.data import (
    CalibrationQuery,
    calibration_queries,
    flatten_queries,
)
from elasticir.rerank.calibration.evaluation import PolicyEvaluation, evaluate_policy
from elasticir.rerank.calibration.families import CUTOFFS, FAMILIES, PolicyFamily, as_family
from elasticir.rerank.calibration.losses import (
    LOSSES,
    consistency_grades,
    ndcg_at_k,
    query_losses,
)
from elasticir.rerank.calibration.ltt import (
    BOUNDS,
    hoeffding_bentkus_pvalue,
    hoeffding_pvalue,
    learn_then_test,
)
from elasticir.rerank.calibration.simulation import first_stage_ranks, fit_rank_exits, simulate
from elasticir.rerank.calibration.thresholds import (
    Calibration,
    calibrate,
    calibrate_families,
    calibrate_records,
)

__all__ = [
    "BOUNDS",
    "CUTOFFS",
    "FAMILIES",
    "LOSSES",
    "Calibration",
    "CalibrationQuery",
    "PolicyEvaluation",
    "PolicyFamily",
    "as_family",
    "calibrate",
    "calibrate_families",
    "calibrate_records",
    "calibration_queries",
    "consistency_grades",
    "evaluate_policy",
    "first_stage_ranks",
    "fit_rank_exits",
    "flatten_queries",
    "hoeffding_bentkus_pvalue",
    "hoeffding_pvalue",
    "learn_then_test",
    "ndcg_at_k",
    "query_losses",
    "simulate",
]
