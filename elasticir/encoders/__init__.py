"""Old home of the encoders, now :mod:`elasticir.models` (and the levels
:mod:`elasticir.compute`); kept so old imports keep working.

``ElasticDenser`` imports torch and transformers; it is loaded on first use so that
``import elasticir.encoders`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elasticir.compute.levels import FULL, Level

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser

__all__ = ["FULL", "ElasticDenser", "Level"]


def __getattr__(name: str) -> object:
    if name == "ElasticDenser":
        from elasticir.models.denser import ElasticDenser

        return ElasticDenser
    raise AttributeError(name)
