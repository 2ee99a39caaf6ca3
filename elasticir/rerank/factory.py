"""Rerankers by name: what ``elasticir rerank --ranker KIND[:MODEL]`` builds."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elasticir.api import RerankStageSpec
    from elasticir.rerank.pipeline import Scorer


def make_scorer(
    spec: RerankStageSpec, *, level: str = "full", policy: str | None = None, batch: int = 32
) -> Scorer:
    """The scorer of one cascade stage; ``level``/``policy`` apply to the elastic ranker."""
    if spec.kind == "biencoder":
        from elasticir.encoders.denser import ElasticDenser
        from elasticir.rerank.pipeline import BiEncoderScorer

        if policy is not None:
            raise ValueError("--policy applies to the elastic ranker, not to the bi-encoder")
        return BiEncoderScorer(ElasticDenser(spec.model), level=level)
    raise ValueError(f"the {spec.kind} reranker is not available yet")
