"""Anchor groups for ranker training: unlabelled queries scored by the base bi-encoder.

ElasticRanker's labelled data is small and mostly WikiQA/TrecQA; trained on it alone, a ranker
that starts as the bi-encoder (the pooled head) drifts away from MS MARCO relevance. Anchor
groups hold it near its start where the labelled data says nothing: ``queries`` MS MARCO dev
queries (``topics/topics.msmarco-passage.dev-subset.txt``, a seeded sample; their qrels are
never read) searched over the passages of a corpus by the base bi-encoder at full compute, each
query's top ``depth`` passages becoming one group whose teacher scores are the bi-encoder's
cosines. They enter only the teacher (distillation) term of the loss: the group's first passage
is the bi-encoder's top hit, not a judged positive, so the listwise and pointwise label terms
skip it.

Only passage texts of the corpus are read (as ``elasticir train denser`` and ``train
projection --corpus`` do), never its queries or judgements. The sampled query ids are recorded
in the model's training record, so a benchmark can calibrate on other queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ANCHOR_SOURCE", "AnchorData", "anchor_groups"]

ANCHOR_SOURCE = "msmarco-dev-anchor"
_TOPICS = "msmarco-dev-subset"


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


def anchor_groups(
    spec: AnchorData,
    banned: set[str],
    progress: bool = True,
    threads: int | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """``(groups, record)``: one :class:`~elasticir.train.ranker.RankingGroup` per sampled
    query (``labelled=False``, teacher scores = bi-encoder cosines rounded to 1e-5, which
    makes a rerun on another thread count less likely to key differently; it cannot rule it
    out), and what was used (query ids included).
    Queries whose normalised text is in ``banned`` (the evaluation questions) are never drawn.
    """
    import faiss

    from elasticir.data.corpus import load_passages
    from elasticir.data.datasets import get_dataset
    from elasticir.data.topics import read_topics
    from elasticir.encoders.denser import ElasticDenser
    from elasticir.index.store import EmbeddingStore
    from elasticir.train.data import _norm
    from elasticir.train.projection import corpus_file, teacher_corpus_store
    from elasticir.train.ranker import RankingGroup, _clean

    topics = get_dataset(_TOPICS, root=spec.data_root)
    candidates = [q for q in read_topics(topics.queries) if _norm(q.text) not in banned]
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
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), spec.depth)
    needed = {ids[int(r)] for rr in rows for r in rr}
    texts = {d: _clean(p.encoder_text()) for d, p in load_passages(corpus_path, needed).items()}
    groups = []
    for query, ss, rr in zip(picked, scores, rows):
        docs = [texts[ids[int(r)]] for r in rr]
        teacher_scores = tuple(round(float(s), 5) for s in ss)
        groups.append(
            RankingGroup(
                ANCHOR_SOURCE,
                _clean(query.text),
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
        "query_ids": [q.query_id for q in picked],
    }
    return groups, record
