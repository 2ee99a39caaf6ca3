"""Request traces: when requests arrive, for the load generator and the simulator alike.

A trace is a rate shape over a reference rate ``R`` (requests/s) and a duration; arrivals are a
seeded non-homogeneous Poisson process over it (thinning), so the same spec, rate, duration and
seed give the same arrivals in ``elasticir loadtest`` and ``elasticir simulate``::

    poisson                              R throughout
    step[:low=0.5,high=2,at=0.5]         R*low, then R*high from at*duration on
    burst[:low=0.5,high=4,on=30,every=120]
                                         R*low, with bursts of R*high lasting `on` s that start
                                         every `every` s (the first after every/2)
    diurnal[:low=0.25,high=2,period=600] R*low..R*high, a sine of that period (starts low)
    FILE                                 one arrival time (s from the start) per line, or a
                                         JSON list; R and the duration cut it, never stretch it
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from elasticir.data.errors import InputFormatError

__all__ = ["Trace", "parse_trace"]

_SHAPES: dict[str, dict[str, float]] = {
    "poisson": {},
    "step": {"low": 0.5, "high": 2.0, "at": 0.5},
    "burst": {"low": 0.5, "high": 4.0, "on": 30.0, "every": 120.0},
    "diurnal": {"low": 0.25, "high": 2.0, "period": 600.0},
}


@dataclass(frozen=True)
class Trace:
    """A rate shape (``kind`` with ``params``) or a file of arrival times (``path``)."""

    kind: str
    params: tuple[tuple[str, float], ...] = ()
    path: Path | None = field(default=None)

    def param(self, name: str) -> float:
        return dict(self.params)[name]

    def rate_at(self, t: np.ndarray | float, rate: float, duration: float) -> np.ndarray:
        """The offered rate (requests/s) at times ``t`` (a file trace: its own rate, binned)."""
        t = np.asarray(t, dtype=float)
        p = dict(self.params)
        if self.kind == "poisson":
            return np.full_like(t, rate)
        if self.kind == "step":
            return np.where(t < p["at"] * duration, rate * p["low"], rate * p["high"])
        if self.kind == "burst":
            phase = (t - p["every"] / 2) % p["every"]
            active = (t >= p["every"] / 2) & (phase < p["on"])
            return np.where(active, rate * p["high"], rate * p["low"])
        if self.kind == "diurnal":
            wave = (1 - np.cos(2 * math.pi * t / p["period"])) / 2
            return rate * (p["low"] + (p["high"] - p["low"]) * wave)
        times = self.arrivals(rate, duration)
        edges = np.arange(0, max(duration, 1.0) + 1.0, 1.0)
        counts, _ = np.histogram(times, edges)
        index = np.clip(t.astype(int), 0, len(counts) - 1)
        return counts[index].astype(float)

    def peak(self, rate: float) -> float:
        p = dict(self.params)
        return rate * max(p.get("high", 1.0), p.get("low", 1.0))

    def arrivals(self, rate: float, duration: float, seed: int = 0) -> np.ndarray:
        """Sorted arrival times in [0, duration) seconds."""
        if duration <= 0:
            raise ValueError(f"a trace needs a positive duration, got {duration} s")
        if self.path is not None:
            return self._file_arrivals(duration)
        if rate <= 0:
            raise ValueError(f"a trace needs a positive rate, got {rate} requests/s")
        rng = np.random.default_rng(seed)
        peak = self.peak(rate)
        # thinning: a Poisson process at the peak rate, each arrival kept with rate(t)/peak
        expected = peak * duration
        count = int(rng.poisson(expected))
        times = np.sort(rng.uniform(0.0, duration, size=count))
        if self.kind == "poisson":
            return times
        keep = rng.uniform(0.0, 1.0, size=count) < self.rate_at(times, rate, duration) / peak
        return times[keep]

    def _file_arrivals(self, duration: float) -> np.ndarray:
        assert self.path is not None
        text = self.path.read_text(encoding="utf-8")
        values: list[float] = []
        if text.lstrip().startswith("["):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as error:
                raise InputFormatError(self.path, error.lineno, "a JSON list of seconds") from None
            for i, value in enumerate(data):
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise InputFormatError(self.path, None, f"item {i}: seconds >= 0", repr(value))
                values.append(float(value))
        else:
            for number, line in enumerate(text.splitlines(), start=1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    value = float(line.split()[0])
                except ValueError:
                    raise InputFormatError(
                        self.path, number, "an arrival time in seconds", repr(line[:40])
                    ) from None
                if not math.isfinite(value) or value < 0:
                    raise InputFormatError(self.path, number, "seconds >= 0", repr(line[:40]))
                values.append(value)
        times = np.sort(np.asarray(values, dtype=float))
        return times[times < duration]

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        defaults = _SHAPES[self.kind]
        changed = [f"{k}={v:g}" for k, v in self.params if defaults.get(k) != v]
        return self.kind + (":" + ",".join(changed) if changed else "")


def parse_trace(spec: str | os.PathLike[str]) -> Trace:
    """A trace from its spec (see the module docstring); an existing file is a file trace."""
    text = str(spec).strip()
    kind, _, rest = text.partition(":")
    if kind in _SHAPES:
        params = dict(_SHAPES[kind])
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key not in params:
                raise ValueError(
                    f"trace {text!r}: {item!r} is not one of "
                    + (", ".join(f"{k}=..." for k in params) or f"{kind}'s (it takes none)")
                )
            try:
                params[key] = float(value)
            except ValueError:
                raise ValueError(f"trace {text!r}: {key} must be a number, got {value!r}") from None
        for key, value in params.items():
            if not math.isfinite(value) or value < 0 or (value == 0 and key != "low"):
                raise ValueError(f"trace {text!r}: {key} must be positive, got {value:g}")
        if kind == "step" and not 0 <= params["at"] <= 1:
            raise ValueError(f"trace {text!r}: at is a fraction of the duration in [0, 1]")
        if kind == "burst" and params["on"] > params["every"]:
            raise ValueError(f"trace {text!r}: a burst (on) cannot outlast its period (every)")
        return Trace(kind, tuple(params.items()))
    path = Path(text)
    if path.is_file():
        return Trace("file", (), path)
    raise ValueError(
        f"unknown trace {text!r}: expected poisson, step, burst, diurnal (with :key=value "
        "options) or an existing file of arrival times"
    )
