"""What a compute level costs: the sub-network it keeps of a transformer, and its FLOPs.

Pure arithmetic on a Hugging Face config (``num_hidden_layers``, ``num_attention_heads``,
``intermediate_size``, ``hidden_size``): no weights, no torch. Encoders, rankers, training
and the schedule price their levels with these same functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from elasticir.compute.levels import FULL, Level

__all__ = [
    "DEFAULT_LEVELS",
    "SubNetwork",
    "default_levels",
    "flops_ratio",
    "layer_flops",
    "level_flops",
    "level_menu",
    "sub_network",
]

DEFAULT_LEVELS: tuple[Level, ...] = tuple(
    Level(spec) for spec in ("full", "L6-W75", "L4", "L6-W50", "L3-W50", "L2-W50")
)
"""The menu for a 6-layer encoder such as all-MiniLM-L6-v2; FLOPs ratios (32 tokens):
1.0, 0.75, 0.667, 0.5, 0.25, 0.167. ``default_levels(config)`` derives it for any depth.

The 50% level keeps every layer at half width rather than fewer layers at 3/4 width: at the
same FLOPs, plain truncation keeps far more of the full model's ranking at full depth (see
docs/experiments/elastic-denser.md), so elastic training starts much closer to it there."""


# --------------------------------------------------------------------------- sub-networks


class SubNetwork(NamedTuple):
    """What a level keeps of one model: layers, and heads / FFN neurons per layer."""

    depth: int
    heads: int
    neurons: int


def _keep(total: int, width: int) -> int:
    return max(1, (total * width + 50) // 100)  # round half up, in integers


def sub_network(config: Any, level: Level | str) -> SubNetwork:
    """The sub-network ``level`` names in a model with this (Hugging Face) config.

    Raises ``ValueError`` when the level is deeper than the model.
    """
    level = Level(level).resolve(int(config.num_hidden_layers))
    assert level.depth is not None
    return SubNetwork(
        depth=level.depth,
        heads=_keep(int(config.num_attention_heads), level.heads),
        neurons=_keep(int(config.intermediate_size), level.ffn),
    )


def level_flops(config: Any, level: Level | str, seq_len: int = 32) -> int:
    """FLOPs (2 x multiply-adds) of one ``seq_len``-token sequence through ``level``'s layers.

    Counts the matrix products of each kept layer: the Q/K/V projections, the attention
    scores (QK^T) and context (AV), the attention output projection, and both FFN projections.
    Excluded, as negligible or identical at every level: embeddings, biases, softmax, GELU,
    layer norms, residual adds and pooling.
    """
    sub = sub_network(config, level)
    hidden = int(config.hidden_size)
    width = sub.heads * (hidden // int(config.num_attention_heads))  # kept attention width
    t = int(seq_len)
    per_layer = (
        2 * t * hidden * 3 * width  # Q, K, V projections
        + 2 * t * t * width * 2  # scores QK^T and context AV
        + 2 * t * width * hidden  # attention output projection
        + 2 * t * hidden * sub.neurons * 2  # FFN in and out
    )
    return sub.depth * per_layer


def flops_ratio(config: Any, level: Level | str, seq_len: int = 32) -> float:
    """``level_flops(level) / level_flops(full)`` for the same sequence length."""
    return level_flops(config, level, seq_len) / level_flops(config, FULL, seq_len)


def default_levels(config: Any, seq_len: int = 32) -> tuple[Level, ...]:
    """A menu of levels for a model of this config, ``full`` first, cheapest last.

    Full depth at widths 75 and 50, then depths about 2/3, 1/2 and 1/3 of the model's (the
    last two at width 50): for 6 layers this is
    :data:`DEFAULT_LEVELS`. The menu always has a level at <= 50% and one at <= 20% of full
    FLOPs (narrower one-layer levels are added for very shallow models).
    """
    layers = int(config.num_hidden_layers)
    two_thirds, half, third = (2 * layers + 2) // 3, (layers + 1) // 2, (layers + 2) // 3
    candidates = [
        FULL,
        Level(depth=layers, width=75),
        Level(depth=two_thirds),
        Level(depth=layers, width=50),
        Level(depth=half, width=50),
        Level(depth=third, width=50),
    ]
    for target in (0.5, 0.2):
        if min(flops_ratio(config, lv, seq_len) for lv in candidates) > target:
            width = next(
                (
                    w
                    for w in range(100, 0, -1)
                    if flops_ratio(config, f"L1-W{w}", seq_len) <= target
                ),
                1,
            )
            candidates.append(Level(depth=1, width=width))
    return _menu(config, candidates, seq_len)


def level_menu(
    config: Any, levels: Iterable[Level | str] | None, seq_len: int = 32
) -> tuple[Level, ...]:
    """``levels`` (or, for None, the model's :func:`default_levels`) as a menu: ``full``
    first, then by decreasing FLOPs."""
    return default_levels(config, seq_len) if levels is None else _menu(config, levels, seq_len)


def _menu(config: Any, levels: Iterable[Level | str], seq_len: int = 32) -> tuple[Level, ...]:
    """``levels`` as a menu: ``full`` first, no two naming the same sub-network, by cost."""
    layers = int(config.num_hidden_layers)
    seen: dict[Level, Level] = {FULL.resolve(layers): FULL}
    for level in levels:
        level = Level(level)
        seen.setdefault(level.resolve(layers), level)  # raises if deeper than the model
    rest = sorted(
        (lv for lv in seen.values() if lv != FULL),
        key=lambda lv: (-level_flops(config, lv, seq_len), str(lv)),
    )
    return (FULL, *rest)


def layer_flops(config: Any, level: Level | str, seq_len: int = 32) -> int:
    """FLOPs of one ``seq_len``-token sequence through ONE layer at ``level``'s width.

    ``level_flops(config, level, t) == depth * layer_flops(config, level, t)``: every layer of
    a level costs the same, which is what per-input early exit adds up layer by layer.
    """
    level = Level(level)
    return level_flops(config, Level(depth=1, heads=level.heads, ffn=level.ffn), seq_len)
