"""Anchor groups for ranker and DiPair training: unlabelled queries scored by the base bi-encoder.

ElasticRanker's labelled data is small and mostly WikiQA/TrecQA; trained on it alone, a ranker
that starts as the bi-encoder (the pooled head) drifts away from MS MARCO relevance. Anchor
groups hold it near its start where the labelled data says nothing: ``queries`` MS MARCO dev
queries (``topics/topics.msmarco-passage.dev-subset.txt``, a seeded sample; their qrels are
never read) searched over the passages of a corpus by the base bi-encoder at full compute, each
query's top ``depth`` passages becoming one group whose teacher scores are the bi-encoder's
cosines. They enter only the teacher (distillation) term of the loss: the group's first passage
is the bi-encoder's top hit, not a judged positive, so the listwise and pointwise label terms
skip it.

With ``bm25_weight > 0`` the teacher is a *fused first stage* instead: each query's top
``FUSION_DEPTH`` passages by the bi-encoder and by BM25 (a Lucene index of the corpus, built
once into ``cache/bm25``) are fused by min-max score interpolation
(:func:`elasticir.retrieve.fusion.interpolate`, ``bm25_weight * bm25 + (1 - bm25_weight) *
cosine``), and the group is the fused top ``depth`` with the fused scores as teacher. The
ranker is then also taught the lexical evidence the bi-encoder misses, from the same two kinds
of first stage the benchmark reranks (BM25 here over the anchor corpus alone), so no other
model is involved. How it compares with the bi-encoder alone: docs/experiments/reranking.md.

Only passage texts of the corpus are read (as ``elasticir train denser`` and ``train
projection --corpus`` do), never its queries or judgements. The sampled query ids are recorded
in the model's training record, so a benchmark can calibrate on other queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from elasticir.train.config import check_int
from elasticir.train.corpora import corpus_file, default_cache, file_sha256, teacher_corpus_store
from elasticir.train.data import norm_text
from elasticir.train.groups import RankingGroup, clean_text
from elasticir.train.keys import digest

__all__ = [
    "ANCHOR_SOURCE",
    "FUSION_DEPTH",
    "AnchorData",
    "anchor_data",
    "anchor_groups",
    "check_anchor_fields",
    "drop_unused_anchor_fields",
]

ANCHOR_SOURCE = "msmarco-dev-anchor"
_TOPICS = "msmarco-dev-subset"
FUSION_DEPTH = 1000  # per first stage, as in the fusion module's default


@dataclass(frozen=True)
class AnchorData:
    """The anchor groups' inputs: how many queries, from which corpus, how deep."""

    queries: int
    corpus: str
    depth: int
    seed: int
    base_model: str | None
    data_root: Path
    cache: Path
    bm25_weight: float = 0.0  # > 0: teacher = min-max fusion of BM25 and the bi-encoder


def check_anchor_fields(config: Any) -> None:
    """Validate a training config's ``anchor_*`` fields (the ranker's and DiPair's)."""
    check_int("anchor_queries", config.anchor_queries, 0)
    check_int("anchor_depth", config.anchor_depth, 2)
    weight = config.anchor_bm25_weight
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise ValueError(f"anchor_bm25_weight must be in [0, 1], got {weight!r}")
    if not isinstance(config.anchor_corpus, str) or not config.anchor_corpus:
        raise ValueError(
            f"anchor_corpus must name a dataset or corpus file, got {config.anchor_corpus!r}"
        )


def drop_unused_anchor_fields(config: Any, values: dict[str, Any]) -> None:
    """Remove from a config's training ``values`` the anchor fields that change nothing, so
    runs without anchors (or with bi-encoder-scored ones) keep the keys they had before."""
    if not config.anchor_queries:
        for name in ("anchor_queries", "anchor_corpus", "anchor_depth"):
            del values[name]
    if not config.anchor_bm25_weight:
        del values["anchor_bm25_weight"]


def anchor_data(config: Any, data_root: Path, cache: Path | None) -> AnchorData:
    """The :class:`AnchorData` of a training config with ``anchor_queries``,
    ``anchor_corpus``, ``anchor_depth``, ``anchor_bm25_weight``, ``seed`` and ``base_model``
    (the ranker's and DiPair's); ``cache`` None means the default cache folder."""
    return AnchorData(
        queries=config.anchor_queries,
        corpus=config.anchor_corpus,
        depth=config.anchor_depth,
        seed=config.seed,
        base_model=config.base_model,
        data_root=data_root,
        cache=cache if cache is not None else default_cache(),
        bm25_weight=float(config.anchor_bm25_weight),
    )


