"""Retrieval cascades whose compute is chosen per call.

    >>> from elasticir.pipeline import DenseRetrieval
    >>> pipeline = DenseRetrieval("indexes/msmarco-flat") % 1000 >> dipair % 100 >> ranker
    >>> result = pipeline(queries, compute="dense@L6-W50;ranker@cutoff:30")
    >>> result.run  # {qid: {doc_id: score}}; result.reports / .seconds / .compute per stage

A scorer on the right of ``>>`` (or under ``%``) becomes a :class:`Rerank` stage; its passage
texts come from the corpus the first stage was built from (an index's ``meta.json`` names it),
or from ``Rerank(scorer, corpus)`` when given explicitly (a :class:`RunFile` needs it).
Bad input is never dropped silently: a candidate missing from the corpus, or a run query
missing from the topics, is an error (``on_missing="error"``, the default) or a skip counted in
the call's report (``on_missing="skip"``).
"""

from elasticir.pipeline.first import BM25Retrieval, DenseRetrieval, RunFile
from elasticir.pipeline.passages import MissingInputError, PassageLookup
from elasticir.pipeline.scorers import FunctionScorer
from elasticir.pipeline.stages import (
    Cascade,
    Cutoff,
    PipelineResult,
    Rerank,
    Reranker,
    Scorer,
    Stage,
    as_stage,
    top_k,
)

__all__ = [
    "BM25Retrieval",
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
