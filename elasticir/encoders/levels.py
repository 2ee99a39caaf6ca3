"""Compute levels: the one vocabulary every elastic component takes.

A level names a nested sub-network by its depth (the first ``depth`` transformer layers) and its
width (the percentage of attention heads and feed-forward neurons kept, most important first).
``Level("full")`` is the whole model. Like an ir_measures measure, a level is a small value whose
``repr`` round-trips::

    >>> Level("L4-W75")
    Level('L4-W75')
    >>> Level("L4-W75") == Level(depth=4, width=75)
    True
    >>> sorted([Level("full"), Level("L2-W50")])
    [Level('L2-W50'), Level('full')]

Which levels a given model actually offers, and what they cost, is the model's business
(see ``ElasticDenser.levels``); the value itself holds no weights and no mutable state.
"""

from __future__ import annotations

import operator
import re
from functools import total_ordering

_PATTERN = re.compile(r"^L(?P<depth>\d+)(?:-W(?P<width>\d+))?$")


@total_ordering
class Level:
    """A compute level: ``full``, ``L<depth>`` or ``L<depth>-W<width percent>``."""

    __slots__ = ("depth", "width")
    depth: int | None  # number of layers; None means every layer of the model
    width: int  # percent of heads and FFN neurons kept, 1..100

    def __init__(
        self, spec: str | Level | None = None, *, depth: int | None = None, width: int = 100
    ) -> None:
        if isinstance(spec, Level):
            depth, width = spec.depth, spec.width
        elif isinstance(spec, str):
            depth, width = _parse(spec)
        elif spec is not None:
            raise TypeError(
                f"a level is given as a string such as 'L4-W75' or 'full' (or as "
                f"Level(depth=..., width=...)), got {type(spec).__name__} {spec!r}"
            )
        depth = None if depth is None else _integer("depth", depth)
        width = _integer("width", width)
        if depth is not None and depth < 1:
            raise ValueError(f"a level's depth must be at least 1, got {depth}")
        if not 1 <= width <= 100:
            raise ValueError(f"a level's width is a percentage in 1..100, got {width}")
        if depth is None and width != 100:
            # "every layer at reduced width" has no spelling, so it could not round-trip
            raise ValueError(
                f"a level with width {width} needs an explicit depth (e.g. 'L6-W{width}')"
            )
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "width", width)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Level is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Level is immutable")

    def __reduce__(self) -> tuple[type[Level], tuple[str]]:
        # __slots__ + the immutable __setattr__ defeat pickle's default; rebuild from the string
        return (Level, (str(self),))

    @property
    def is_full(self) -> bool:
        return self.depth is None and self.width == 100

    def resolve(self, num_layers: int) -> Level:
        """The same level with ``depth`` made explicit for a model of ``num_layers`` layers."""
        depth = num_layers if self.depth is None else self.depth
        if depth > num_layers:
            raise ValueError(f"level {self} needs {depth} layers; the model has {num_layers}")
        return Level(depth=depth, width=self.width)

    def _key(self) -> tuple[float, int]:
        return (float("inf") if self.depth is None else self.depth, self.width)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = Level(other)
            except ValueError:
                return False  # not a level at all, so not this one
        if not isinstance(other, Level):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: Level | str) -> bool:
        if not isinstance(other, (Level, str)):
            return NotImplemented
        return self._key() < Level(other)._key()

    def __hash__(self) -> int:
        # The canonical string's hash: equal levels have equal strings, and a level is found
        # in a set or dict by its canonical spelling ("L4-W75" in {Level("L4-W75")}).
        return hash(str(self))

    def __str__(self) -> str:
        if self.is_full:
            return "full"
        depth = "L" if self.depth is None else f"L{self.depth}"
        return depth if self.width == 100 else f"{depth}-W{self.width}"

    def __repr__(self) -> str:
        return f"Level({str(self)!r})"


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise TypeError(f"a level's {name} is an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]  # int, numpy ints; not floats
    except TypeError:
        raise TypeError(
            f"a level's {name} is an integer, got {type(value).__name__} {value!r}"
        ) from None


def _parse(spec: str) -> tuple[int | None, int]:
    text = spec.strip()
    if text.lower() == "full":
        return None, 100
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(
            f"not a compute level: {spec!r}; expected 'full', 'L<depth>' or 'L<depth>-W<width %>' "
            "such as 'L4-W75'"
        )
    width = match.group("width")
    return int(match.group("depth")), 100 if width is None else int(width)


FULL = Level("full")
