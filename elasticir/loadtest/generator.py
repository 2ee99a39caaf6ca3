"""The load generator: requests sent at their intended times (open loop) or by C clients that
each wait for their answer (closed loop), each recorded as a :class:`RequestRecord`.

Open loop: request ``j`` is due at ``start + arrivals[j]`` and carries query
``queries[j % len(queries)]`` (the simulator's assignment); it is sent when due however many
are still in flight, and its latency runs from the time it was *due*, so a request that waited
for a free connection, or for a late generator, counts that wait (no coordinated omission).
Its timeout, too, runs from the time it was due.

The generator measures itself: the CPU time of its event-loop thread as a share of one core,
and how late it dispatched each request (``dispatch_lag``: due to the moment it was handed to
the connection pool), so a saturated generator shows in the report instead of in the server's
numbers. Ctrl-C (SIGINT) stops sending; requests in flight get up to their timeout to answer,
and the run returns what was sent, marked interrupted. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from elasticir.data.records import Query
from elasticir.loadtest.http import ConnectionPool, ProtocolError, Response, ServerAddress
from elasticir.schedule.report import RequestRecord

__all__ = ["LoadRun", "Progress", "pinned_to", "run_closed", "run_open"]

PROGRESS_WINDOW_S = 5.0  # the p95 shown while running is over answers of the last 5 s


@dataclass
class Progress:
    """Where a run stands, handed to the progress callback about twice a second."""

    elapsed: float
    sent: int
    total: int | None  # None in closed loop
    answered: int
    rejected: int
    errors: int
    p95_ms: float | None


@dataclass
class LoadRun:
    """What a run sent and got back. ``elapsed``: seconds of measured sending (the duration,
    or less when interrupted); ``levels``: closed loop's ``(concurrency, start, end)`` in
    seconds of the records' ``intended`` time; ``generator``: the generator's own numbers."""

    records: list[RequestRecord]
    elapsed: float
    interrupted: bool
    generator: dict[str, Any]
    levels: list[tuple[int, float, float]] = field(default_factory=list)


@contextlib.contextmanager
def pinned_to(cpu: int | None) -> Iterator[None]:
    """Run the calling thread (and the threads it starts) on CPU ``cpu``; restored after."""
    if cpu is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    if cpu not in previous:
        raise ValueError(f"--cpu {cpu}: this process may only run on CPUs {sorted(previous)}")
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def _ms(values: array, q: float) -> float | None:
    return float(np.percentile(np.frombuffer(values, dtype=float), q) * 1000) if values else None


class _Generator:
    """The state of one run: the pool, the prepared request bytes, records and counters."""

    def __init__(
        self,
        address: ServerAddress,
        queries: Sequence[Query],
        *,
        k: int,
        timeout: float,
        max_connections: int,
        progress: Callable[[Progress], None] | None,
        progress_every: float,
    ) -> None:
        if not queries:
            raise ValueError("the load generator needs at least one query")
        self.address, self.queries, self.timeout = address, list(queries), float(timeout)
        self.max_connections = max_connections
        # one request's bytes per query, made once: queries repeat
        self.requests = [
            address.request(
                "POST", "/search", json.dumps({"query": q.text, "id": q.query_id, "k": k}).encode()
            )
            for q in self.queries
        ]
        self.progress, self.progress_every = progress, progress_every
        self.records: list[RequestRecord] = []
        self.tasks: set[asyncio.Task] = set()
        self.dispatch_lag = array("d")
        self.sent = self.answered = self.rejected = self.errors = 0
        self.in_flight = self.max_in_flight = 0
        self.recent: deque[tuple[float, float]] = deque()  # (answered at, latency) for progress
        self.stopping = False
        self.total: int | None = None
        self.pool: ConnectionPool | None = None
        self.start = 0.0

    # -- one request -------------------------------------------------------------------------

    async def request(
        self, pool: ConnectionPool, number: int, query: int, due: float, record: bool
    ) -> None:
        """Send query ``query`` due at loop time ``due``; append its record when ``record``."""
        loop = asyncio.get_running_loop()
        self.dispatch_lag.append(loop.time() - due)
        self.sent += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        response: Response | None = None
        error: str | None = None
        try:
            remaining = max(due + self.timeout - loop.time(), 1e-3)
            response = await asyncio.wait_for(pool.send(self.requests[query]), remaining)
        except asyncio.TimeoutError:
            error = f"no answer within {self.timeout:g} s of its intended send time"
        except asyncio.CancelledError:
            error = "no answer before the run ended"
            raise
        except (OSError, asyncio.IncompleteReadError, ProtocolError) as failure:
            error = f"{type(failure).__name__}: {failure}".rstrip(": ")
        finally:
            self.in_flight -= 1
            done = loop.time()
            if record:
                self.records.append(self._record(number, query, due, done, response, error))
            else:
                self._count(response, due, done)

    def _count(self, response: Response | None, due: float, done: float) -> None:
        """Count an unrecorded (warm-up) request in the progress numbers."""
        status = 0 if response is None else response.status
        if status == 200:
            self.answered += 1
            self._note(done, done - due)
        elif status == 503:
            self.rejected += 1
        else:
            self.errors += 1

    def _record(
        self,
        number: int,
        query: int,
        due: float,
        done: float,
        response: Response | None,
        error: str | None,
    ) -> RequestRecord:
        q = self.queries[query]
        record = RequestRecord(
            id=number, qid=q.query_id, intended=due - self.start, latency=None, status="error"
        )
        record.error = error
        if response is None:
            self.errors += 1
            return record
        record.latency = done - due
        record.send_lag = response.sent - due
        if response.status == 200:
            try:
                result = response.json()["results"][0]
                record.doc_ids = [str(hit["doc_id"]) for hit in result["hits"]]
                choice = result.get("choice")
                record.choice = None if choice is None else str(choice)
                timings = result.get("timings") or {}
                record.queue_length = _int_or_none(timings.get("queue_length"))
                record.batch_size = _int_or_none(timings.get("batch_size"))
                total_ms = timings.get("total_ms")
                if isinstance(total_ms, int | float) and not isinstance(total_ms, bool):
                    record.server_latency = float(total_ms) / 1000.0
            except (ValueError, KeyError, IndexError, TypeError) as failure:
                record.error = f"HTTP 200 with an unreadable body ({type(failure).__name__})"
                self.errors += 1
                return record
            record.status = "ok"
            self.answered += 1
            self._note(done, record.latency)
            return record
        try:
            detail = response.json().get("reason") or response.json().get("error")
        except (ValueError, AttributeError):
            detail = response.body[:120].decode("utf-8", "replace")
        record.error = f"HTTP {response.status}" + (f": {detail}" if detail else "")
        if response.status == 503:
            record.status = "rejected"
            self.rejected += 1
        else:
            self.errors += 1
        return record

    def _note(self, done: float, latency: float) -> None:
        if self.progress is not None:  # kept only for the live p95
            self.recent.append((done, latency))

    def spawn(self, coroutine: Any) -> asyncio.Task:
        """Run ``coroutine`` as a task the end of the run waits for."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # -- the run -----------------------------------------------------------------------------

    async def report_progress(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.progress_every)
            self.show_progress(loop.time())

    def show_progress(self, now: float) -> None:
        if self.progress is None:
            return
        while self.recent and self.recent[0][0] < now - PROGRESS_WINDOW_S:
            self.recent.popleft()
        window = sorted(latency for _, latency in self.recent)
        p95 = window[min(len(window) - 1, int(0.95 * len(window)))] * 1000 if window else None
        self.progress(
            Progress(
                max(0.0, now - self.start),
                self.sent,
                self.total,
                self.answered,
                self.rejected,
                self.errors,
                p95,
            )
        )

    async def run(self, sending: Callable[[ConnectionPool], Any]) -> tuple[float, bool]:
        """Run ``sending(pool)`` to its end or to Ctrl-C, then wait for the requests in
        flight; ``(loop time sending stopped, interrupted)``."""
        loop = asyncio.get_running_loop()
        pool = self.pool = ConnectionPool(self.address, self.max_connections)
        sender = loop.create_task(sending(pool))
        interrupted = False

        def interrupt() -> None:
            nonlocal interrupted
            interrupted = self.stopping = True
            sender.cancel()
            loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C aborts

        try:
            loop.add_signal_handler(signal.SIGINT, interrupt)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
            pass
        ticker = loop.create_task(self.report_progress()) if self.progress else None
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            stopped = loop.time()
            self.stopping = True
            if self.tasks:
                # each request times out on its own; after Ctrl-C, wait at most one timeout
                _, pending = await asyncio.wait(
                    set(self.tasks), timeout=self.timeout + 1.0 if interrupted else None
                )
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.remove_signal_handler(signal.SIGINT)
            if ticker is not None:
                ticker.cancel()
                self.show_progress(loop.time())
            await pool.close()
        return stopped, interrupted

    def generator_stats(self, cpu_seconds: float, wall: float, cpu: int | None) -> dict:
        return {
            "cpu_seconds": cpu_seconds,
            "wall_seconds": wall,
            "cpu_share_of_one_core": cpu_seconds / wall if wall > 0 else None,
            "pinned_cpu": cpu,
            "dispatch_lag_p50_ms": _ms(self.dispatch_lag, 50),
            "dispatch_lag_p99_ms": _ms(self.dispatch_lag, 99),
            "dispatch_lag_max_ms": (max(self.dispatch_lag) * 1000 if self.dispatch_lag else None),
            "requests_sent": self.sent,
            "max_in_flight": self.max_in_flight,
            "max_connections": self.max_connections,
            "connections_opened": self.pool.opened if self.pool else 0,
            "waited_for_a_connection": self.pool.waited if self.pool else 0,
        }


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _execute(generator: _Generator, sending: Callable, cpu: int | None) -> tuple[float, bool, dict]:
    """Run ``sending`` on a fresh event loop; ``(stopped, interrupted, generator stats)``."""
    with pinned_to(cpu):
        cpu_before, wall_before = time.thread_time(), time.perf_counter()
        stopped, interrupted = asyncio.run(generator.run(sending))
        cpu_seconds = time.thread_time() - cpu_before
        wall = time.perf_counter() - wall_before
    generator.records.sort(key=lambda r: r.id)
    return stopped, interrupted, generator.generator_stats(cpu_seconds, wall, cpu)


