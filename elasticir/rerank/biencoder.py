"""A bi-encoder's own dot product as a reranker: the reference point of every reranking table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from elasticir.compute.levels import FULL, Level
from elasticir.data.records import Passage
from elasticir.pipeline import Reranker

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser

__all__ = ["BiEncoderScorer"]


class BiEncoderScorer(Reranker):
    """Rescore with the bi-encoder itself: the query (at ``level``, or the call's level) and
    the passages (at full compute) encoded afresh, scored by their dot product."""

    stage_name = "biencoder"

    def __init__(self, encoder: ElasticDenser | None = None, level: Level | str = FULL) -> None:
        if encoder is None:
            from elasticir.models.denser import ElasticDenser

            encoder = ElasticDenser()
        self.encoder = encoder
        self.level = encoder.check_level(level)

    @property
    def levels(self) -> tuple[Level, ...]:
        return tuple(self.encoder.levels)

    @property
    def default_compute(self) -> str:
        return str(self.level)

    def score(
        self, query: str, passages: Sequence[Passage], *, compute: Level | str | None = None
    ) -> np.ndarray:
        q = self.encoder.encode_queries([query], level=compute or self.level)
        p = self.encoder.encode_passages([x.encoder_text() for x in passages])
        return (p @ q[0]).astype(np.float32)
