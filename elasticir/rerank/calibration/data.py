"""Calibration data: queries with their candidates in first-stage order, and their grades.

Calibration and held-out evaluation read ``(query, passages[, relevance])`` items or
:class:`CalibrationQuery` values, e.g. the top 100 of a first-stage run
(:func:`calibration_queries`); :func:`flatten_queries` lays them out as the pairs the ranker
scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CalibrationQuery", "calibration_queries", "flatten_queries"]


@dataclass(frozen=True)
class CalibrationQuery:
    """One query of calibration (or evaluation) data: its text, its candidates' texts and,
    optionally, each candidate's graded relevance (for ``loss="qrels"``)."""

    query: str
    passages: tuple[str, ...]
    relevance: tuple[int, ...] | None = None

    @classmethod
    def of(cls, item: CalibrationQuery | Sequence[Any]) -> CalibrationQuery:
        """From ``(query, passages)`` or ``(query, passages, relevance)``; relevance is a list
        aligned with the passages or a dict ``{passage text: grade}`` (missing: 0)."""
        if isinstance(item, CalibrationQuery):
            return item
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError(
                "calibration data are (query, passages) or (query, passages, relevance) "
                f"items, got {type(item).__name__}"
            )
        query, passages = str(item[0]), tuple(str(p) for p in item[1])
        if not passages:
            raise ValueError(f"query {query!r} has no candidate passages")
        relevance = item[2] if len(item) == 3 else None
        grades: tuple[int, ...] | None = None
        if isinstance(relevance, dict):
            grades = tuple(int(relevance.get(p, 0)) for p in passages)
        elif relevance is not None:
            grades = tuple(int(g) for g in relevance)
            if len(grades) != len(passages):
                raise ValueError(
                    f"query {query!r}: {len(grades)} grades for {len(passages)} passages"
                )
        return cls(query, passages, grades)


def calibration_queries(
    run: dict[str, dict[str, float]],
    queries: dict[str, str],
    passages: dict[str, str] | Any,
    qrels: dict[str, dict[str, int]] | None = None,
    depth: int = 100,
) -> list[CalibrationQuery]:
    """Calibration data from a first-stage TREC run: each query's top ``depth`` candidates
    (by score, ties by doc id), their texts (``passages[doc_id]``) and, with ``qrels``, their
    grades. Queries without text are skipped; query order follows ``run``."""
    out = []
    for qid, docs in run.items():
        if qid not in queries or not docs:
            continue
        ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]
        ids = [doc for doc, _ in ranked]
        grades = None
        if qrels is not None:
            judged = qrels.get(qid, {})
            grades = tuple(int(judged.get(doc, 0)) for doc in ids)
        out.append(CalibrationQuery(queries[qid], tuple(passages[d] for d in ids), grades))
    return out


def flatten_queries(
    items: Iterable[Any],
) -> tuple[list[CalibrationQuery], list[str], list[str], np.ndarray]:
    """``(queries, query texts, passage texts, offsets)``: the items as
    :class:`CalibrationQuery` values and their pairs, one query text per passage, query ``q``
    owning pairs ``offsets[q]:offsets[q + 1]``. Raises ``ValueError`` when there are none."""
    data = [CalibrationQuery.of(item) for item in items]
    if not data:
        raise ValueError("no calibration queries")
    queries = [d.query for d in data for _ in d.passages]
    passages = [p for d in data for p in d.passages]
    offsets = np.cumsum([0, *(len(d.passages) for d in data)])
    return data, queries, passages, offsets
