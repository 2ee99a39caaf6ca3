"""The encoder and index one level down: vectors, compute levels and a FAISS index.

python examples/encode_and_search_vectors.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from elasticir.compute import Level
from elasticir.data import read_topics, sample_dataset
from elasticir.index import IndexSpec, build_index, encode_corpus
from elasticir.models import ElasticDenser
from elasticir.retrieve.dense import DenseSearcher


def main() -> list[tuple[str, str, float]]:
    dataset = sample_dataset()
    encoder = ElasticDenser()
    print("levels offered:", encoder.levels, "dim:", encoder.dim)

    vectors = encoder.encode_queries(["why is the sea salty"], level=Level("full"))
    print("query vector", vectors.shape, "norm", float(np.linalg.norm(vectors[0])))

    with tempfile.TemporaryDirectory(prefix="elasticir-vectors-") as folder:
        work = Path(folder)  # removed on the way out, also after an error
        encode_corpus(dataset.corpus, work / "store", encoder, shard_size=16, progress=False)
        build_index(work / "store", work / "hnsw", IndexSpec(kind="hnsw"), progress=False)

        searcher = DenseSearcher(work / "hnsw", encoder)
        top = []
        for query in read_topics(dataset.queries)[:3]:
            doc_id, score = next(iter(searcher.search([query], k=1)[query.query_id].items()))
            top.append((query.text, doc_id, score))
            print(f"{query.text!r} -> {doc_id} ({score:.3f})")
    return top


if __name__ == "__main__":
    main()
