"""A serving choice: the compute one batch of a search pipeline spends.

A choice names the query level of the dense first stage and, optionally, one reranking stage
over the top ``depth`` candidates with its own compute (a ranker level or exit policy). It
prints and parses like a level, in the notation of the pipeline's ``%`` and ``>>``::

    L4                              dense retrieval, queries encoded at L4
    full>dipair%50                  dense at full, DiPair reranks the top 50
    full>ranker%20                  ElasticRanker at full over the top 20
    L6-W50>ranker%20@calibrated:rank   the same under its shipped calibrated policy
    full>ranker%20@L3               the ranker's L3 exit for every pair

The value holds no model; :mod:`elasticir.schedule.executor` runs a batch at a choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from elasticir.compute.levels import Level

__all__ = ["RERANK_KINDS", "Choice"]

RERANK_KINDS = ("dipair", "ranker")
_RERANK = re.compile(r"^(?P<kind>[a-z]+)%(?P<depth>\d+)(?:@(?P<compute>\S+))?$")


@dataclass(frozen=True)
class Choice:
    """``level``: the query level; ``rerank``: ``dipair``, ``ranker`` or None; ``depth``: how
    many candidates it reranks; ``compute``: the ranker's level or exit policy (None: full)."""

    level: str = "full"
    rerank: str | None = None
    depth: int = 0
    compute: str | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "level", str(Level(self.level)))
        except ValueError as error:
            raise ValueError(f"choice: bad query level {self.level!r} ({error})") from None
        if self.rerank is None:
            if self.depth or self.compute:
                raise ValueError("choice: a depth or rerank compute needs a rerank stage")
            return
        if self.rerank not in RERANK_KINDS:
            raise ValueError(
                f"choice: unknown rerank stage {self.rerank!r}; expected one of "
                f"{', '.join(RERANK_KINDS)}"
            )
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"choice: rerank depth must be a positive integer, got {self.depth}")
        if self.compute is not None:
            if self.rerank != "ranker":
                raise ValueError(f"choice: {self.rerank} has no compute levels or policies")
            text = str(self.compute).strip()
            if not text or any(c.isspace() for c in text) or ">" in text:
                raise ValueError(f"choice: bad ranker compute {self.compute!r}")
            object.__setattr__(self, "compute", None if text == "full" else text)

    @classmethod
    def parse(cls, text: str) -> Choice:
        """``"L4"``, ``"full>dipair%50"``, ``"full>ranker%20@calibrated:rank"``."""
        spec = str(text).strip()
        level, sep, rest = spec.partition(">")
        if not sep:
            return cls(level.strip() or "full")
        match = _RERANK.match(rest.strip())
        if match is None:
            raise ValueError(
                f"choice {spec!r}: expected LEVEL or LEVEL>KIND%DEPTH[@COMPUTE], e.g. "
                "L4 or full>ranker%20@calibrated:rank"
            )
        return cls(
            level.strip() or "full",
            match["kind"],
            int(match["depth"]),
            match["compute"],
        )

    @property
    def reranks(self) -> bool:
        return self.rerank is not None

    def __str__(self) -> str:
        if self.rerank is None:
            return self.level
        text = f"{self.level}>{self.rerank}%{self.depth}"
        return text + (f"@{self.compute}" if self.compute else "")
