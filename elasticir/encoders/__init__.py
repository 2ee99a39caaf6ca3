"""Encoders and the compute-level vocabulary they share.

``ElasticDenser`` imports torch and transformers; it is loaded on first use so that
``import elasticir.encoders`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elasticir.encoders.levels import FULL, Level

if TYPE_CHECKING:
    from elasticir.encoders.denser import ElasticDenser

__all__ = ["FULL", "ElasticDenser", "Level"]


def __getattr__(name: str) -> object:
    if name == "ElasticDenser":
        from elasticir.encoders.denser import ElasticDenser

        return ElasticDenser
    raise AttributeError(name)
