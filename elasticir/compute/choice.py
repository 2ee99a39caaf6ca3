"""A compute choice for one call of a pipeline: what each of its stages spends.

The same pipeline serves every tradeoff its elastic stages offer; what a call spends is an
argument of the call, never a setting of the stages (so two threads may run one pipeline at
two choices, and a scheduler can pick the choice batch by batch). A choice is a small value
that prints and parses like a level:

    Compute.parse("L4")                          every elastic stage at L4
    Compute.parse("dense@L2-W50;ranker@margin:0.9")  per stage, by name
    Compute.parse("L6-W50;ranker@full")          every stage at L6-W50 but the ranker

Each entry is a level (``L4``, ``L6-W50``) or, for a multi-exit stage, an exit policy
(``margin:0.9``, ``cutoff:30``; see :mod:`elasticir.compute.exits`). The bare entry applies
to the stages that have compute levels and is ignored by the others (BM25, a run file,
DiPair); a stage named explicitly must have them (``full`` is always accepted).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from elasticir.compute.levels import Level

__all__ = ["Compute"]

_STAGE_SEP = ";"
_NAME_SEP = "@"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.#-]*$")


def _spec(value: object, where: str) -> str:
    text = str(value).strip()
    if not text or _STAGE_SEP in text or _NAME_SEP in text or any(c.isspace() for c in text):
        raise ValueError(f"{where}: expected a level or exit policy such as L4 or margin:0.9")
    return text


def _is_full(spec: str) -> bool:
    try:
        return Level(spec) == Level("full")
    except ValueError:
        return False


@dataclass(frozen=True)
class Compute:
    """``every``: the level (or policy) of every elastic stage not named; ``stages``: per
    stage name, in the order given. ``str(c)`` parses back to ``c``."""

    every: str | None = None
    stages: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.every is not None:
            object.__setattr__(self, "every", _spec(self.every, "compute"))
        seen: set[str] = set()
        checked = []
        for name, spec in self.stages:
            if not _NAME.match(str(name)):
                raise ValueError(f"compute: {name!r} is not a stage name")
            if name in seen:
                raise ValueError(f"compute: stage {name!r} is named twice")
            seen.add(name)
            checked.append((str(name), _spec(spec, f"compute for stage {name!r}")))
        object.__setattr__(self, "stages", tuple(checked))

    @classmethod
    def parse(cls, text: str) -> Compute:
        every: str | None = None
        stages: list[tuple[str, str]] = []
        for part in (p.strip() for p in str(text).split(_STAGE_SEP)):
            if not part:
                continue
            if _NAME_SEP in part:
                name, _, spec = part.partition(_NAME_SEP)
                stages.append((name.strip(), spec.strip()))
            elif every is None:
                every = part
            else:
                raise ValueError(f"compute {text!r}: more than one entry without a stage name")
        return cls(every, tuple(stages))

    @classmethod
    def of(cls, value: Compute | str | Level | Mapping[str, object] | None) -> Compute:
        """Any of the accepted forms as a :class:`Compute` (None: every stage's default)."""
        if value is None:
            return cls()
        if isinstance(value, Compute):
            return value
        if isinstance(value, Mapping):
            return cls(None, tuple((str(k), str(v)) for k, v in value.items()))
        if isinstance(value, Level):
            return cls(str(value))
        spec = getattr(value, "spec", None)  # an exit policy value
        return cls.parse(spec if isinstance(spec, str) else str(value))

    def for_stage(self, name: str, elastic: bool) -> str | None:
        """The level or policy of the stage called ``name`` (None: its own default).

        Raises ``ValueError`` when the stage is named but has no compute levels.
        """
        for stage, spec in self.stages:
            if stage == name:
                if not elastic and not _is_full(spec):
                    raise ValueError(
                        f"stage {name!r} has no compute levels: only 'full' applies to it"
                    )
                return spec if elastic else None
        return self.every if elastic else None

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.stages)

    def __str__(self) -> str:
        parts = [] if self.every is None else [self.every]
        parts += [f"{name}{_NAME_SEP}{spec}" for name, spec in self.stages]
        return _STAGE_SEP.join(parts)  # "" for the default choice; parse("") gives it back

    def __bool__(self) -> bool:
        return self.every is not None or bool(self.stages)
