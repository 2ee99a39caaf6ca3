"""Moved to :mod:`elasticir.models.elastic`; kept so old imports keep working."""

from elasticir.models.elastic import (  # noqa: F401
    DEFAULT_LEVELS,
    Importance,
    SubNetwork,
    check_model,
    compute_importance,
    default_levels,
    elastic_forward,
    embed,
    flops_ratio,
    layer_flops,
    layer_step,
    level_flops,
    level_menu,
    make_elastic,
    reorder_,
    sub_network,
)

__all__ = [
    "DEFAULT_LEVELS",
    "Importance",
    "SubNetwork",
    "check_model",
    "compute_importance",
    "default_levels",
    "elastic_forward",
    "embed",
    "flops_ratio",
    "layer_flops",
    "layer_step",
    "level_flops",
    "level_menu",
    "make_elastic",
    "reorder_",
    "sub_network",
]
