"""Moved to :mod:`elasticir.compute.levels`; kept so old imports keep working."""

from elasticir.compute.levels import FULL, Level

__all__ = ["FULL", "Level"]
