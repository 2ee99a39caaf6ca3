"""Evaluation: ranking measures (ir_measures), DPR-style QA accuracy, reference trec_eval.

* :func:`evaluate` / :func:`evaluate_per_query`: nDCG, RR, R, AP... from a run and qrels;
* :func:`answer_accuracy` / :func:`has_answer`: top-k answer accuracy for open-domain QA;
* :func:`trec_eval`: NIST trec_eval from Pyserini's jar, to cross-check ``evaluate``.

Importing this package loads neither ir_measures nor Java; they load on first use.
"""

from elasticir.eval.measures import (
    DEFAULT_MEASURES,
    TREC_DL_MEASURES,
    evaluate,
    evaluate_per_query,
    parse_measures,
)
from elasticir.eval.qa import answer_accuracy, has_answer, passage_texts
from elasticir.eval.trec_eval import trec_eval

__all__ = [
    "DEFAULT_MEASURES",
    "TREC_DL_MEASURES",
    "answer_accuracy",
    "evaluate",
    "evaluate_per_query",
    "has_answer",
    "parse_measures",
    "passage_texts",
    "trec_eval",
]
