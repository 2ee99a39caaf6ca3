"""Operating points: what each serving choice costs on this machine and what it is worth.

``elasticir profile`` measures them (:mod:`elasticir.schedule.profile`); the schedule
policies, the server and the simulator read them. One JSON file holds::

    {"format": "elasticir-points", "version": 1,
     "metric": "ndcg@10",                 the quality every policy compares
     "pipeline": {...}, "dev": {...},     what was measured, on which judged queries
     "machine": {...}, "date": "...",
     "points": [{"choice": "full>ranker%20",
                 "cost": {"fixed": s, "per_query": s, "ratios": [...], "samples": [[b, s], ...]},
                 "quality": {"ndcg@10": ..., ...}, "per_query": {qid: value},
                 "frontier": true}, ...]}

A :class:`CostModel` predicts a batch's service time as ``fixed + per_query * batch`` (least
squares over the measured batches); ``ratios`` are measured/predicted of every timed call, the
spread the simulator samples from. The Pareto frontier is the set of points no other point
beats at every batch size and on quality (see :func:`pareto`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from elasticir.data.errors import InputFormatError
from elasticir.data.manifest import read_json_object, write_json
from elasticir.schedule.choices import Choice

__all__ = ["CostModel", "CostTracker", "OperatingPoint", "OperatingPoints", "pareto"]

FORMAT = "elasticir-points"
VERSION = 1
_MAX_RATIOS = 400  # spread samples kept per point


@dataclass(frozen=True)
class CostModel:
    """Service seconds of a batch of ``b`` queries: ``fixed + per_query * b``, times a
    measured ratio when sampled."""

    fixed: float
    per_query: float
    ratios: tuple[float, ...] = (1.0,)
    samples: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        for name in ("fixed", "per_query"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"cost model: {name} must be a finite number >= 0, got {value}")
        if self.fixed + self.per_query <= 0:
            raise ValueError("cost model: a batch of one must take some time")
        ratios = tuple(float(r) for r in self.ratios) or (1.0,)
        if any(not math.isfinite(r) or r <= 0 for r in ratios):
            raise ValueError("cost model: ratios must be positive numbers")
        object.__setattr__(self, "ratios", tuple(sorted(ratios)))

    @classmethod
    def fit(cls, samples: Iterable[tuple[int, float]]) -> CostModel:
        """Least squares over ``(batch size, seconds)`` measurements (at least one size; with
        one size the time is all per query)."""
        points = [(int(b), float(s)) for b, s in samples]
        if not points:
            raise ValueError("cost model: no measurements")
        sizes = np.array([b for b, _ in points], dtype=float)
        seconds = np.array([s for _, s in points], dtype=float)
        if len(set(sizes.tolist())) == 1:
            fixed, per = 0.0, float(np.median(seconds) / sizes[0])
        else:
            per, fixed = np.polyfit(sizes, seconds, 1)
            if fixed < 0:  # a line through the origin instead
                fixed, per = 0.0, float((sizes @ seconds) / (sizes @ sizes))
            if per < 0:  # the time does not grow with the batch: a constant
                fixed, per = float(np.median(seconds)), 0.0
        model = cls(float(fixed), float(per))
        ratios = [s / model.predict(b) for b, s in points]
        if len(ratios) > _MAX_RATIOS:
            ratios = np.quantile(ratios, np.linspace(0, 1, _MAX_RATIOS)).tolist()
        return cls(model.fixed, model.per_query, tuple(ratios), tuple(points[:_MAX_RATIOS]))

    def predict(self, batch: int) -> float:
        return self.fixed + self.per_query * max(1, batch)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of measured/predicted (1.0 without measurements)."""
        return float(np.quantile(self.ratios, q))

    def sample(self, batch: int, rng: np.random.Generator) -> float:
        """A service time drawn with the measured spread."""
        return self.predict(batch) * self.ratios[int(rng.integers(len(self.ratios)))]

    def to_json(self) -> dict[str, Any]:
        return {
            "fixed": self.fixed,
            "per_query": self.per_query,
            "ratios": [round(r, 5) for r in self.ratios],
            "samples": [[b, round(s, 6)] for b, s in self.samples],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> CostModel:
        return cls(
            float(value["fixed"]),
            float(value["per_query"]),
            tuple(float(r) for r in value.get("ratios", ()) or (1.0,)),
            tuple((int(b), float(s)) for b, s in value.get("samples", ())),
        )


@dataclass(frozen=True)
class OperatingPoint:
    choice: Choice
    cost: CostModel
    quality: Mapping[str, float]
    per_query: Mapping[str, float] = field(default_factory=dict)
    frontier: bool = False

    def value(self, metric: str) -> float:
        return float(self.quality[metric])


def pareto(points: Sequence[OperatingPoint], metric: str) -> list[OperatingPoint]:
    """The points no other point beats at every batch size and on ``metric``, in increasing
    quality.

    Costs are lines in the batch size, so one point costs no more than another at every size
    when it does at a batch of one (``fixed + per_query``) and per added query
    (``per_query``). A point is dominated when another is no dearer both ways and no worse,
    and better in at least one; a choice that is dearer alone but cheaper in full batches
    stays (under load it is the cheaper one). Along the list quality strictly increases; the
    first point is the one a policy falls back on: the cheapest per query among the worst
    (ties: the cheaper alone).
    """

    def key(p: OperatingPoint) -> tuple[float, float, float]:
        return (p.cost.predict(1), p.cost.per_query, p.value(metric))

    def beats(a: OperatingPoint, b: OperatingPoint) -> bool:
        (a1, ap, aq), (b1, bp, bq) = key(a), key(b)
        return a1 <= b1 and ap <= bp and aq >= bq and (a1, ap, aq) != (b1, bp, bq)

    kept = [p for p in points if not any(beats(q, p) for q in points if q is not p)]
    kept.sort(key=lambda p: (p.value(metric), p.cost.per_query, p.cost.predict(1), str(p.choice)))
    frontier: list[OperatingPoint] = []
    for point in kept:  # equal quality: keep the first (cheapest per query) only
        if not frontier or point.value(metric) > frontier[-1].value(metric):
            frontier.append(point)
    return frontier


class OperatingPoints:
    """The profiled choices of one pipeline, with their frontier (:attr:`frontier`, cheapest
    first) and what they were measured on."""

    def __init__(
        self,
        points: Sequence[OperatingPoint],
        metric: str,
        *,
        pipeline: Mapping[str, Any] | None = None,
        dev: Mapping[str, Any] | None = None,
        machine: Mapping[str, Any] | None = None,
        date: str | None = None,
    ) -> None:
        if not points:
            raise ValueError("operating points: none given")
        seen: set[Choice] = set()
        for point in points:
            if point.choice in seen:
                raise ValueError(f"operating points: {point.choice} appears twice")
            seen.add(point.choice)
            if metric not in point.quality:
                raise ValueError(f"operating points: {point.choice} has no {metric} value")
        self.metric = metric
        self.pipeline = dict(pipeline or {})
        self.dev = dict(dev or {})
        self.machine = dict(machine or {})
        self.date = date
        on = {p.choice for p in pareto(points, metric)}
        self.points = [
            OperatingPoint(p.choice, p.cost, dict(p.quality), dict(p.per_query), p.choice in on)
            for p in points
        ]
        self.frontier = [p for p in pareto(self.points, metric)]
        self._by_choice = {p.choice: p for p in self.points}

    def __getitem__(self, choice: Choice | str) -> OperatingPoint:
        key = choice if isinstance(choice, Choice) else Choice.parse(choice)
        try:
            return self._by_choice[key]
        except KeyError:
            raise KeyError(
                f"no operating point for {key}; profiled: "
                + ", ".join(str(p.choice) for p in self.points)
            ) from None

    def __contains__(self, choice: object) -> bool:
        try:
            key = choice if isinstance(choice, Choice) else Choice.parse(str(choice))
        except ValueError:
            return False
        return key in self._by_choice

    def __len__(self) -> int:
        return len(self.points)

    def subset(self, choices: Iterable[Choice | str]) -> OperatingPoints:
        """The same file restricted to ``choices`` (its frontier recomputed)."""
        wanted = [self[c] for c in choices]
        return OperatingPoints(
            wanted,
            self.metric,
            pipeline=self.pipeline,
            dev=self.dev,
            machine=self.machine,
            date=self.date,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "metric": self.metric,
            "pipeline": self.pipeline,
            "dev": self.dev,
            "machine": self.machine,
            "date": self.date,
            "points": [
                {
                    "choice": str(p.choice),
                    "cost": p.cost.to_json(),
                    "quality": {k: round(float(v), 6) for k, v in p.quality.items()},
                    "per_query": {k: round(float(v), 6) for k, v in sorted(p.per_query.items())},
                    "frontier": p.frontier,
                }
                for p in self.points
            ],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> OperatingPoints:
        """Read a points file; a bad one raises ``InputFormatError`` naming what is wrong."""
        what = "an operating points file (elasticir profile)"
        data = read_json_object(path, {"format": str, "metric": str, "points": list}, what=what)
        if data["format"] != FORMAT:
            raise InputFormatError(path, None, f'"format": "{FORMAT}"', repr(data["format"]))
        if data.get("version", VERSION) != VERSION:
            raise InputFormatError(path, None, f'"version": {VERSION}', repr(data["version"]))
        points = []
        for i, entry in enumerate(data["points"]):
            where = f"points[{i}]"
            try:
                points.append(
                    OperatingPoint(
                        Choice.parse(entry["choice"]),
                        CostModel.from_json(entry["cost"]),
                        {str(k): float(v) for k, v in entry["quality"].items()},
                        {str(k): float(v) for k, v in entry.get("per_query", {}).items()},
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                detail = f"missing {error}" if isinstance(error, KeyError) else str(error)
                raise InputFormatError(
                    path, None, f"{where}: choice, cost and quality", detail
                ) from None
        try:
            return cls(
                points,
                data["metric"],
                pipeline=data.get("pipeline"),
                dev=data.get("dev"),
                machine=data.get("machine"),
                date=data.get("date"),
            )
        except ValueError as error:
            raise InputFormatError(path, None, what, str(error)) from None


class CostTracker:
    """Predicted service times corrected online: per choice, an exponentially weighted mean of
    log(measured / predicted) over the batches it served (``alpha`` per observation), so a
    machine busier (or quieter) than at profiling shifts every prediction after a few
    batches. ``safety`` is the quantile of the measured spread a cautious prediction uses."""

    def __init__(self, points: OperatingPoints, alpha: float = 0.2, safety: float = 0.9) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.points, self.alpha = points, alpha
        self._log: dict[Choice, float] = {}
        self._global = 0.0  # the correction of a choice that has not run yet
        self._safety = {p.choice: max(1.0, p.cost.quantile(safety)) for p in points.points}

    def correction(self, choice: Choice) -> float:
        return math.exp(self._log.get(choice, self._global))

    def predict(self, choice: Choice, batch: int, cautious: bool = False) -> float:
        point = self.points[choice]
        seconds = point.cost.predict(batch) * self.correction(choice)
        return seconds * self._safety[choice] if cautious else seconds

    def observe(self, choice: Choice, batch: int, seconds: float) -> None:
        if seconds <= 0 or choice not in self.points:
            return
        error = math.log(seconds / self.points[choice].cost.predict(batch))
        old = self._log.get(choice, self._global)
        self._log[choice] = old + self.alpha * (error - old)
        self._global += self.alpha * (error - self._global)