def anchor_groups(
    spec: AnchorData,
    banned: set[str],
    progress: bool = True,
    threads: int | None = None,
) -> tuple[list[RankingGroup], dict[str, Any]]:
    """``(groups, record)``: one :class:`~elasticir.train.groups.RankingGroup` per sampled
    query (``labelled=False``; teacher scores = bi-encoder cosines, or with ``bm25_weight > 0``
    the fused scores, rounded to 1e-5, which makes a rerun on another thread count less likely
    to key differently; it cannot rule it out), and what was used (query ids included).
    Queries whose normalised text is in ``banned`` (the evaluation questions) are never drawn.
    """
    import faiss

    from elasticir.data.corpus import load_passages
    from elasticir.data.datasets import get_dataset
    from elasticir.data.topics import read_topics
    from elasticir.index.store import EmbeddingStore
    from elasticir.models.denser import ElasticDenser

    topics = get_dataset(_TOPICS, root=spec.data_root)
    candidates = [q for q in read_topics(topics.queries) if norm_text(q.text) not in banned]
    if spec.queries > len(candidates):
        raise ValueError(
            f"anchor_queries={spec.queries}, but {topics.queries} has only {len(candidates)} "
            "usable queries"
        )
    rng = np.random.default_rng([spec.seed, 503])
    picked = [candidates[int(i)] for i in np.sort(rng.choice(len(candidates), spec.queries, False))]
    corpus_path = corpus_file(spec.corpus, spec.data_root)
    teacher = ElasticDenser(spec.base_model, batch_size=32)
    key, store = teacher_corpus_store(teacher, corpus_path, spec.cache, progress)
    ids, vectors = EmbeddingStore(store).load()
    if spec.depth > len(ids):
        raise ValueError(f"anchor_depth={spec.depth} exceeds the corpus's {len(ids)} passages")
    if threads is not None:
        faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    queries = teacher.encode_queries([q.text for q in picked])
    depth = min(len(ids), FUSION_DEPTH) if spec.bm25_weight > 0 else spec.depth
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), depth)
    ranking = {
        q.query_id: [(ids[int(r)], float(s)) for s, r in zip(ss, rr)]
        for q, ss, rr in zip(picked, scores, rows)
    }
    bm25 = None
    if spec.bm25_weight > 0:
        ranking, bm25 = _fuse(spec, corpus_path, picked, ranking, threads)
    needed = {d for pairs in ranking.values() for d, _ in pairs}
    texts = {d: clean_text(p.encoder_text()) for d, p in load_passages(corpus_path, needed).items()}
    groups = []
    for query in picked:
        pairs = ranking[query.query_id]
        docs = [texts[d] for d, _ in pairs]
        teacher_scores = tuple(round(s, 5) for _, s in pairs)
        groups.append(
            RankingGroup(
                ANCHOR_SOURCE,
                clean_text(query.text),
                docs[0],
                tuple(docs[1:]),
                teacher_scores,
                labelled=False,
            )
        )
    record = {
        "topics": str(topics.queries),
        "corpus": str(corpus_path),
        "corpus_store": key,
        "teacher": teacher.fingerprint,
        "queries": len(groups),
        "depth": spec.depth,
        "teacher_scores": "bm25+biencoder fusion" if bm25 else "biencoder",
        "bm25": bm25,  # the BM25 index and weight of a fused teacher
        "query_ids": [q.query_id for q in picked],
    }
    return groups, record


def _fuse(
    spec: AnchorData,
    corpus_path: Path,
    picked: list[Any],
    dense: dict[str, list[tuple[str, float]]],
    threads: int | None,
) -> tuple[dict[str, list[tuple[str, float]]], dict[str, Any]]:
    """Each query's fused top ``spec.depth`` (BM25 top ``FUSION_DEPTH`` with the dense one,
    min-max interpolated) and a record of the BM25 index used."""
    from elasticir.retrieve.bm25 import META_FILE, BM25Searcher, build_bm25_index
    from elasticir.retrieve.fusion import interpolate, ranked

    key = digest({"path": str(corpus_path.resolve()), "file": file_sha256(corpus_path)})
    index_dir = spec.cache / "bm25" / key
    if not (index_dir / META_FILE).is_file():  # built once; a build appears only when complete
        build_bm25_index(corpus_path, index_dir, threads=threads or 1, progress=False)
    with BM25Searcher(index_dir) as searcher:
        sparse = searcher.search(picked, k=FUSION_DEPTH, threads=threads or 1)
    fused = interpolate(
        sparse,
        {qid: dict(pairs) for qid, pairs in dense.items()},
        alpha=spec.bm25_weight,
        normalization="minmax",
        depth=FUSION_DEPTH,
    )
    short = [q.query_id for q in picked if len(fused[q.query_id]) < spec.depth]
    if short:
        raise ValueError(
            f"anchor_depth={spec.depth}, but query {short[0]!r} has only "
            f"{len(fused[short[0]])} fused passages (at most {FUSION_DEPTH})"
        )
    ranking = {q.query_id: ranked(fused[q.query_id], spec.depth) for q in picked}
    record = {"index": key, "weight": spec.bm25_weight, "k1": searcher.k1, "b": searcher.b}
    return ranking, record
