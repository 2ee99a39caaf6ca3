#!/usr/bin/env bash
# The calibrations shipped with ranker-minilm: a rank-aware exit policy and a list cutoff,
# Learn-then-Test (delta 0.05, epsilon 0.1) on 100 MS MARCO dev queries the ranker never saw
# (text only, no qrels), each with the dense top 100 of the DL21 pool by all-MiniLM-L6-v2
# (the passage space of elastic-minilm, whose full level it approximates): rank, cutoff; and
# the same over the dense top 20 (what the quickstart and the serving choices rerank):
# rank-top20, cutoff-top20. DEPTHS="100 20" by default.
set -euo pipefail
# The ranker is the exported one (its fp16-rounded weights are what ships, and a calibration
# is bound to the fingerprint of the weights it was made with): export it first.
ranker=${RANKER:-ranker-minilm}
out=models/ship/calibration
data=${ELASTICIR_DATA:-../shared/data}
mkdir -p "$out"
python benchmarks/calibration_topics.py --ranker "$ranker" --queries 100 -o "$out/topics.tsv"
[ -f "$out/dl21-minilm/meta.json" ] || elasticir index "$data/msmarco-dl21/corpus.jsonl" -o "$out/dl21-minilm"
for depth in ${DEPTHS:-100 20}; do
  suffix=$([ "$depth" = 100 ] && echo "" || echo "-top$depth")
  rm -f "$out/run$suffix.trec"
  elasticir search --index "$out/dl21-minilm" --topics "$out/topics.tsv" -k "$depth" \
    -o "$out/run$suffix.trec" -q
  first="all-MiniLM-L6-v2 (= elastic-minilm passage space, full level), dense top-$depth of the DL21 pool"
  for family in rank cutoff; do
    rm -f "$out/$family$suffix.json"
    elasticir calibrate --model "$ranker" --run "$out/run$suffix.trec" --topics "$out/topics.tsv" \
      --corpus "$data/msmarco-dl21/corpus.jsonl" --family "$family" --delta 0.05 --epsilon 0.1 \
      --first-stage "$first" -o "$out/$family$suffix.json"
  done
done
