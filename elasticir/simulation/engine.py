"""The event loop of :func:`simulate` (see the package docstring).

Events, in time order (at equal times: completions, then arrivals, then dispatches): an
arrival queues a request (or is rejected when the queue is full); a completion frees its
server and tells the scheduler the batch's service time; whenever a server is free the
scheduler is asked for a batch, at once or when its dynamic-batching wait runs out. Each
served request ends ``overhead`` seconds after its batch (the server's per-request cost outside
the model: HTTP, JSON), which the cost models do not hold; a sequence of seconds instead of
one number is a measured distribution, each answer drawing its own. ``cpu_per_request`` is
the part of that cost a server spends on its own core while batches run (parsing requests,
writing answers): each batch's service time grows by it per request, so a loaded single-core
server serves fewer requests per second than its cost models alone would say.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from elasticir.schedule.points import OperatingPoints
from elasticir.schedule.policies import Request, SchedulePolicy
from elasticir.schedule.report import RequestRecord
from elasticir.schedule.scheduler import Batch, Scheduler

__all__ = ["SimulationResult", "simulate"]


@dataclass
class SimulationResult:
    records: list[RequestRecord]
    counts: dict[str, int]
    switches: int
    busy: list[float] = field(default_factory=list)  # per server: busy seconds


def simulate(
    points: OperatingPoints,
    policy: SchedulePolicy,
    arrivals: Sequence[float] | np.ndarray,
    query_ids: Sequence[str],
    *,
    slo: float,
    servers: int = 1,
    max_batch: int = 16,
    max_wait: float = 0.002,
    max_queue: int = 1024,
    shed: bool = False,
    overhead: float | Sequence[float] = 0.0,
    cpu_per_request: float = 0.0,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Serve ``arrivals`` (sorted seconds; request ``j`` asks query ``query_ids[j % n]``) with
    ``policy`` on ``servers`` parallel servers; every request gets a record."""
    if servers < 1:
        raise ValueError(f"servers must be at least 1, got {servers}")
    outside = np.atleast_1d(np.asarray(overhead, dtype=float))
    if outside.size == 0 or not (np.all(np.isfinite(outside)) and np.all(outside >= 0)):
        raise ValueError(f"overhead must be seconds >= 0 (one number or several), got {overhead}")
    if not (math.isfinite(cpu_per_request) and cpu_per_request >= 0):
        raise ValueError(f"cpu_per_request must be a number of seconds >= 0, got {cpu_per_request}")
    if not query_ids:
        raise ValueError("simulate: no query ids to assign to the requests")
    times = np.asarray(arrivals, dtype=float)
    if times.size and np.any(np.diff(times) < 0):
        raise ValueError("simulate: arrival times must be sorted")
    scheduler = Scheduler(
        policy,
        points,
        slo,
        max_batch=max_batch,
        max_wait=max_wait,
        max_queue=max_queue,
        shed=shed,
    )
    rng = np.random.default_rng(seed)
    n, count = len(times), len(query_ids)
    records: list[RequestRecord | None] = [None] * n
    waiting_at: list[int] = [0] * n
    quality = {p.choice: p.per_query for p in points.points}
    free = servers
    busy = [0.0] * servers
    idle = list(range(servers))
    running: list[tuple[float, int, int, Batch, float]] = []  # (end, seq, server, batch, start)
    seq = 0
    next_arrival = 0
    now = 0.0
    reported = 0

    def close(request: Request, status: str, end: float | None, batch: Batch | None) -> None:
        j = request.id
        choice = None if batch is None or batch.choice is None else batch.choice
        value = None
        if choice is not None:
            value = quality[choice].get(query_ids[j % count])
        records[j] = RequestRecord(
            id=j,
            qid=query_ids[j % count],
            intended=float(times[j]),
            latency=None if end is None else end - float(times[j]),
            status=status,
            choice=None if choice is None else str(choice),
            quality=value,
            queue_length=waiting_at[j],
            batch_size=None if batch is None else len(batch.requests),
            doc_ids=[],
        )

    while True:
        arrival_at = times[next_arrival] if next_arrival < n else math.inf
        done_at = running[0][0] if running else math.inf
        wait = scheduler.wait_time(now) if free else None
        wake_at = now + wait if wait is not None else math.inf
        now = min(arrival_at, done_at, wake_at)
        if now == math.inf:
            break
        woke = wake_at <= now and done_at > now and arrival_at > now
        while running and running[0][0] <= now:
            end, _, server, batch, start = heapq.heappop(running)
            scheduler.finished(batch, end - start, end)
            busy[server] += end - start
            idle.append(server)
            free += 1
            extra = (
                outside[rng.integers(0, outside.size, len(batch.requests))]
                if outside.size > 1
                else np.full(len(batch.requests), outside[0])
            )
            for request, late_by in zip(batch.requests, extra):
                close(request, "ok", end + float(late_by), batch)
        while next_arrival < n and times[next_arrival] <= now:
            j = next_arrival
            waiting_at[j] = len(scheduler.queue)
            request = Request(j, float(times[j]), float(times[j]) + slo)
            if not scheduler.submit(request):
                close(request, "rejected", None, None)
            next_arrival += 1
        while free:
            batch = scheduler.dispatch(now, force=woke)
            woke = False
            if batch is None:
                break
            for request in batch.shed:
                close(request, "rejected", None, None)
            if not batch.requests:
                continue
            assert batch.choice is not None
            size = len(batch.requests)
            service = points[batch.choice].cost.sample(size, rng) + size * cpu_per_request
            server = idle.pop()
            free -= 1
            seq += 1
            heapq.heappush(running, (now + service, seq, server, batch, now))
        if progress is not None and next_arrival - reported >= 10_000:
            progress(next_arrival - reported)
            reported = next_arrival
    if progress is not None and n > reported:
        progress(n - reported)
    missing = [j for j, r in enumerate(records) if r is None]
    assert not missing, f"simulation lost {len(missing)} requests"
    return SimulationResult(
        [r for r in records if r is not None],
        dict(scheduler.counts),
        scheduler.switches,
        busy,
    )
