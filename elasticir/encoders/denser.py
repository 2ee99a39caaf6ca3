"""Moved to :mod:`elasticir.models.denser`; kept so old imports keep working."""

from elasticir.models.denser import (  # noqa: F401
    PRECISIONS,
    ElasticDenser,
    pool,
)

__all__ = ["ElasticDenser", "PRECISIONS", "pool"]
