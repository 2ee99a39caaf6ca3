"""The measure sets of the benchmarks' quality tables."""

from __future__ import annotations

DL_MEASURES = ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@100")
"""msmarco-dl19: nDCG@10, and RR@10 / R@100 counting grade >= 2 as relevant."""

NQ_MEASURES = ("RR@10",)
"""nq-open: RR@10 beside the answer accuracies (top-k) of :mod:`elasticir.eval.qa`."""
