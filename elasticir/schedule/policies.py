"""Schedule policies: which choice serves the next batch, given the waiting requests.

A policy is a small value that prints and parses (``str(parse_schedule(s)) == s``) and is used
unchanged by the server and the simulator, through :class:`~elasticir.schedule.scheduler.
Scheduler`:

``static:CHOICE``
    always ``CHOICE`` (e.g. ``static:full>ranker%20``): one fixed tradeoff.
``queue`` (or ``queue:H`` with hysteresis ``H`` in [0, 1), default 0.25)
    ElasticLM-style: the choice follows the number of waiting requests. Each frontier choice
    has a threshold, the longest queue it can drain within the SLO (at the largest batch,
    with its measured spread); the best choice whose threshold the queue is under serves.
    Moving to a better choice needs the queue under ``(1 - H)`` of that choice's threshold, so
    the choice does not flap around a threshold.
``deadline`` (or ``deadline:M`` with margin ``M`` in [0, 1), default 0.2)
    SLO-aware: at each dispatch, the best-quality frontier choice whose predicted completion
    (cautious: at the 90th percentile of its measured spread, corrected online from the
    service times it has measured) meets the oldest waiting request's deadline, while the rest
    of the queue served after it at the cheapest choice misses no more deadlines than it would
    if this batch were served at the cheapest too. "The rest" includes the requests expected
    to arrive within one SLO at the recent arrival rate (the last second's), so under a
    heavy steady stream a dearer choice is taken only with capacity to spare for what comes
    next, not just for what already waits. ``deadline:M`` plans every deadline ``M`` of the
    SLO early (default 0.2): a reserve for the time outside the server's clock (HTTP, the
    client) and for predictions that run short.

Every policy serves the oldest requests first, up to the scheduler's maximum batch. Requests
that cannot make their deadline even at the cheapest choice are served (late) or shed by the
scheduler, which counts them either way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from elasticir.schedule.choices import Choice
from elasticir.schedule.points import CostTracker, OperatingPoints

__all__ = [
    "DeadlinePolicy",
    "QueuePolicy",
    "Request",
    "SchedulePolicy",
    "StaticPolicy",
    "parse_schedule",
]


@dataclass(eq=False)
class Request:
    """One waiting query: ``arrival`` and ``deadline`` on the scheduler's clock (seconds);
    ``payload`` is whatever the caller carries along (the server's query and reply slot)."""

    id: int
    arrival: float
    deadline: float
    payload: object = field(default=None, repr=False)


class SchedulePolicy:
    """Base of the policies: bound to operating points, an SLO and a maximum batch before use."""

    name = "policy"

    #: seconds of arrivals :meth:`rate` counts
    window = 1.0

    def __init__(self) -> None:
        self.points: OperatingPoints | None = None
        self.tracker: CostTracker | None = None
        self.slo = 0.0
        self.max_batch = 1
        self._recent: deque[float] = deque()

    def arrived(self, at: float) -> None:
        """A request arrived at ``at`` (the scheduler tells every policy, refused or not)."""
        self._recent.append(at)
        while self._recent and self._recent[0] <= at - self.window:
            self._recent.popleft()

    def rate(self, now: float) -> float:
        """Requests per second over the last :attr:`window` seconds before ``now``."""
        while self._recent and self._recent[0] <= now - self.window:
            self._recent.popleft()
        return len(self._recent) / self.window

    def bind(self, points: OperatingPoints, slo: float, max_batch: int) -> None:
        if slo <= 0:
            raise ValueError(f"the SLO must be positive, got {slo} s")
        if max_batch < 1:
            raise ValueError(f"the maximum batch must be at least 1, got {max_batch}")
        self.points, self.slo, self.max_batch = points, float(slo), int(max_batch)
        self.tracker = CostTracker(points)
        self._bound()

    def _bound(self) -> None:
        """Derive what the policy needs from the bound points."""

    @property
    def choices(self) -> list[Choice]:
        """The choices this policy may pick, in increasing quality; the first is the
        fallback, the cheapest per query among the worst (see
        :func:`~elasticir.schedule.points.pareto`)."""
        raise NotImplementedError

    @property
    def cheapest(self) -> Choice:
        return self.choices[0]

    def predict(self, choice: Choice, batch: int, cautious: bool = False) -> float:
        assert self.tracker is not None, "bind the policy first"
        return self.tracker.predict(choice, batch, cautious)

    def decide(self, now: float, queue: Sequence[Request]) -> Choice:
        """The choice that serves the next batch (the oldest ``max_batch`` requests)."""
        raise NotImplementedError

    def observe(self, choice: Choice, batch: int, seconds: float) -> None:
        """A batch of ``batch`` requests took ``seconds`` at ``choice``."""
        assert self.tracker is not None, "bind the policy first"
        self.tracker.observe(choice, batch, seconds)

    def __repr__(self) -> str:
        return f"parse_schedule({str(self)!r})"


class StaticPolicy(SchedulePolicy):
    name = "static"

    def __init__(self, choice: Choice | str) -> None:
        super().__init__()
        self.choice = choice if isinstance(choice, Choice) else Choice.parse(choice)

    def _bound(self) -> None:
        assert self.points is not None
        self.points[self.choice]  # a KeyError naming the profiled choices when absent

    @property
    def choices(self) -> list[Choice]:
        return [self.choice]

    def decide(self, now: float, queue: Sequence[Request]) -> Choice:
        return self.choice

    def __str__(self) -> str:
        return f"static:{self.choice}"


class _FrontierPolicy(SchedulePolicy):
    def _bound(self) -> None:
        assert self.points is not None
        self._frontier = [p.choice for p in self.points.frontier]  # increasing quality

    @property
    def choices(self) -> list[Choice]:
        return list(self._frontier)


class QueuePolicy(_FrontierPolicy):
    name = "queue"

    def __init__(self, hysteresis: float = 0.25) -> None:
        super().__init__()
        if not 0 <= hysteresis < 1:
            raise ValueError(f"queue hysteresis must be in [0, 1), got {hysteresis}")
        self.hysteresis = float(hysteresis)
        self.current: int | None = None

    def _bound(self) -> None:
        super()._bound()
        self.thresholds = [self._threshold(c) for c in self._frontier]
        self.current = None

    def _drain(self, choice: Choice, waiting: int) -> float:
        """Cautious seconds to serve ``waiting`` requests in full batches at ``choice``."""
        full, rest = divmod(waiting, self.max_batch)
        seconds = full * self.predict(choice, self.max_batch, cautious=True)
        return seconds + (self.predict(choice, rest, cautious=True) if rest else 0.0)

    def _threshold(self, choice: Choice) -> int:
        """The longest queue (counting the newcomer) ``choice`` drains within the SLO."""
        if self._drain(choice, 1) > self.slo:
            return 0
        low, high = 1, 1
        while self._drain(choice, high * 2) <= self.slo and high < 1 << 20:
            high *= 2
        high *= 2
        while low + 1 < high:  # drain(low) <= slo < drain(high)
            middle = (low + high) // 2
            if self._drain(choice, middle) <= self.slo:
                low = middle
            else:
                high = middle
        return low

    def decide(self, now: float, queue: Sequence[Request]) -> Choice:
        waiting = len(queue)
        best = 0  # the cheapest serves when no threshold holds the queue
        for i in range(len(self._frontier) - 1, -1, -1):
            if waiting <= self.thresholds[i]:
                best = i
                break
        if self.current is None or best < self.current:
            self.current = best  # down at once
        elif best > self.current:
            # up one step at a time, and only with room below the better choice's threshold
            step = self.current + 1
            if waiting <= (1 - self.hysteresis) * self.thresholds[step]:
                self.current = step
        return self._frontier[self.current]

    def __str__(self) -> str:
        return "queue" if self.hysteresis == 0.25 else f"queue:{self.hysteresis:g}"


class DeadlinePolicy(_FrontierPolicy):
    name = "deadline"

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        if not 0 <= margin < 1:
            raise ValueError(f"deadline margin must be in [0, 1), got {margin}")
        self.margin = float(margin)

    def _bound(self) -> None:
        super()._bound()
        self._reserve = self.margin * self.slo  # planned deadlines come this much earlier

    def _expected(self, now: float) -> list[Request]:
        """The requests expected within one SLO from ``now`` at the recent rate, evenly
        spaced (placeholders: they only take part in the lookahead)."""
        rate = self.rate(now)
        count = min(int(rate * self.slo), 64 * self.max_batch)
        return [
            Request(-1, now + (i + 1) / rate, now + (i + 1) / rate + self.slo) for i in range(count)
        ]

    def _misses_after(self, start: float, queue: Sequence[Request], horizon: float) -> int:
        """Deadlines missed among ``queue`` served from ``start`` at the cheapest choice, batched
        as the scheduler dispatches: each batch takes what has arrived when the server frees
        (at most ``max_batch``), or waits for the next arrival (the requests past ``horizon``
        miss at any choice: counted alike). Assuming full batches instead overstated what a
        nearly saturated server serves, since its batches are smaller and cost more per request.
        """
        cheapest, misses, at, first = self._frontier[0], 0, start, 0
        while first < len(queue):
            if at > horizon:
                return misses + len(queue) - first
            at = max(at, queue[first].arrival)
            last = first + 1
            while last < len(queue) and last - first < self.max_batch and queue[last].arrival <= at:
                last += 1
            at += self.predict(cheapest, last - first, cautious=True)
            misses += sum(1 for r in queue[first:last] if r.deadline - self._reserve < at)
            first = last
        return misses

    def decide(self, now: float, queue: Sequence[Request]) -> Choice:
        if not queue:
            return self._frontier[-1]
        size = min(len(queue), self.max_batch)
        batch, rest = queue[:size], [*queue[size:], *self._expected(now)]
        horizon = max(r.deadline for r in [*batch, *rest])
        floor: int | None = None
        for i in range(len(self._frontier) - 1, -1, -1):
            choice = self._frontier[i]
            done = now + self.predict(choice, size, cautious=True)
            if i > 0 and done > batch[0].deadline - self._reserve:
                continue  # the oldest request would miss at this choice
            misses = sum(1 for r in batch if r.deadline - self._reserve < done)
            misses += self._misses_after(done, rest, horizon)
            if i == 0:
                return choice
            if floor is None:
                cheap_done = now + self.predict(self._frontier[0], size, cautious=True)
                floor = sum(1 for r in batch if r.deadline - self._reserve < cheap_done)
                floor += self._misses_after(cheap_done, rest, horizon)
            if misses <= floor:
                return choice
        return self._frontier[0]

    def __str__(self) -> str:
        return "deadline" if self.margin == 0.2 else f"deadline:{self.margin:g}"


#: the policies that take one number after a colon, and what it is
_NUMBERED = {
    "queue": (QueuePolicy, "queue:H takes a hysteresis H in [0, 1), e.g. queue:0.25"),
    "deadline": (
        DeadlinePolicy,
        "deadline:M takes a margin M in [0, 1) (the share of the SLO kept in reserve), "
        "e.g. deadline:0.2",
    ),
}


def parse_schedule(spec: str) -> SchedulePolicy:
    """``static:CHOICE``, ``queue[:H]`` or ``deadline[:M]`` (see the module docstring)."""
    text = str(spec).strip()
    name, _, argument = text.partition(":")
    if name == "static":
        if not argument:
            raise ValueError("schedule 'static' needs a choice: static:CHOICE, e.g. static:L4")
        return StaticPolicy(Choice.parse(argument))
    if name in _NUMBERED:
        policy, usage = _NUMBERED[name]
        if not argument:
            return policy()
        try:
            return policy(float(argument))
        except ValueError:
            raise ValueError(f"schedule {text!r}: {usage}") from None
    raise ValueError(
        f"unknown schedule policy {text!r}: expected static:CHOICE, queue[:H] or deadline[:M]"
    )
