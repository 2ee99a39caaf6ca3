"""Reranking: the scorers of a cascade and the calibration of exit policies.

``RankerScorer`` (:mod:`elasticir.rerank.ranker`) makes an ElasticRanker a cascade's scorer,
at any compute level, each candidate exiting early under an exit policy
(:mod:`elasticir.compute.exits`) whose threshold Learn-then-Test calibration picks
(:mod:`elasticir.rerank.calibration`); ``DiPairScorer`` (:mod:`elasticir.rerank.dipair`) and
``BiEncoderScorer`` (:mod:`elasticir.rerank.biencoder`) are the others. Modules that import
torch load on first use, so ``import elasticir.rerank`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elasticir.compute.exits import (
        ConfidencePolicy,
        CutoffPolicy,
        EntropyPolicy,
        FixedLevel,
        RankPolicy,
        parse_policy,
    )
    from elasticir.rerank.calibration import (
        Calibration,
        PolicyEvaluation,
        calibrate,
        evaluate_policy,
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
    "Calibration": "elasticir.rerank.calibration",
    "ConfidencePolicy": "elasticir.compute.exits",
    "CutoffPolicy": "elasticir.compute.exits",
    "RankPolicy": "elasticir.compute.exits",
    "EntropyPolicy": "elasticir.compute.exits",
    "FixedLevel": "elasticir.compute.exits",
    "PolicyEvaluation": "elasticir.rerank.calibration",
    "calibrate": "elasticir.rerank.calibration",
    "evaluate_policy": "elasticir.rerank.calibration",
    "parse_policy": "elasticir.compute.exits",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(home), name)
