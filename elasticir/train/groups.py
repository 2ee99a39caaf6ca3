"""The ranking group, ElasticRanker's unit of training, and the text cleaning groups get.

A group is one query, one positive, its own negatives, and teacher scores when the source has
them. The ranker's training files give groups (:mod:`elasticir.train.ranker.sources`), and so
do the two sources that add to them: the unlabelled anchor groups (:mod:`elasticir.train.anchor`,
which DiPair also trains on) and a benchmark's judged folds (:mod:`elasticir.train.judged`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RankingGroup", "clean_text"]


@dataclass(frozen=True)
class RankingGroup:
    """One query, one positive, its own negatives, and teacher scores when the source has
    them (``teacher[0]`` the positive's, then one per negative). An unlabelled group (the
    anchor groups of :mod:`elasticir.train.anchor`) enters only the teacher term."""

    source: str
    query: str
    positive: str
    negatives: tuple[str, ...]
    teacher: tuple[float, ...] | None = None
    labelled: bool = True  # False: ``positive`` is only the teacher's top passage


def clean_text(text: str) -> str:
    """``text`` with its whitespace runs made single spaces, and stripped."""
    return " ".join(text.split())
