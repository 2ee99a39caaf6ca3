"""The neural models: ElasticDenser (the elastic dual encoder, its sub-networks, learned
projections and checkpoint loading), and the reranking models.

Each model takes its compute level per call (:mod:`elasticir.compute`). The classes import
torch and transformers, so they load on first use and ``import elasticir.models`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser

__all__ = ["ElasticDenser"]


def __getattr__(name: str) -> object:
    if name == "ElasticDenser":
        from elasticir.models.denser import ElasticDenser

        return ElasticDenser
    raise AttributeError(name)
