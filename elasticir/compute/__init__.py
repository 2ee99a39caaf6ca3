"""The compute vocabulary every elastic component shares.

A :class:`Level` names a nested sub-network (depth and width) and prints, parses and compares
like an ir-measures measure; :mod:`~elasticir.compute.flops` prices it on a model's config;
:mod:`~elasticir.compute.exits` holds the per-input exit policies over levels. Encoders,
rankers, training and the coming schedule all speak it. Importing it is cheap: torch loads
only with the exit policies.
"""

from elasticir.compute.flops import (
    DEFAULT_LEVELS,
    SubNetwork,
    default_levels,
    flops_ratio,
    layer_flops,
    level_flops,
    level_menu,
    sub_network,
)
from elasticir.compute.levels import FULL, Level

__all__ = [
    "DEFAULT_LEVELS",
    "FULL",
    "Level",
    "SubNetwork",
    "default_levels",
    "flops_ratio",
    "layer_flops",
    "level_flops",
    "level_menu",
    "sub_network",
]
