"""Ranking measures over a :data:`Run` and :data:`Qrels`, computed by ``ir_measures``.

Measures are named in ``ir_measures`` syntax: ``nDCG@10``, ``RR(rel=2)@10``, ``R(rel=2)@100``,
``AP(rel=2)``, ``P@5``... ``rel=2`` makes a binary measure count only judgements >= 2 as
relevant (TREC DL's convention for graded qrels); nDCG always uses the graded judgements.

Which queries are averaged (the same as ``trec_eval -c``):

* a query in the run but absent from the qrels is ignored (it cannot be scored);
* a query in the qrels but absent from the run counts, with the measure's value for an empty
  ranking (0), so a run that drops hard queries does not look better than it is.

Ties in scores are broken as trec_eval does (by doc id, descending), so results agree with
:func:`elasticir.eval.trec_eval.trec_eval` to floating-point precision.
"""

from __future__ import annotations

from collections.abc import Sequence

from elasticir.data.records import Qrels, Run

__all__ = [
    "DEFAULT_MEASURES",
    "TREC_DL_MEASURES",
    "evaluate",
    "evaluate_per_query",
    "parse_measures",
]

DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10", "RR@10", "R@100", "AP")
# TREC Deep Learning: binary measures count only judgements >= 2 as relevant.
TREC_DL_MEASURES: tuple[str, ...] = ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@100", "AP(rel=2)")


def parse_measures(measures: Sequence[str] | str) -> list:
    """``ir_measures`` measure objects for ``measures``, duplicates dropped, order kept.

    Raises ``ValueError`` naming the first string ``ir_measures`` cannot parse.
    """
    import ir_measures  # imported here so `import elasticir.eval` stays light

    if isinstance(measures, str):
        measures = [measures]
    if not measures:
        raise ValueError("no measures given")
    parsed = []
    for name in measures:
        try:
            measure = ir_measures.parse_measure(name)
        except (NameError, ValueError, SyntaxError, TypeError) as exc:
            raise ValueError(
                f"unknown measure {name!r} (ir_measures syntax, e.g. 'nDCG@10', "
                f"'RR(rel=2)@10'): {exc}"
            ) from None
        if measure not in parsed:
            parsed.append(measure)
    return parsed


def _check_qrels(qrels: Qrels) -> None:
    if not qrels:
        # ir_measures would average over nothing and return NaN; say why instead.
        raise ValueError("qrels are empty: nothing to evaluate against")


def evaluate(
    run: Run, qrels: Qrels, measures: Sequence[str] = DEFAULT_MEASURES
) -> dict[str, float]:
    """Mean of each measure over the qrels' queries: ``{str(measure): value}``.

    Keys are the measures' canonical ``ir_measures`` spelling (``"RR(rel=2)@10"``), in the
    order given. See the module docstring for which queries are averaged.
    """
    import ir_measures

    parsed = parse_measures(measures)
    _check_qrels(qrels)
    results = ir_measures.calc_aggregate(parsed, qrels, run)
    return {str(m): float(results[m]) for m in parsed}


def evaluate_per_query(
    run: Run, qrels: Qrels, measures: Sequence[str] = DEFAULT_MEASURES
) -> dict[str, dict[str, float]]:
    """Per-query values: ``{query_id: {str(measure): value}}``, query ids sorted.

    Covers every query of the qrels (missing from the run: 0) and no query outside them.
    """
    import ir_measures

    parsed = parse_measures(measures)
    _check_qrels(qrels)
    per_query: dict[str, dict[str, float]] = {}
    for metric in ir_measures.iter_calc(parsed, qrels, run):
        per_query.setdefault(metric.query_id, {})[str(metric.measure)] = float(metric.value)
    order = [str(m) for m in parsed]
    return {
        qid: {name: per_query[qid][name] for name in order if name in per_query[qid]}
        for qid in sorted(per_query)
    }
