"""The benchmarks' embedding stores, cached under ``indexes/bench/``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from elasticir.index.store import encode_corpus

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser

WORK = Path("indexes/bench")
"""The benchmarks' cache, relative to the working directory (the repository root): embedding
stores, BM25 indexes, memoised scores."""


def encode(encoder: ElasticDenser, corpus: Path, name: str) -> Path:
    """The embedding store ``WORK/<name>.embeddings`` of ``corpus`` by ``encoder``: encoded on
    first use, resumed where a run stopped, reused as it is once complete (changed shards of a
    changed corpus are encoded again: :func:`~elasticir.index.store.encode_corpus`)."""
    store = WORK / f"{name}.embeddings"
    encode_corpus(corpus, store, encoder)
    return store
