"""Ranker training groups from a judged collection, one cross-validation fold held out.

A benchmark's own judgements are the only in-domain labels a small collection has (DL19: 9,260
graded judgements over 43 queries). They can train a reranker that is still reported honestly by
*k-fold cross-validation over the queries*: the queries are split into ``folds`` folds (a seeded
permutation of the sorted query ids, :func:`assign_folds`, the same for every fold's run), the
model of fold ``f`` is trained on the judgements of every other fold, and fold ``f``'s queries are
reranked only by that model. ``benchmarks/rerank_cv.py`` merges the folds' runs and evaluates
all queries; every model records which queries it trained on and which it holds out, and the
benchmark refuses a model that saw a query it is asked to rerank.

Groups (source ``judged``): for each training query, each passage judged at least
``relevance`` is a positive (at most ``per_query`` of them, a seeded choice, so queries with
hundreds of relevant passages do not swamp the others); its negatives are the query's judged
passages below ``relevance``, and the teacher scores are the judgement grades themselves, so the
distillation term also orders the negatives by grade (a grade-1 passage above a grade-0 one).

With ``negatives_depth`` set, a query's negatives are only its judged-below-``relevance``
passages that the base bi-encoder ranks in its top ``negatives_depth`` over the collection's
corpus -- the hard negatives of the dense first stage the ranker will rerank -- as long as at
least ``min_negatives`` are there (else all its judged negatives, counted in the record).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from elasticir.train.corpora import default_cache, teacher_corpus_store
from elasticir.train.groups import RankingGroup, clean_text

__all__ = [
    "JUDGED_SOURCE",
    "JudgedData",
    "assign_folds",
    "judged_groups",
    "judged_record",
    "split_queries",
]

JUDGED_SOURCE = "judged"


@dataclass(frozen=True)
class JudgedData:
    """Which collection's judgements, how they are folded, which fold is held out."""

    dataset: str
    folds: int
    fold: int
    fold_seed: int
    relevance: int
    per_query: int
    seed: int
    data_root: Path
    negatives_depth: int | None = None
    min_negatives: int = 1
    base_model: str | None = None
    cache: Path | None = None


def assign_folds(query_ids: list[str] | set[str], folds: int, seed: int = 0) -> dict[str, int]:
    """``{query id: fold}``: the sorted ids in a permutation seeded by ``seed``, dealt round
    robin into ``folds`` folds (sizes differ by at most one). Independent of the training seed,
    so every fold's run of one split agrees on it."""
    ids = sorted(set(query_ids))
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    if folds > len(ids):
        raise ValueError(f"{folds} folds, but only {len(ids)} queries")
    order = np.random.default_rng([seed, 601]).permutation(len(ids))
    return {ids[int(row)]: i % folds for i, row in enumerate(order)}


def split_queries(
    query_ids: list[str] | set[str], folds: int, fold: int, seed: int = 0
) -> tuple[list[str], list[str]]:
    """``(train, held_out)`` query ids of ``fold`` (0-based), each sorted."""
    if folds == 1:  # no cross-validation: every judged query trains, none is held out
        if fold != 0:
            raise ValueError(f"one fold (all queries train) has fold 0, got {fold}")
        return sorted(set(query_ids)), []
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in [0, {folds}), got {fold}")
    assigned = assign_folds(query_ids, folds, seed)
    train = sorted(q for q, f in assigned.items() if f != fold)
    held = sorted(q for q, f in assigned.items() if f == fold)
    return train, held