def run_open(
    address: ServerAddress,
    queries: Sequence[Query],
    arrivals: Sequence[float] | np.ndarray,
    *,
    duration: float,
    k: int = 10,
    timeout: float = 30.0,
    max_connections: int = 256,
    warmup: Sequence[float] | np.ndarray = (),
    warmup_s: float = 0.0,
    cpu: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    progress_every: float = 0.5,
) -> LoadRun:
    """Send a request at each of ``arrivals`` (seconds from the start; request ``j`` carries
    ``queries[j % len(queries)]``). ``warmup`` arrivals, in ``[0, warmup_s)``, go first and
    are not recorded; the measured run starts ``warmup_s`` after them."""
    generator = _Generator(
        address,
        queries,
        k=k,
        timeout=timeout,
        max_connections=max_connections,
        progress=progress,
        progress_every=progress_every,
    )
    measured = np.asarray(arrivals, dtype=float)
    generator.total = len(measured) + len(warmup)
    schedule = [(float(t), i, False) for i, t in enumerate(np.asarray(warmup, dtype=float))]
    schedule += [(warmup_s + float(t), j, True) for j, t in enumerate(measured)]
    n = len(generator.queries)

    async def sending(pool: ConnectionPool) -> None:
        loop = asyncio.get_running_loop()
        origin = loop.time() + 0.01  # a moment to set up before the first is due
        generator.start = origin + warmup_s
        for offset, j, record in schedule:
            due = origin + offset
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            generator.spawn(generator.request(pool, j, j % n, due, record))

    stopped, interrupted, stats = _execute(generator, sending, cpu)
    elapsed = min(duration, max(0.0, stopped - generator.start)) if interrupted else duration
    return LoadRun(generator.records, elapsed, interrupted, stats)


