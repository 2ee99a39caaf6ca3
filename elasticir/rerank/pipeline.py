"""Moved to :mod:`elasticir.pipeline` (and the bi-encoder scorer to
:mod:`elasticir.rerank.biencoder`); kept so old imports keep working."""

from elasticir.pipeline import (
    BM25Retrieval,
    Cascade,
    Cutoff,
    DenseRetrieval,
    FunctionScorer,
    MissingInputError,
    PassageLookup,
    PipelineResult,
    Rerank,
    Reranker,
    RunFile,
    Scorer,
    Stage,
    as_stage,
    top_k,
)
from elasticir.rerank.biencoder import BiEncoderScorer

__all__ = [
    "BM25Retrieval",
    "BiEncoderScorer",
    "Cascade",
    "Cutoff",
    "DenseRetrieval",
    "FunctionScorer",
    "MissingInputError",
    "PassageLookup",
    "PipelineResult",
    "Rerank",
    "Reranker",
    "RunFile",
    "Scorer",
    "Stage",
    "as_stage",
    "top_k",
]
