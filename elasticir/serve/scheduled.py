"""The elastic schedule as a Python object: a worker thread that serves queued queries in
batches, each at the choice the schedule policy picks.

    >>> executor = PipelineExecutor("indexes/nq-open", rerank=("ranker",))
    >>> with ScheduledPipeline(executor, OperatingPoints.load("points.json"), "deadline",
    ...                        slo=0.05) as pipeline:
    ...     answers = pipeline.search(["who wrote hamlet", "capital of peru"], k=10)
    >>> answers[0].hits[0].doc_id, answers[0].choice, answers[0].late

Each query is one :class:`~elasticir.schedule.policies.Request` of a
:class:`~elasticir.schedule.scheduler.Scheduler` (deadline: arrival + SLO, on
``time.monotonic()``). One worker thread waits on the scheduler (dynamic batching: at
``max_batch`` waiting or when the oldest has waited ``max_wait``), runs the batch on the
executor and hands every query its :class:`Answer`. :meth:`ScheduledPipeline.search` (from
any thread) and :meth:`ScheduledPipeline.asearch` (from an event loop) go through the same
queue; the HTTP server (:mod:`elasticir.serve.app`) is built on the latter. A query that
finds the queue full, or that the scheduler sheds, raises :class:`Refused`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from elasticir.data.records import Query
from elasticir.schedule.choices import Choice
from elasticir.schedule.executor import PipelineExecutor
from elasticir.schedule.points import OperatingPoints
from elasticir.schedule.policies import Request, SchedulePolicy, StaticPolicy, parse_schedule
from elasticir.schedule.scheduler import Batch, Scheduler
from elasticir.serve.metrics import ServeMetrics

__all__ = ["Answer", "Hit", "Refused", "ScheduledPipeline", "default_slo"]

QUEUE_FULL, SHED, STOPPING = "queue full", "shed", "stopping"


@dataclass(frozen=True)
class Hit:
    doc_id: str
    score: float
    rank: int  # 1 for the best


@dataclass(frozen=True)
class Answer:
    """One query's ranking and how it was served. Seconds on the monotonic clock:
    ``queue_seconds`` from arrival to its batch's start, ``service_seconds`` the batch's run,
    ``total_seconds`` from arrival to the answer; ``queue_length``: the queries waiting when
    it arrived; ``late``: answered after its deadline (arrival + SLO)."""

    hits: tuple[Hit, ...]
    choice: Choice
    late: bool
    queue_seconds: float
    service_seconds: float
    total_seconds: float
    batch_size: int
    queue_length: int


class Refused(RuntimeError):
    """A query the schedule would not serve: ``reason`` is ``"queue full"``, ``"shed"`` (it
    could not make its deadline even at the cheapest choice) or ``"stopping"``;
    ``retry_after``: whole seconds after which a retry may find room."""

    def __init__(self, reason: str, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.reason, self.retry_after = reason, max(1, int(retry_after))


class SearchFailed(RuntimeError):
    """The batch a query was in raised an error (the worker goes on serving)."""


@dataclass(eq=False)
class _Pending:
    text: str
    k: int
    queue_length: int
    deliver: Callable[[Answer | BaseException], None] = field(repr=False)


def default_slo(points: OperatingPoints, policy: SchedulePolicy | None = None) -> float:
    """Four times the predicted single-query time of the most expensive frontier choice (or of
    a static policy's choice, when that is dearer), rounded up to a whole millisecond."""
    seconds = max(p.cost.predict(1) for p in points.frontier)
    if isinstance(policy, StaticPolicy) and policy.choice in points:
        seconds = max(seconds, points[policy.choice].cost.predict(1))
    return math.ceil(4 * seconds * 1000 - 1e-9) / 1000


class ScheduledPipeline:
    """``executor``'s choices served under ``policy`` (a :class:`SchedulePolicy` or its spec:
    ``deadline``, ``queue[:H]``, ``static:CHOICE``), bound to ``points`` and ``slo`` seconds
    (None: :func:`default_slo`). ``max_batch``, ``max_wait`` (seconds), ``max_queue`` and
    ``shed`` are the :class:`Scheduler`'s. Every choice of ``points`` is checked servable
    before the worker starts; ``start=False`` leaves starting to :meth:`start`."""

    def __init__(
        self,
        executor: PipelineExecutor,
        points: OperatingPoints,
        policy: SchedulePolicy | str = "deadline",
        slo: float | None = None,
        *,
        max_batch: int = 16,
        max_wait: float = 0.002,
        max_queue: int = 1024,
        shed: bool = False,
        start: bool = True,
    ) -> None:
        policy = parse_schedule(policy) if isinstance(policy, str) else policy
        if isinstance(policy, StaticPolicy) and policy.choice not in points:
            raise ValueError(
                f"schedule {policy}: {policy.choice} has no operating point; profiled: "
                + ", ".join(str(p.choice) for p in points.points)
            )
        for point in points.points:
            executor.check(point.choice)
        self.executor = executor
        self.slo = default_slo(points, policy) if slo is None else float(slo)
        self.scheduler = Scheduler(
            policy,
            points,
            self.slo,
            max_batch=max_batch,
            max_wait=max_wait,
            max_queue=max_queue,
            shed=shed,
        )
        self.policy = policy
        self.metrics = ServeMetrics(max_batch)
        self.metrics.watch(
            lambda: len(self.scheduler.queue),
            lambda: self.scheduler.switches,
            policy=str(policy),
            slo=self.slo,
            max_batch=max_batch,
            choices=[str(c) for c in policy.choices],
        )
        self._cond = threading.Condition()
        self._next_id = 0
        self._state = "starting"
        self._worker = threading.Thread(target=self._loop, name="elasticir-schedule", daemon=True)
        if start:
            self.start()

    # -- life cycle ------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``starting`` (worker not started), ``running``, ``draining`` (refusing new
        queries, serving the queued ones) or ``stopped``."""
        return self._state

    @property
    def choices(self) -> list[Choice]:
        """The choices the policy may pick, in increasing quality (the first is the
        fallback when nothing better fits)."""
        return self.policy.choices

    @property
    def queue_length(self) -> int:
        return len(self.scheduler.queue)

    def start(self) -> None:
        with self._cond:
            if self._state == "starting":
                self._state = "running"
                self._worker.start()

    def drain(self) -> None:
        """Refuse new queries from now on; the queued ones are still served."""
        with self._cond:
            if self._state in ("starting", "running"):
                self._state = "draining"
            self._cond.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Drain, then stop the worker once the queue is empty (waits up to ``timeout``)."""
        self.drain()
        if self._worker.is_alive():
            self._worker.join(timeout)
        with self._cond:
            if not self._worker.is_alive():
                self._state = "stopped"

    def __enter__(self) -> ScheduledPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- submitting --------------------------------------------------------------------------

    def retry_after(self) -> int:
        """Whole seconds to drain the present queue at the cheapest choice (at least 1)."""
        batches = math.ceil(len(self.scheduler.queue) / self.scheduler.max_batch)
        per_batch = self.policy.predict(self.policy.cheapest, self.scheduler.max_batch)
        return max(1, math.ceil(batches * per_batch))

    def submit(
        self,
        texts: Sequence[str],
        k: int,
        deliver: Callable[[int, Answer | BaseException], None],
    ) -> None:
        """Queue every text as one query (all of them or none); ``deliver(i, outcome)`` is
        called from the worker thread once per text with its :class:`Answer`, a
        :class:`Refused` (shed) or a :class:`SearchFailed`. Raises :class:`Refused` at once
        when the queue has no room for them all or the pipeline is stopping."""
        if isinstance(texts, str):
            raise TypeError("submit takes a sequence of query texts, not one string")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        with self._cond:
            if self._state not in ("starting", "running"):
                raise Refused(STOPPING, "the server is shutting down", 1)
            waiting = len(self.scheduler.queue)
            if waiting + len(texts) > self.scheduler.max_queue:
                self.metrics.rejected.inc("queue_full", amount=len(texts))
                raise Refused(
                    QUEUE_FULL,
                    f"overloaded: {waiting} queries wait and the queue holds "
                    f"{self.scheduler.max_queue}; retry later",
                    self.retry_after(),
                )
            now = time.monotonic()
            for i, text in enumerate(texts):
                pending = _Pending(str(text), k, waiting, _bind(deliver, i))
                request = Request(self._next_id, now, now + self.slo, pending)
                self._next_id += 1
                accepted = self.scheduler.submit(request)
                assert accepted, "room was checked under the same lock"
            self._cond.notify()

    def search(
        self, queries: str | Sequence[str], k: int = 10, timeout: float | None = None
    ) -> list[Answer]:
        """The answers to ``queries`` (one string or several), in order; thread-safe. Raises
        :class:`Refused` when the queue is full or any of them was shed."""
        texts = [queries] if isinstance(queries, str) else list(queries)
        futures: list[concurrent.futures.Future[Answer | BaseException]] = [
            concurrent.futures.Future() for _ in texts
        ]
        self.submit(texts, k, lambda i, outcome: futures[i].set_result(outcome))
        if self._state == "starting":
            self.start()
        return _answers([f.result(timeout) for f in futures])

    async def asearch(self, queries: Sequence[str], k: int = 10) -> list[Answer]:
        """:meth:`search` from an event loop: waits without blocking the loop."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in queries]

        def deliver(i: int, outcome: Answer | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(_settle, futures[i], outcome)
            except RuntimeError:  # the loop has closed: nobody waits for this answer
                pass

        self.submit(list(queries), k, deliver)
        return _answers(list(await asyncio.gather(*futures)))

    # -- the worker --------------------------------------------------------------------------

    def _next_batch(self) -> Batch | None:
        """Wait for the next batch to go; None once draining with nothing left."""
        with self._cond:
            while True:
                now = time.monotonic()
                wait = self.scheduler.wait_time(now)
                stopping = self._state not in ("starting", "running")
                if wait is None:
                    if stopping:
                        return None
                    self._cond.wait()
                elif wait > 0 and not stopping:
                    self._cond.wait(wait)
                else:  # a draining worker does not wait for a batch to fill
                    batch = self.scheduler.dispatch(now, force=True)
                    if batch is not None:
                        return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            for request in batch.shed:
                self.metrics.rejected.inc("shed")
                refusal = Refused(
                    SHED,
                    "overloaded: the query could not be answered within the SLO "
                    f"({self.slo * 1000:g} ms) even at the cheapest choice; retry later",
                    self.retry_after(),
                )
                _payload(request).deliver(refusal)
            if batch.requests:
                self._serve(batch)

    def _serve(self, batch: Batch) -> None:
        assert batch.choice is not None
        choice, requests = batch.choice, batch.requests
        # ids unique within the batch: the same text (or client id) may come twice
        queries = [Query(f"q{i}", _payload(r).text) for i, r in enumerate(requests)]
        k = max(_payload(r).k for r in requests)
        started, cpu = time.monotonic(), time.thread_time()
        try:
            run = self.executor.run(queries, choice, k=k).run
        except Exception as error:  # one bad batch must not stop the server
            print(f"error: a batch at {choice} failed:", file=sys.stderr)
            traceback.print_exc()
            self.metrics.failed.inc(amount=len(requests))
            for request in requests:
                _payload(request).deliver(SearchFailed(f"search failed at {choice}: {error}"))
            return
        ended = time.monotonic()
        seconds = ended - started
        self.metrics.model_cpu.inc(amount=max(0.0, time.thread_time() - cpu))
        with self._cond:
            self.scheduler.finished(batch, seconds, ended)
        self.metrics.service.observe(seconds, str(choice))
        self.metrics.batch_size.observe(len(requests))
        for i, request in enumerate(requests):
            pending = _payload(request)
            scores = run.get(f"q{i}", {})
            ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[: pending.k]
            late = ended > request.deadline
            answer = Answer(
                hits=tuple(Hit(d, float(s), r) for r, (d, s) in enumerate(ranked, start=1)),
                choice=choice,
                late=late,
                queue_seconds=started - request.arrival,
                service_seconds=seconds,
                total_seconds=ended - request.arrival,
                batch_size=len(requests),
                queue_length=pending.queue_length,
            )
            self.metrics.latency.observe(answer.total_seconds)
            self.metrics.served.inc(str(choice))
            if late:
                self.metrics.slo_misses.inc()
            pending.deliver(answer)


def _payload(request: Request) -> _Pending:
    assert isinstance(request.payload, _Pending)
    return request.payload


def _bind(
    deliver: Callable[[int, Answer | BaseException], None], i: int
) -> Callable[[Answer | BaseException], None]:
    def call(outcome: Answer | BaseException) -> None:
        try:
            deliver(i, outcome)
        except Exception:  # a caller's callback must not stop the worker
            traceback.print_exc()

    return call


def _settle(future: asyncio.Future[Answer | BaseException], outcome: object) -> None:
    if not future.done():  # a client that went away cancelled it
        future.set_result(outcome)


def _answers(outcomes: Sequence[Answer | BaseException]) -> list[Answer]:
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return [o for o in outcomes if isinstance(o, Answer)]
