#!/usr/bin/env bash
# WiSE-FT of the five 40-step cross-validated rankers (configs/ranker-minilm-dl19cv-base.json),
# evaluated by benchmarks/rerank_cv.py beside the rankers they interpolate.
#
# Declared before its run: ALPHA=0.5 (the midpoint; not fitted on DL19) is the run of record.
# Other values are a post-hoc sweep and are reported as such, never as the target's result.
#
#   bash benchmarks/rerank_cv_wise.sh    # ~7 min of interpolation, ~15 min of DL19 reranking
#                                        # (both sets of models) and ~13 min of NQ (200
#                                        # questions; NQ=0 skips it)
#   ALPHA=0.25 NQ=0 BASELINE=0 bash benchmarks/rerank_cv_wise.sh   # a post-hoc point of the
#                                        # sweep, without NQ and the trained rankers' rows
set -euo pipefail
ALPHA=${ALPHA:-0.5}
TRAINED=${TRAINED:-models/ranker-minilm-dl19cv-base}
folds=() baselines=()
for f in 0 1 2 3 4; do
  out="models/ranker-minilm-dl19cv-wise${ALPHA}-f$f"
  if [ ! -f "$out/elasticir.json" ]; then
    elasticir train interpolate "$TRAINED-f$f" --alpha "$ALPHA" -o "$out" -q
  fi
  folds+=(--fold-model "$out")
  if [ "${BASELINE:-1}" != 0 ]; then baselines+=(--baseline-fold-model "$TRAINED-f$f"); fi
done
python benchmarks/rerank_cv.py "${folds[@]}" ${baselines[@]+"${baselines[@]}"} --nq "${NQ:-200}" \
  --out "results/rerank-cv-wise${ALPHA}"