def run_closed(
    address: ServerAddress,
    queries: Sequence[Query],
    concurrencies: Sequence[int],
    *,
    duration: float,
    k: int = 10,
    timeout: float = 30.0,
    max_connections: int = 256,
    warmup_s: float = 0.0,
    cpu: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    progress_every: float = 0.5,
) -> LoadRun:
    """For each concurrency C in turn: C clients, each sending the next query as soon as its
    previous answer is back, for ``warmup_s`` (not recorded) and then ``duration`` seconds.
    A record's ``intended`` time is when its client sent it."""
    if any(c > max_connections for c in concurrencies):
        raise ValueError(
            f"closed loop: concurrency {max(concurrencies)} needs as many connections; "
            f"--max-connections is {max_connections}"
        )
    generator = _Generator(
        address,
        queries,
        k=k,
        timeout=timeout,
        max_connections=max_connections,
        progress=progress,
        progress_every=progress_every,
    )
    n = len(generator.queries)
    levels: list[tuple[int, float, float]] = []
    numbers = itertools.count()

    async def sending(pool: ConnectionPool) -> None:
        loop = asyncio.get_running_loop()
        generator.start = loop.time()
        counter = itertools.count()
        for concurrency in concurrencies:
            measure_from = loop.time() + warmup_s
            end = measure_from + duration

            async def client(measure_from: float = measure_from, end: float = end) -> None:
                while not generator.stopping and loop.time() < end:
                    due = loop.time()
                    j = next(counter)
                    number = next(numbers) if due >= measure_from else -1
                    await generator.request(pool, number, j % n, due, number >= 0)

            clients = [generator.spawn(client()) for _ in range(concurrency)]
            try:
                await asyncio.wait(clients)  # a cancel (Ctrl-C) leaves the clients to finish
            finally:  # the level under way at Ctrl-C counts up to then
                stop = max(measure_from, min(end, loop.time()))
                levels.append((concurrency, measure_from - generator.start, stop - generator.start))

    _, interrupted, stats = _execute(generator, sending, cpu)
    elapsed = sum(end - start for _, start, end in levels)
    return LoadRun(generator.records, elapsed, interrupted, stats, levels)
