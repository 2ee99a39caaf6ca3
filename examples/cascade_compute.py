"""A cascade whose compute is chosen per call: one pipeline, two tradeoffs.

python examples/cascade_compute.py

Builds an elastic checkpoint of the shipped all-MiniLM-L6-v2 (its heads and neurons sorted by
importance: plain truncation, no training), indexes the built-in sample with it, and runs
``dense % 10 >> biencoder % 3`` twice: every stage at full compute, then the query encoder
at L2-W50 (17% of the FLOPs). The result of each call says what each stage ran at and how
long it took. A trained model (``elasticir train denser``) keeps far more quality at its
small levels than this untrained one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from elasticir import api
from elasticir.data import read_topics, sample_dataset
from elasticir.data.corpus import iter_corpus
from elasticir.models import ElasticDenser
from elasticir.models.elastic import make_elastic
from elasticir.pipeline import DenseRetrieval
from elasticir.rerank.biencoder import BiEncoderScorer


def main() -> dict[str, api.Run]:
    sample = sample_dataset()
    queries = read_topics(sample.queries)
    with tempfile.TemporaryDirectory(prefix="elasticir-cascade-") as folder:
        work = Path(folder)  # removed on the way out, also after an error
        texts = [p.encoder_text() for p in iter_corpus(sample.corpus)]
        encoder = ElasticDenser(make_elastic(None, work / "elastic-minilm", texts))
        print("levels:", ", ".join(str(level) for level in encoder.levels))
        index = work / "index"
        api.build_index(api.IndexConfig(sample.corpus, index, progress=False), encoder)

        pipeline = DenseRetrieval(index, encoder) % 10 >> BiEncoderScorer(encoder) % 3
        runs = {}
        for compute in ("full", "dense@L2-W50"):
            result = pipeline(queries, compute=compute)
            seconds = ", ".join(f"{stage} {s:.2f}s" for stage, s in result.seconds.items())
            print(f"compute={compute!r}: ran at {result.compute}; {seconds}")
            runs[compute] = result.run
        measures = ("nDCG@10",)
        for compute, run in runs.items():
            quality = api.evaluate_run(run, qrels=sample.qrels, measures=measures)
            print(f"{compute:>14}: nDCG@10 {quality['nDCG@10']:.3f}")
    return runs


if __name__ == "__main__":
    main()
