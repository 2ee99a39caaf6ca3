"""The server's metrics in the Prometheus text exposition format 0.0.4, written by hand.

A :class:`Registry` holds counters, gauges and histograms (each optionally labelled) behind
one lock, so the worker thread and the event loop may record into it at once, and renders
them as ``text/plain; version=0.0.4``::

    # HELP elasticir_served_total Queries answered, by the choice that served them.
    # TYPE elasticir_served_total counter
    elasticir_served_total{choice="full>ranker%20"} 12

:class:`ServeMetrics` is the set the server exports (see its attributes).
"""

from __future__ import annotations

import bisect
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = [
    "CONTENT_TYPE",
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
    "ServeMetrics",
    "resident_memory_bytes",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds, from a fast dense query (about a millisecond) to an overloaded queue.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def escape_label(value: str) -> str:
    """A label value as the format wants it: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """``3`` for whole numbers, ``0.25`` otherwise; ``+Inf``, ``-Inf``, ``NaN`` as spelt."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{escape_label(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        function: Callable[[], float | None] | None = None,
    ) -> None:
        if function is not None and labels:
            raise ValueError(f"{name}: a metric read from a function has no labels")
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self.function = function  # read at each scrape instead of the recorded values
        self.lock = threading.Lock()  # the registry shares its own
        self._values: dict[tuple[str, ...], float] = {}

    def _key(self, values: Sequence[str]) -> tuple[str, ...]:
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name}: expected labels {self.label_names}, got {values}")
        return tuple(str(v) for v in values)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        if self.function is not None:
            value = self.function()
            return [] if value is None else [f"{self.name} {format_value(float(value))}"]
        with self.lock:
            items = sorted(self._values.items())
        if not items and not self.label_names:
            items = [((), 0.0)]
        return [f"{self.name}{_labels(self.label_names, k)} {format_value(v)}" for k, v in items]


class Counter(_Metric):
    """A count that only goes up; its name ends in ``_total``. ``initial``: label values
    shown (at 0) before anything is counted."""

    kind = "counter"

    def __init__(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        *,
        initial: Sequence[Sequence[str]] = (),
        function: Callable[[], float | None] | None = None,
    ) -> None:
        super().__init__(name, help, labels, function)
        self._values = {self._key(v): 0.0 for v in initial}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter cannot go down")
        key = self._key(labels)
        with self.lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, *labels: str) -> float:
        with self.lock:
            return self._values.get(self._key(labels), 0.0)


class Gauge(_Metric):
    """A value that goes up and down: set, or read from ``function`` at each scrape."""

    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        with self.lock:
            self._values[self._key(labels)] = float(value)


class Histogram(_Metric):
    """Observations counted into cumulative ``le`` buckets (upper bounds; ``+Inf`` added),
    with their sum and count."""

    kind = "histogram"

    def __init__(
        self, name: str, help: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> None:
        super().__init__(name, help, labels)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{self.name}: buckets must be distinct finite numbers")
        self.buckets = tuple(bounds)
        # per label set: the count in each bucket (not cumulative), then +Inf's, then the sum
        self._series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        at = bisect.bisect_left(self.buckets, value)  # the first bound >= value
        with self.lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            series[at] += 1
            series[-1] += value

    def count(self, *labels: str) -> int:
        with self.lock:
            series = self._series.get(self._key(labels))
        return 0 if series is None else int(sum(series[:-1]))

    def samples(self) -> list[str]:
        with self.lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        if not items and not self.label_names:
            items = [((), [0.0] * (len(self.buckets) + 2))]
        lines = []
        for key, series in items:
            running = 0.0
            for bound, count in zip((*self.buckets, math.inf), series):
                running += count
                where = _labels(self.label_names, key, f'le="{format_bound(bound)}"')
                lines.append(f"{self.name}_bucket{where} {format_value(running)}")
            where = _labels(self.label_names, key)
            lines.append(f"{self.name}_sum{where} {format_value(series[-1])}")
            lines.append(f"{self.name}_count{where} {format_value(running)}")
        return lines


def format_bound(bound: float) -> str:
    """A bucket bound as Prometheus clients write it: ``0.005``, ``1.0``, ``+Inf``."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


M = TypeVar("M", bound=_Metric)


class Registry:
    """Metrics in the order they were added, sharing one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}

    def add(self, metric: M) -> M:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} is registered twice")
        metric.lock = self._lock
        self._metrics[metric.name] = metric
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            samples = metric.samples()
            if samples:
                lines += metric.header() + samples
        return "\n".join(lines) + "\n"


