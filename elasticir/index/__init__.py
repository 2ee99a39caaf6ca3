"""Passage embedding stores and the FAISS indexes built from them."""

from elasticir.index.faiss_index import IndexSpec, build_index, load_index
from elasticir.index.store import EmbeddingStore, encode_corpus

__all__ = ["EmbeddingStore", "IndexSpec", "build_index", "encode_corpus", "load_index"]
