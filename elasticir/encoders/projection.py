"""Moved to :mod:`elasticir.models.projection`; kept so old imports keep working."""

from elasticir.models.projection import (  # noqa: F401
    PROJECTIONS_FILE,
    Projection,
    find_projections,
    read_projections,
    shipped_projections_path,
    write_projections,
)

__all__ = [
    "PROJECTIONS_FILE",
    "Projection",
    "find_projections",
    "read_projections",
    "shipped_projections_path",
    "write_projections",
]
