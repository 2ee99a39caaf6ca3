"""Retrieval: BM25 through Pyserini / Anserini, and fusion of runs.

* :func:`build_bm25_index`, :class:`BM25Searcher`, :func:`bm25_search`: Lucene BM25 (needs
  the ``bm25`` extra: ``pip install 'elasticir[bm25]'``);
* :func:`reciprocal_rank_fusion`, :func:`interpolate`: combine runs (pure Python).

Importing this package starts no JVM and imports neither Pyserini, jnius nor torch: the JVM
starts on the first BM25 call (:func:`elasticir.java.start_jvm`).
"""

from elasticir.retrieve.bm25 import BM25Searcher, bm25_search, build_bm25_index
from elasticir.retrieve.fusion import interpolate, reciprocal_rank_fusion

__all__ = [
    "BM25Searcher",
    "bm25_search",
    "build_bm25_index",
    "interpolate",
    "reciprocal_rank_fusion",
]
