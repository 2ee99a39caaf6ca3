"""Scorers any user can write: a function of the query and the passage texts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from elasticir.data.records import Passage
from elasticir.pipeline.stages import Reranker

__all__ = ["FunctionScorer"]


class FunctionScorer(Reranker):
    """Wrap ``fn(query, passage_texts) -> scores`` as a :class:`~elasticir.pipeline.Scorer`."""

    def __init__(self, fn: Callable[[str, list[str]], Sequence[float]]) -> None:
        self.fn = fn

    def score(self, query: str, passages: Sequence[Passage]) -> np.ndarray:
        return np.asarray(self.fn(query, [p.encoder_text() for p in passages]), dtype=np.float32)
