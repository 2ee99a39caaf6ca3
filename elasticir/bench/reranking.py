"""First stages and comparisons for the reranking benchmarks.

A run is ``{query id: {doc id: score}}``; a store is ``(ids, vectors)`` as
:meth:`~elasticir.index.store.EmbeddingStore.load` returns it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from elasticir.data import load_passages

if TYPE_CHECKING:
    from elasticir.data.records import Passage, Query
    from elasticir.models.denser import ElasticDenser

Store = tuple[list[str], np.ndarray]


def load_corpora(paths: Iterable[Path]) -> dict[str, Passage]:
    """Every passage of the corpora at ``paths``, by doc id (a later corpus wins a clash)."""
    out: dict[str, Passage] = {}
    for path in paths:
        out.update(load_passages(path))
    return out


def concat_stores(a: Store, b: Store) -> Store:
    """Store ``a`` followed by store ``b``: ids joined, vectors stacked."""
    return a[0] + b[0], np.concatenate([a[1], b[1]])


def cut_run(run: dict, depth: int, queries: set[str]) -> dict:
    """Each query's top ``depth``, for the evaluated ``queries`` only."""
    return {
        q: dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:depth])
        for q, d in run.items()
        if q in queries
    }


def dense_search(encoder: ElasticDenser, store: Store, queries: list[Query], depth: int) -> dict:
    """The exact (flat inner product) top ``depth`` of ``store`` for each of ``queries``,
    encoded by ``encoder``: the bi-encoder's first stage."""
    import faiss

    ids, vectors = store
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    scores, rows = index.search(encoder.encode_queries([q.text for q in queries]), depth)
    return {
        q.query_id: {ids[r]: float(s) for s, r in zip(ss, rr) if r >= 0}
        for q, ss, rr in zip(queries, scores, rows)
    }


def trained_query_ids(ranker) -> set[str]:
    """The MS MARCO dev query ids among the ranker's training data (its anchor groups'):
    queries that must never be calibration queries."""
    training = ranker.manifest.get("training") or {}
    anchor = (training.get("data") or {}).get("anchor") or {}
    return set(anchor.get("query_ids", ()))


def consistency_risk(run: dict, full: dict, k: int = 10) -> float:
    """Mean over queries of 1 - nDCG@k of ``run``'s order against the full ranker's top k
    (graded k..1): the loss that calibration bounds by delta, measured on reported queries.
    A document ``run`` lacks counts as ranked last; rounded to 4 decimals."""
    from elasticir.rerank.calibration import consistency_grades, ndcg_at_k  # loads torch

    losses = []
    for qid, reference in full.items():
        docs = list(reference)
        ref = np.array([reference[d] for d in docs])
        mine = np.array([run.get(qid, {}).get(d, -np.inf) for d in docs])
        losses.append(1.0 - ndcg_at_k(mine, consistency_grades(ref, k), k))
    return round(float(np.mean(losses)), 4)
