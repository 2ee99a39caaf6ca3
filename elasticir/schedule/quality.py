"""What one served ranking is worth: a per-request quality against judgements.

The profiler, the load generator and the simulator score alike: ``metric`` (an ir_measures
name such as ``nDCG@10``, ``RR@10`` or ``Success@1``) of each ranking against the qrels of its
query. *Effective* quality counts a late or failed answer as 0 (a late answer is as useless
to the user as none); requests whose query has no judgements are left out of the means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from elasticir.eval.measures import evaluate_per_query, parse_measures

__all__ = ["DEFAULT_METRIC", "check_metric", "ranking_quality"]

DEFAULT_METRIC = "nDCG@10"

Qrels = Mapping[str, Mapping[str, int]]


def check_metric(metric: str) -> str:
    """``metric`` in ir_measures' canonical spelling; ``ValueError`` when it is not one."""
    try:
        (parsed,) = parse_measures([metric])
    except ValueError as error:
        raise ValueError(f"quality metric {metric!r}: {error}") from None
    return str(parsed)


def ranking_quality(
    rankings: Sequence[tuple[str, Mapping[str, float]]], qrels: Qrels, metric: str
) -> list[float | None]:
    """``metric`` of each ``(query_id, {doc_id: score})``; None where the query is unjudged.

    One ir_measures pass over every ranking (the same query may come many times, each
    scored on its own)."""
    name = check_metric(metric)
    run: dict[str, dict[str, float]] = {}
    judged: dict[str, dict[str, int]] = {}
    for i, (qid, docs) in enumerate(rankings):
        if qid in qrels and qrels[qid]:
            key = f"r{i}"
            run[key] = {str(d): float(s) for d, s in docs.items()}
            judged[key] = dict(qrels[qid])
    values: list[float | None] = [None] * len(rankings)
    if not judged:
        return values
    per_query = evaluate_per_query(run, judged, [name])
    for key, measured in per_query.items():
        values[int(key[1:])] = float(measured[name])
    return values
