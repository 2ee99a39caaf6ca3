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

Heads and FFN neurons may also be cut by different amounts: ``L6-H100-F23`` keeps every
attention head and 23% of the FFN neurons of all six layers (``heads`` and ``ffn`` percent;
``width`` is their common value, None when they differ). ``L6-H50-F50`` is ``L6-W50``::

    >>> Level("L6-F23")
    Level('L6-H100-F23')
    >>> Level("L6-H50-F50")
    Level('L6-W50')

Which levels a given model actually offers, and what they cost, is the model's business
(see ``ElasticDenser.levels``); the value itself holds no weights and no mutable state.
"""

from __future__ import annotations

import operator
import re
from functools import total_ordering

_PATTERN = re.compile(
    r"^L(?P<depth>\d+)(?:-W(?P<width>\d+)|(?:-H(?P<heads>\d+))?(?:-F(?P<ffn>\d+))?)$"
)


@total_ordering
class Level:
    """A compute level: ``full``, ``L<depth>``, ``L<depth>-W<width %>`` or
    ``L<depth>-H<heads %>-F<FFN neurons %>``."""

    __slots__ = ("depth", "heads", "ffn")
    depth: int | None  # number of layers; None means every layer of the model
    heads: int  # percent of attention heads kept, 1..100
    ffn: int  # percent of FFN neurons kept, 1..100

    def __init__(
        self,
        spec: str | Level | None = None,
        *,
        depth: int | None = None,
        width: int | None = None,
        heads: int | None = None,
        ffn: int | None = None,
    ) -> None:
        if spec is not None and (
            depth is not None or width is not None or heads is not None or ffn is not None
        ):
            raise TypeError("give a level either as a spec or as keywords, not both")
        if width is not None and (heads is not None or ffn is not None):
            raise TypeError("a level's width sets heads and ffn both; give width or heads/ffn")
        if isinstance(spec, Level):
            depth, heads, ffn = spec.depth, spec.heads, spec.ffn
        elif isinstance(spec, str):
            depth, heads, ffn = _parse(spec)
        elif spec is not None:
            raise TypeError(
                f"a level is given as a string such as 'L4-W75' or 'full' (or as "
                f"Level(depth=..., width=...)), got {type(spec).__name__} {spec!r}"
            )
        elif width is not None:
            heads = ffn = width
        depth = None if depth is None else _integer("depth", depth)
        heads = 100 if heads is None else _integer("heads", heads)
        ffn = 100 if ffn is None else _integer("ffn", ffn)
        if depth is not None and depth < 1:
            raise ValueError(f"a level's depth must be at least 1, got {depth}")
        for name, value in (("width" if heads == ffn else "heads", heads), ("ffn", ffn)):
            if not 1 <= value <= 100:
                raise ValueError(f"a level's {name} is a percentage in 1..100, got {value}")
        if depth is None and (heads, ffn) != (100, 100):
            # "every layer at reduced width" has no spelling, so it could not round-trip
            shape = f"W{heads}" if heads == ffn else f"H{heads}-F{ffn}"
            raise ValueError(
                f"a level with width below 100 needs an explicit depth (e.g. 'L6-{shape}')"
            )
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "heads", heads)
        object.__setattr__(self, "ffn", ffn)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Level is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Level is immutable")

    def __reduce__(self) -> tuple[type[Level], tuple[str]]:
        # __slots__ + the immutable __setattr__ defeat pickle's default; rebuild from the string
        return (Level, (str(self),))

    @property
    def width(self) -> int | None:
        """The percent of heads and of FFN neurons kept when both are cut alike, else None."""
        return self.heads if self.heads == self.ffn else None

    @property
    def is_full(self) -> bool:
        return self.depth is None and self.heads == self.ffn == 100

    def resolve(self, num_layers: int) -> Level:
        """The same level with ``depth`` made explicit for a model of ``num_layers`` layers."""
        depth = num_layers if self.depth is None else self.depth
        if depth > num_layers:
            raise ValueError(f"level {self} needs {depth} layers; the model has {num_layers}")
        return Level(depth=depth, heads=self.heads, ffn=self.ffn)

    def _key(self) -> tuple[float, int, int]:
        return (float("inf") if self.depth is None else self.depth, self.heads, self.ffn)

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
        if self.heads != self.ffn:
            return f"{depth}-H{self.heads}-F{self.ffn}"
        return depth if self.heads == 100 else f"{depth}-W{self.heads}"

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


def _parse(spec: str) -> tuple[int | None, int, int]:
    text = spec.strip()
    if text.lower() == "full":
        return None, 100, 100
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(
            f"not a compute level: {spec!r}; expected 'full', 'L<depth>', 'L<depth>-W<width %>' "
            "such as 'L4-W75', or 'L<depth>-H<heads %>-F<FFN %>' such as 'L6-H100-F25'"
        )
    width, heads, ffn = (match.group(name) for name in ("width", "heads", "ffn"))
    if width is not None:
        return int(match.group("depth")), int(width), int(width)
    return (
        int(match.group("depth")),
        100 if heads is None else int(heads),
        100 if ffn is None else int(ffn),
    )


FULL = Level("full")
