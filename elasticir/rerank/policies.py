"""Exit policies and their calibration, under their old import path.

The policies are values of the compute vocabulary (:mod:`elasticir.compute.exits`); their
Learn-then-Test calibration, simulation and held-out evaluation live in
:mod:`elasticir.rerank.calibration`. This module only re-exports both, so old imports keep
working.
"""

from __future__ import annotations

from elasticir.compute.exits import (
    MEASURES,
    PRUNE_GAP,
    ConfidencePolicy,
    CutoffPolicy,
    EntropyPolicy,
    ExitPolicy,
    FixedLevel,
    Policy,
    RankPolicy,
    RankWeights,
    Thresholds,
    binary_entropy,
    parse_policy,
    skipped_scores,
)
from elasticir.rerank.calibration import (  # noqa: F401  (BOUNDS, LOSSES: old module names)
    BOUNDS,
    CUTOFFS,
    FAMILIES,
    LOSSES,
    Calibration,
    CalibrationQuery,
    PolicyEvaluation,
    PolicyFamily,
    calibrate,
    calibrate_families,
    calibrate_records,
    calibration_queries,
    consistency_grades,
    evaluate_policy,
    first_stage_ranks,
    fit_rank_exits,
    hoeffding_bentkus_pvalue,
    hoeffding_pvalue,
    learn_then_test,
    ndcg_at_k,
    query_losses,
    simulate,
)

__all__ = [
    "CUTOFFS",
    "FAMILIES",
    "MEASURES",
    "Calibration",
    "CalibrationQuery",
    "ConfidencePolicy",
    "CutoffPolicy",
    "EntropyPolicy",
    "ExitPolicy",
    "FixedLevel",
    "Policy",
    "PolicyEvaluation",
    "PolicyFamily",
    "PRUNE_GAP",
    "RankPolicy",
    "RankWeights",
    "Thresholds",
    "binary_entropy",
    "calibrate",
    "calibrate_families",
    "calibrate_records",
    "calibration_queries",
    "consistency_grades",
    "evaluate_policy",
    "first_stage_ranks",
    "fit_rank_exits",
    "hoeffding_bentkus_pvalue",
    "hoeffding_pvalue",
    "learn_then_test",
    "ndcg_at_k",
    "parse_policy",
    "query_losses",
    "simulate",
    "skipped_scores",
]
