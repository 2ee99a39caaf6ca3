"""The dispatch loop's state, shared by the server and the simulator.

A :class:`Scheduler` holds the bounded queue of waiting requests, decides when a batch goes
(dynamic batching: at ``max_batch`` waiting, or when the oldest has waited ``max_wait``) and,
through its policy, at which choice. It keeps no clock of its own: the server passes
``time.monotonic()``, the simulator its event time, so the same code runs in both and a unit
test drives it with any clock.

Requests that cannot make their deadline even at the policy's cheapest choice are served late,
or with ``shed=True`` taken out of the queue and handed back in :attr:`Batch.shed` for the
caller to refuse; :attr:`counts` counts every outcome.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from elasticir.schedule.choices import Choice
from elasticir.schedule.points import OperatingPoints
from elasticir.schedule.policies import Request, SchedulePolicy

__all__ = ["Batch", "Scheduler"]


@dataclass
class Batch:
    """What one dispatch serves: ``requests`` at ``choice`` (None when only ``shed``)."""

    choice: Choice | None
    requests: list[Request]
    shed: list[Request] = field(default_factory=list)
    predicted: float = 0.0  # predicted service seconds


class Scheduler:
    def __init__(
        self,
        policy: SchedulePolicy,
        points: OperatingPoints,
        slo: float,
        *,
        max_batch: int = 16,
        max_wait: float = 0.002,
        max_queue: int = 1024,
        shed: bool = False,
    ) -> None:
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0 s, got {max_wait}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        policy.bind(points, slo, max_batch)
        self.policy, self.points, self.slo = policy, points, float(slo)
        self.max_batch, self.max_wait, self.max_queue = int(max_batch), max_wait, max_queue
        self.shed = shed
        self.queue: deque[Request] = deque()
        self.counts: Counter[str] = Counter()
        self.choices: Counter[str] = Counter()  # requests served per choice
        self.last: Choice | None = None
        self.switches = 0

    def submit(self, request: Request) -> bool:
        """Queue ``request``; False (counted ``rejected_full``) when the queue is full."""
        self.counts["submitted"] += 1
        self.policy.arrived(request.arrival)
        if len(self.queue) >= self.max_queue:
            self.counts["rejected_full"] += 1
            return False
        self.queue.append(request)
        return True

    def wait_time(self, now: float) -> float | None:
        """Seconds until the next batch should go (0: now); None with nothing waiting."""
        if not self.queue:
            return None
        if len(self.queue) >= self.max_batch:
            return 0.0
        return max(0.0, self.queue[0].arrival + self.max_wait - now)

    def dispatch(self, now: float, force: bool = False) -> Batch | None:
        """The next batch, if one should go at ``now`` (``force``: whatever waits, now)."""
        wait = self.wait_time(now)
        if wait is None or (wait > 0 and not force):
            return None
        shed: list[Request] = []
        if self.shed:
            # hopeless even alone at the cheapest choice, started now
            cutoff = now + self.policy.predict(self.policy.cheapest, 1)
            while self.queue and self.queue[0].deadline < cutoff:
                shed.append(self.queue.popleft())
            if shed:
                # the queue is FIFO with one SLO, so deadlines ascend: the rest can make it
                self.counts["shed"] += len(shed)
            if not self.queue:
                return Batch(None, [], shed)
        choice = self.policy.decide(now, list(self._head()))
        size = min(len(self.queue), self.max_batch)
        requests = [self.queue.popleft() for _ in range(size)]
        if self.last is not None and choice != self.last:
            self.switches += 1
        self.last = choice
        self.counts["batches"] += 1
        self.counts["dispatched"] += size
        self.choices[str(choice)] += size
        return Batch(choice, requests, shed, self.policy.predict(choice, size))

    def _head(self) -> list[Request]:
        """The queue as the policy sees it: all of it, up to what the SLO could ever drain
        (a bound that keeps a decision cheap under a deep overload queue)."""
        limit = self.max_batch * 256
        if len(self.queue) <= limit:
            return list(self.queue)
        return [self.queue[i] for i in range(limit)]

    def finished(self, batch: Batch, seconds: float, ended: float) -> int:
        """``batch`` took ``seconds`` of service and ended at ``ended``: feeds the policy's cost
        tracker; returns (and counts) how many of its requests missed their deadline."""
        if batch.choice is None or not batch.requests:
            return 0
        self.policy.observe(batch.choice, len(batch.requests), seconds)
        late = sum(1 for r in batch.requests if ended > r.deadline)
        self.counts["served"] += len(batch.requests)
        self.counts["late"] += late
        return late