def judged_groups(
    spec: JudgedData, progress: bool = False
) -> tuple[list[RankingGroup], dict[str, Any]]:
    """``(groups, record)``: the :class:`~elasticir.train.groups.RankingGroup` s of the
    training folds' queries (see the module docstring) and what was used, with the training and
    held-out query ids. Queries with no passage judged at ``relevance`` or none below it give
    no group."""
    from elasticir.data.corpus import load_passages
    from elasticir.data.datasets import get_dataset
    from elasticir.data.topics import read_topics
    from elasticir.data.trec import read_qrels

    dataset = get_dataset(spec.dataset, root=spec.data_root)
    if dataset.qrels is None or dataset.queries is None or dataset.corpus is None:
        raise ValueError(
            f"judged={spec.dataset!r}: cross-validation training needs a dataset with queries, "
            "qrels and a corpus"
        )
    qrels = read_qrels(dataset.qrels)
    topics = {q.query_id: q.text for q in read_topics(dataset.queries)}
    judged_ids = [q for q in topics if qrels.get(q)]
    train_ids, held_ids = split_queries(judged_ids, spec.folds, spec.fold, spec.fold_seed)
    needed = {d for q in train_ids for d in qrels[q]}
    passages = load_passages(dataset.corpus, needed)
    missing = needed - set(passages)
    dense = None
    if spec.negatives_depth is not None:
        dense = _dense_top(spec, dataset.corpus, {q: topics[q] for q in train_ids}, progress)
    rng = np.random.default_rng([spec.seed, 607])
    groups = []
    used: dict[str, int] = {}
    dense_negatives = {"queries": 0, "fallback_queries": 0}
    for qid in train_ids:
        judged = sorted((d, g) for d, g in qrels[qid].items() if d in passages)
        positives = [(d, g) for d, g in judged if g >= spec.relevance]
        negatives = [(d, g) for d, g in judged if g < spec.relevance]
        if not positives or not negatives:
            continue
        if dense is not None:
            hard = [(d, g) for d, g in negatives if d in dense[qid]]
            if len(hard) >= spec.min_negatives:
                negatives = hard
                dense_negatives["queries"] += 1
            else:
                dense_negatives["fallback_queries"] += 1
        if len(positives) > spec.per_query:
            rows = np.sort(rng.choice(len(positives), spec.per_query, replace=False))
            positives = [positives[int(i)] for i in rows]
        texts = tuple(clean_text(passages[d].encoder_text()) for d, _ in negatives)
        grades = tuple(float(max(g, 0)) for _, g in negatives)
        query = clean_text(topics[qid])
        for doc, grade in positives:
            groups.append(
                RankingGroup(
                    JUDGED_SOURCE,
                    query,
                    clean_text(passages[doc].encoder_text()),
                    texts,
                    (float(grade), *grades),
                )
            )
        used[qid] = len(positives)
    record = {
        "dataset": spec.dataset,
        "qrels": str(dataset.qrels),
        "folds": spec.folds,
        "fold": spec.fold,
        "fold_seed": spec.fold_seed,
        "relevance": spec.relevance,
        "per_query": spec.per_query,
        "groups": len(groups),
        "judged_passages_missing_from_corpus": len(missing),
        "train_query_ids": train_ids,
        "held_out_query_ids": held_ids,
        "queries_with_groups": len(used),
    }
    if dense is not None:
        record["negatives_depth"] = spec.negatives_depth
        record["dense_negatives"] = dense_negatives
    return groups, record


def _dense_top(
    spec: JudgedData, corpus: Path, queries: dict[str, str], progress: bool
) -> dict[str, set[str]]:
    """Each query's top ``spec.negatives_depth`` passage ids by the base bi-encoder over
    ``corpus`` (its vectors encoded once into the training cache)."""
    import faiss

    from elasticir.index.store import EmbeddingStore
    from elasticir.models.denser import ElasticDenser

    assert spec.negatives_depth is not None
    teacher = ElasticDenser(spec.base_model, batch_size=32)
    cache = spec.cache if spec.cache is not None else default_cache()
    _, store = teacher_corpus_store(teacher, Path(corpus), cache, progress)
    ids, vectors = EmbeddingStore(store).load()
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    order = sorted(queries)
    encoded = teacher.encode_queries([queries[q] for q in order])
    depth = min(spec.negatives_depth, len(ids))
    _, rows = index.search(np.ascontiguousarray(encoded, dtype=np.float32), depth)
    return {q: {ids[int(r)] for r in row if r >= 0} for q, row in zip(order, rows)}


def judged_record(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The judged-fold record of a ranker's ``elasticir.json`` (dataset, folds, fold,
    fold_seed, train_query_ids, held_out_query_ids, ...; what :func:`judged_groups` returned),
    or None when it never saw judgements."""
    training = manifest.get("training") or {}
    return (training.get("data") or {}).get(JUDGED_SOURCE) or None
