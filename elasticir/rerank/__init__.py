"""Reranking: the elastic multi-exit cross-encoder, its exit policies and their calibration.

``ElasticRanker`` (``elasticir.rerank.ranker``) scores query-passage pairs at any compute level
and exits early per candidate under an exit policy (``elasticir.rerank.policies``), whose
threshold Learn-then-Test calibration picks. Modules that import torch load on first use, so
``import elasticir.rerank`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elasticir.rerank.policies import (
        Calibration,
        ConfidencePolicy,
        CutoffPolicy,
        EntropyPolicy,
        FixedLevel,
        PolicyEvaluation,
        RankPolicy,
        calibrate,
        evaluate_policy,
        parse_policy,
    )
    from elasticir.rerank.ranker import ElasticRanker, RankerOutput, RankerScorer, rerank_run

__all__ = [
    "Calibration",
    "ConfidencePolicy",
    "CutoffPolicy",
    "ElasticRanker",
    "EntropyPolicy",
    "FixedLevel",
    "PolicyEvaluation",
    "RankPolicy",
    "RankerOutput",
    "RankerScorer",
    "calibrate",
    "evaluate_policy",
    "parse_policy",
    "rerank_run",
]

_HOMES = {
    "ElasticRanker": "elasticir.rerank.ranker",
    "RankerOutput": "elasticir.rerank.ranker",
    "RankerScorer": "elasticir.rerank.ranker",
    "rerank_run": "elasticir.rerank.ranker",
    "Calibration": "elasticir.rerank.policies",
    "ConfidencePolicy": "elasticir.rerank.policies",
    "CutoffPolicy": "elasticir.rerank.policies",
    "RankPolicy": "elasticir.rerank.policies",
    "EntropyPolicy": "elasticir.rerank.policies",
    "FixedLevel": "elasticir.rerank.policies",
    "PolicyEvaluation": "elasticir.rerank.policies",
    "calibrate": "elasticir.rerank.policies",
    "evaluate_policy": "elasticir.rerank.policies",
    "parse_policy": "elasticir.rerank.policies",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(home), name)