def resident_memory_bytes() -> int | None:
    """This process's resident set size from ``/proc/self/statm`` (None where there is none)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


class ServeMetrics:
    """What the server exports. Per query (one scheduler request): ``latency`` (arrival to
    answer), ``served`` and ``slo_misses``; per batch: ``service`` (by choice) and
    ``batch_size``; ``rejected`` (queries refused, by reason); ``http_requests`` (responses, by
    status code). ``queue_length``, ``switches`` and ``schedule_info`` are read from the
    schedule at each scrape (:meth:`watch`)."""

    def __init__(self, max_batch: int = 16) -> None:
        self.registry = Registry()
        add = self.registry.add
        self.latency: Histogram = add(
            Histogram(
                "elasticir_request_latency_seconds",
                "Seconds from a query's arrival to its answer (queueing and service).",
                LATENCY_BUCKETS,
            )
        )
        self.service: Histogram = add(
            Histogram(
                "elasticir_service_seconds",
                "Seconds one batch took to run, by the choice that served it.",
                LATENCY_BUCKETS,
                ("choice",),
            )
        )
        sizes = {1 << i for i in range(max_batch.bit_length()) if 1 << i <= max_batch}
        self.batch_size: Histogram = add(
            Histogram(
                "elasticir_batch_size",
                "Queries per dispatched batch.",
                sorted(sizes | {max_batch}),
            )
        )
        self.queue_length: Gauge = add(
            Gauge("elasticir_queue_length", "Queries waiting for a batch now.")
        )
        self.served: Counter = add(
            Counter(
                "elasticir_served_total",
                "Queries answered, by the choice that served them.",
                ("choice",),
            )
        )
        self.slo_misses: Counter = add(
            Counter("elasticir_slo_misses_total", "Queries answered after their deadline (late).")
        )
        self.rejected: Counter = add(
            Counter(
                "elasticir_rejected_total",
                "Queries refused with 503: queue_full (no room when they arrived) or shed "
                "(could not make their deadline even at the cheapest choice).",
                ("reason",),
                initial=[("queue_full",), ("shed",)],
            )
        )
        self.failed: Counter = add(
            Counter("elasticir_failed_total", "Queries whose batch raised an error (answered 500).")
        )
        self.http_requests: Counter = add(
            Counter(
                "elasticir_http_requests_total",
                "HTTP responses sent, by status code.",
                ("code",),
            )
        )
        self.switches: Counter = add(
            Counter(
                "elasticir_choice_switches_total",
                "Times the schedule changed choice between consecutive batches.",
            )
        )
        self.schedule_info: Gauge = add(
            Gauge(
                "elasticir_schedule_info",
                "The schedule in force (value 1): its policy, SLO and choices.",
                ("policy", "slo_ms", "max_batch", "choices"),
            )
        )
        self.slo_seconds: Gauge = add(
            Gauge("elasticir_slo_seconds", "The latency objective each query's deadline is set by.")
        )
        self.model_cpu: Counter = add(
            Counter(
                "elasticir_model_cpu_seconds_total",
                "CPU seconds the worker thread spent running batches (models and index); "
                "process_cpu_seconds_total minus this is the serving overhead (HTTP, JSON, "
                "scheduling).",
            )
        )
        self.process_cpu: Counter = add(
            Counter(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                function=time.process_time,
            )
        )
        self.resident_memory: Gauge = add(
            Gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                function=resident_memory_bytes,
            )
        )

    def watch(
        self,
        queue_length: Callable[[], float],
        switches: Callable[[], float],
        *,
        policy: str,
        slo: float,
        max_batch: int,
        choices: Sequence[str],
    ) -> None:
        """Read the schedule's live state at each scrape, and record what it is."""
        self.queue_length.function = queue_length
        self.switches.function = switches
        slo_ms = format_value(round(slo * 1000, 3))
        self.schedule_info.set(1, policy, slo_ms, str(max_batch), ",".join(choices))
        self.slo_seconds.set(slo)

    def render(self) -> str:
        return self.registry.render()
