"""Write the calibration topics of a shipped ranker: a seeded sample of MS MARCO dev queries
(their text only; the qrels are never read) leaving out every query the ranker trained on (its
anchor groups' queries and any judged ones).

    python benchmarks/calibration_topics.py --ranker models/ship/ranker-minilm \\
        --queries 200 -o models/ship/calibration/topics.tsv

Calibration measures the ranker against itself (the drop of nDCG@10 against its own full
ranking), so it needs no judgements; the queries only have to be ones it never saw.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from elasticir.data.datasets import get_dataset
from elasticir.data.files import atomic_file
from elasticir.data.topics import read_topics
from elasticir.rerank.ranker import ElasticRanker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranker", required=True, help="Ranker directory or shipped name")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=29)
    parser.add_argument("--output", "-o", type=Path, required=True)
    args = parser.parse_args()
    training = ElasticRanker(args.ranker).manifest.get("training") or {}
    data = training.get("data") or {}
    seen = set((data.get("anchor") or {}).get("query_ids", ()))
    seen |= set((data.get("judged") or {}).get("train_query_ids", ()))
    topics = [
        q for q in read_topics(get_dataset("msmarco-dev-subset").queries) if q.query_id not in seen
    ]
    sample = random.Random(args.seed).sample(topics, min(args.queries, len(topics)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.output) as tmp:
        tmp.write_text("".join(f"{q.query_id}\t{q.text}\n" for q in sample), encoding="utf-8")
    print(
        f"{len(sample)} calibration queries ({len(seen)} seen by the ranker left out): "
        f"{args.output}"
    )


if __name__ == "__main__":
    main()
