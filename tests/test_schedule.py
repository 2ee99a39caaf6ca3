"""The elastic schedule without a model: choices, operating points, policies and the scheduler,
driven by a simulated clock; traces; the simulator's bookkeeping."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from elasticir.data.errors import InputFormatError
from elasticir.schedule.choices import Choice
from elasticir.schedule.points import (
    CostModel,
    CostTracker,
    OperatingPoint,
    OperatingPoints,
    pareto,
)
from elasticir.schedule.policies import (
    DeadlinePolicy,
    QueuePolicy,
    Request,
    StaticPolicy,
    parse_schedule,
)
from elasticir.schedule.scheduler import Scheduler
from elasticir.schedule.traces import parse_trace
from elasticir.simulation import simulate

CHEAP, MIDDLE, BEST = "L2-W50", "L6-W50", "full>ranker%20"


def make_points(spread: tuple[float, ...] = (1.0,)) -> OperatingPoints:
    """Three choices: 2 ms + 1 ms/query (quality .5), 5 + 3 ms (.6), 20 + 30 ms (.7), and one
    dominated choice (slower than MIDDLE, worse)."""

    def point(choice: str, fixed: float, per: float, quality: float) -> OperatingPoint:
        per_query = {f"q{i}": quality + (0.1 if i % 2 else -0.1) for i in range(4)}
        return OperatingPoint(
            Choice.parse(choice), CostModel(fixed, per, spread), {"nDCG@10": quality}, per_query
        )

    return OperatingPoints(
        [
            point(CHEAP, 0.002, 0.001, 0.5),
            point(MIDDLE, 0.005, 0.003, 0.6),
            point(BEST, 0.020, 0.030, 0.7),
            point("L4", 0.006, 0.004, 0.55),
        ],
        "nDCG@10",
    )


def requests(arrivals: list[float], slo: float) -> list[Request]:
    return [Request(i, t, t + slo) for i, t in enumerate(arrivals)]


# --- choices -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "full",
        "L4",
        "L6-W50>dipair%50",
        "full>ranker%20",
        "full>ranker%20@calibrated:rank",
        "L2-W50>ranker%10@L3-W50",
    ],
)
def test_choices_print_and_parse_back(text: str) -> None:
    choice = Choice.parse(text)
    assert str(choice) == text and Choice.parse(str(choice)) == choice


def test_choice_normalises_and_refuses() -> None:
    assert Choice.parse("L6-H50-F50") == Choice("L6-W50")
    assert str(Choice.parse("full>ranker%20@full")) == "full>ranker%20"  # full is the default
    for bad, message in [
        ("L9x", "bad query level"),
        ("full>bm25%10", "expected LEVEL"),
        ("full>ranker%0", "positive"),
        ("full>dipair%10@L3", "no compute levels"),
        ("full>ranker", "expected LEVEL"),
    ]:
        with pytest.raises(ValueError, match=message):
            Choice.parse(bad)


# --- operating points --------------------------------------------------------------------


def test_cost_model_fits_a_line_and_keeps_the_spread() -> None:
    samples = [(b, 0.004 + 0.002 * b) for b in (1, 2, 4, 8, 16) for _ in range(3)]
    model = CostModel.fit(samples)
    assert model.fixed == pytest.approx(0.004) and model.per_query == pytest.approx(0.002)
    assert model.quantile(0.5) == pytest.approx(1.0)
    noisy = CostModel.fit([(4, 0.012), (4, 0.024), (8, 0.020), (8, 0.040)])
    assert noisy.quantile(0.0) < 1 < noisy.quantile(1.0)
    rng = np.random.default_rng(0)
    draws = {round(noisy.sample(4, rng) / noisy.predict(4), 6) for _ in range(200)}
    assert draws <= {round(r, 6) for r in noisy.ratios} and len(draws) > 1
    with pytest.raises(ValueError, match="no measurements"):
        CostModel.fit([])


def test_frontier_drops_dominated_points_and_files_round_trip(tmp_path: Path) -> None:
    points = make_points()
    assert [str(p.choice) for p in points.frontier] == [CHEAP, MIDDLE, BEST]
    assert not points["L4"].frontier and points[BEST].frontier
    path = tmp_path / "points.json"
    points.save(path)
    again = OperatingPoints.load(path)
    assert [p.choice for p in again.frontier] == [p.choice for p in points.frontier]
    assert again[BEST].per_query == pytest.approx(points[BEST].per_query)
    assert again[MIDDLE].cost.predict(4) == pytest.approx(points[MIDDLE].cost.predict(4))
    with pytest.raises(KeyError, match="profiled"):
        points["L3-W50"]


def test_a_choice_dearer_alone_but_cheaper_in_full_batches_stays_on_the_frontier() -> None:
    def point(choice: str, fixed: float, per: float, quality: float) -> OperatingPoint:
        return OperatingPoint(Choice.parse(choice), CostModel(fixed, per), {"RR@10": quality})

    # L2-W50: 2.6 ms alone, 15.7 ms for 16; L3-W50: 2.4 ms alone, 20.2 ms for 16, a bit better
    batchy = point("L2-W50", 0.0017, 0.00087, 0.8506)
    quick = point("L3-W50", 0.0012, 0.00119, 0.8519)
    worse = point("L4", 0.0030, 0.00200, 0.8500)  # dearer both ways and worse: dominated
    full = point("full", 0.0050, 0.00290, 0.9352)
    frontier = pareto([full, worse, quick, batchy], "RR@10")
    assert [str(p.choice) for p in frontier] == ["L2-W50", "L3-W50", "full"]
    # the fallback (first) is the cheapest in full batches, which a drained queue runs at
    assert frontier[0].cost.predict(16) < frontier[1].cost.predict(16)
    # equal quality: only the one cheaper per query stays
    twin = point("L6-W50", 0.0001, 0.00100, 0.8519)
    assert [str(p.choice) for p in pareto([quick, twin], "RR@10")] == ["L6-W50"]


def test_bad_points_files_say_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "points.json"
    make_points().save(path)
    good = json.loads(path.read_text())
    cases = {
        "format": ({**good, "format": "other"}, "format"),
        "choice": ({**good, "points": [{**good["points"][0], "choice": "L9x"}]}, "points\\[0\\]"),
        "cost": ({**good, "points": [{**good["points"][0], "cost": {"fixed": 1}}]}, "per_query"),
        "metric": ({**good, "metric": "RR@10"}, "no RR@10 value"),
    }
    for data, message in cases.values():
        path.write_text(json.dumps(data))
        with pytest.raises(InputFormatError, match=message):
            OperatingPoints.load(path)
    path.write_text("{not json")
    with pytest.raises(InputFormatError, match=r"points.json:1"):
        OperatingPoints.load(path)


def test_cost_tracker_corrects_itself_online() -> None:
    points = make_points()
    tracker = CostTracker(points, alpha=0.5)
    best = Choice.parse(BEST)
    before = tracker.predict(best, 4)
    for _ in range(10):
        tracker.observe(best, 4, 2 * before)  # the machine got twice as slow
    assert tracker.predict(best, 4) == pytest.approx(2 * before, rel=0.01)
    # a choice not yet measured follows the global correction
    assert tracker.predict(Choice.parse(CHEAP), 1) > points[CHEAP].cost.predict(1) * 1.5


# --- policies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec", ["static:full>ranker%20@calibrated:rank", "queue", "queue:0.5", "deadline", "static:L4"]
)
def test_schedule_policies_print_and_parse_back(spec: str) -> None:
    assert str(parse_schedule(spec)) == spec


@pytest.mark.parametrize("spec", ["static", "queue:2", "queue:x", "deadline:3", "fastest", ""])
def test_bad_schedule_policies_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(spec)


def test_static_policy_needs_a_profiled_choice() -> None:
    policy = StaticPolicy("L3-W50")
    with pytest.raises(KeyError, match="no operating point"):
        policy.bind(make_points(), 0.1, 8)


def test_queue_policy_follows_the_queue_with_hysteresis() -> None:
    policy = QueuePolicy(hysteresis=0.25)
    policy.bind(make_points(), slo=0.2, max_batch=8)
    cheap, middle, best = policy.thresholds
    assert cheap > middle > best >= 1  # cheaper choices drain longer queues within the SLO
    q = requests([0.0] * (cheap + 5), 0.2)
    assert str(policy.decide(0, q[:1])) == BEST
    assert str(policy.decide(0, q[: best + 1])) == MIDDLE  # over the best's threshold: down
    assert str(policy.decide(0, q[: middle + 1])) == CHEAP
    # back up needs the queue under 75% of the better choice's threshold, one step at a time
    assert str(policy.decide(0, q[:middle])) == CHEAP
    assert str(policy.decide(0, q[: int(0.75 * middle)])) == MIDDLE
    switches, last = 0, None
    for length in [middle, middle + 1] * 20:  # a queue oscillating around a threshold
        choice = policy.decide(0, q[:length])
        switches += last is not None and choice != last
        last = choice
    assert switches <= 1


def test_deadline_policy_picks_the_best_choice_that_keeps_every_deadline() -> None:
    policy = DeadlinePolicy()
    policy.bind(make_points(), slo=0.1, max_batch=4)
    # one fresh request: the best choice (20 + 30 ms) fits in 100 ms
    assert str(policy.decide(0.0, requests([0.0], 0.1))) == BEST
    # the oldest has waited 60 ms: 50 ms more misses at the best choice, the middle fits
    assert str(policy.decide(0.06, requests([0.0], 0.1))) == MIDDLE
    # four fresh requests: best takes 140 ms > SLO; middle (17 ms) fits
    assert str(policy.decide(0.0, requests([0.0] * 4, 0.1))) == MIDDLE
    # a long queue: the middle choice for the head would make later ones miss; cheapest
    queue = requests([0.0] * 4 + [0.0001 * i for i in range(60)], 0.1)
    assert str(policy.decide(0.04, queue)) == CHEAP
    # hopeless (everyone is past their deadline): the cheapest, to catch up
    assert str(policy.decide(1.0, requests([0.0] * 8, 0.1))) == CHEAP


def test_deadline_policy_slows_down_when_the_machine_does() -> None:
    policy = DeadlinePolicy()
    policy.bind(make_points(), slo=0.1, max_batch=4)
    one = requests([0.0], 0.1)
    assert str(policy.decide(0.0, one)) == BEST
    for _ in range(20):  # the best choice now takes 3x its profiled time
        policy.observe(Choice.parse(BEST), 1, 0.15)
    assert str(policy.decide(0.0, one)) == MIDDLE


def test_deadline_policy_keeps_capacity_for_the_requests_it_expects() -> None:
    policy = DeadlinePolicy()
    policy.bind(make_points(), slo=0.1, max_batch=4)
    one = requests([1.0], 0.1)
    assert str(policy.decide(1.0, one)) == BEST  # nothing else has arrived lately
    # 1,000 requests/s over the last second: the next 100 ms bring 100 more, beyond what
    # even the cheapest choice serves (6 ms per batch of 4); 50 ms at the best choice first
    # would make more of them late than the cheapest would
    for i in range(1000):
        policy.arrived(i / 1000)
    assert policy.rate(1.0) == pytest.approx(1000, rel=0.01)
    assert str(policy.decide(1.0, one)) != BEST
    # the rate is of the last second only: two seconds later the stream has stopped
    assert policy.rate(3.0) == 0 and str(policy.decide(3.0, requests([3.0], 0.1))) == BEST


@pytest.mark.parametrize("rate", [150.0, 400.0, 800.0])
def test_deadline_lookahead_batches_as_the_scheduler_does(rate: float) -> None:
    """What the lookahead predicts for the rest of the queue at the cheapest choice is what
    the scheduler then does with it: same batches, same misses (no spread, no dynamic-batching
    wait, no reserve). Assuming full batches, as it first did, undercounted the misses of a
    loaded server, whose batches are as small as what has arrived when it frees."""
    slo = 0.03
    points = make_points()
    arrivals = parse_trace("poisson").arrivals(rate, 2.0, seed=3)
    queue = requests(list(arrivals), slo)
    policy = DeadlinePolicy(margin=0)
    policy.bind(points, slo=slo, max_batch=4)
    predicted = policy._misses_after(0.0, queue, math.inf)
    served = simulate(
        points, parse_schedule(f"static:{CHEAP}"), arrivals, ["q0"], slo=slo, max_batch=4,
        max_wait=0.0,
    )  # fmt: skip
    missed = sum(1 for r in served.records if r.latency > slo + 1e-9)
    assert predicted == missed
    if rate == 800.0:
        assert missed > 0  # a loaded case, where full batches would have said otherwise


def test_deadline_margin_plans_deadlines_early_and_parses() -> None:
    fresh = requests([0.0], 0.1)
    # the oldest has waited 40 ms: the best choice (50 ms) ends at 90 ms, inside the SLO but
    # inside the default reserve (20 ms) as well; with no reserve it is taken
    decided = {}
    for spec in ("deadline:0", "deadline"):
        policy = parse_schedule(spec)
        policy.bind(make_points(), slo=0.1, max_batch=4)
        decided[spec] = str(policy.decide(0.04, fresh))
    assert decided == {"deadline:0": BEST, "deadline": MIDDLE}
    for spec in ("deadline", "deadline:0", "deadline:0.35"):
        assert str(parse_schedule(spec)) == spec
    for bad in ("deadline:1", "deadline:-0.1", "deadline:soon"):
        with pytest.raises(ValueError, match="margin"):
            parse_schedule(bad)


# --- scheduler ---------------------------------------------------------------------------


def test_scheduler_batches_by_size_and_wait() -> None:
    scheduler = Scheduler(StaticPolicy(MIDDLE), make_points(), 0.1, max_batch=4, max_wait=0.01)
    assert scheduler.wait_time(0.0) is None and scheduler.dispatch(0.0) is None
    for r in requests([0.0, 0.001], 0.1):
        assert scheduler.submit(r)
    assert scheduler.wait_time(0.002) == pytest.approx(0.008)
    assert scheduler.dispatch(0.002) is None  # not full, not waited long enough
    batch = scheduler.dispatch(0.010)
    assert batch is not None and [r.id for r in batch.requests] == [0, 1]
    for r in requests([0.02] * 6, 0.1):
        scheduler.submit(r)
    full = scheduler.dispatch(0.02)  # four waiting: goes at once
    assert full is not None and len(full.requests) == 4 and len(scheduler.queue) == 2
    assert scheduler.finished(full, 0.017, 0.037) == 0
    assert scheduler.finished(batch, 0.2, 0.5) == 2  # ended after both deadlines
    assert scheduler.counts["late"] == 2 and scheduler.counts["served"] == 6


def test_scheduler_rejects_when_full_and_sheds_the_hopeless() -> None:
    scheduler = Scheduler(DeadlinePolicy(), make_points(), 0.1, max_batch=4, max_queue=3, shed=True)
    outcomes = [scheduler.submit(r) for r in requests([0.0, 0.0, 0.05, 0.05], 0.1)]
    assert outcomes == [True, True, True, False] and scheduler.counts["rejected_full"] == 1
    batch = scheduler.dispatch(0.0995, force=True)  # the first two cannot make it even alone
    assert batch is not None and [r.id for r in batch.shed] == [0, 1]
    assert [r.id for r in batch.requests] == [2] and scheduler.counts["shed"] == 2


def test_scheduler_counts_switches() -> None:
    scheduler = Scheduler(DeadlinePolicy(), make_points(), 0.1, max_batch=4)
    for t in (0.0, 1.0):
        scheduler.submit(Request(int(t), t, t + 0.1))
        scheduler.dispatch(t + 0.06, force=True)  # waited 60 ms: middle
        scheduler.submit(Request(int(t) + 10, t + 0.1, t + 0.2))
        scheduler.dispatch(t + 0.1, force=True)  # fresh: best
    assert scheduler.switches == 3 and scheduler.choices == {MIDDLE: 2, BEST: 2}


# --- traces ------------------------------------------------------------------------------


def test_traces_have_the_rates_they_promise() -> None:
    poisson = parse_trace("poisson").arrivals(50, 200, seed=1)
    assert len(poisson) == pytest.approx(10_000, rel=0.05)
    assert np.all(np.diff(poisson) >= 0) and poisson[-1] < 200
    assert np.array_equal(poisson, parse_trace("poisson").arrivals(50, 200, seed=1))
    burst = parse_trace("burst:low=0.5,high=4,on=30,every=120")
    times = burst.arrivals(10, 240, seed=2)
    inside = np.sum((times >= 60) & (times < 90))  # the first burst: 40 req/s for 30 s
    outside = np.sum(times < 60)  # 5 req/s
    assert inside == pytest.approx(1200, rel=0.1) and outside == pytest.approx(300, rel=0.2)
    step = parse_trace("step").arrivals(10, 100, seed=3)
    assert np.sum(step >= 50) > 3 * np.sum(step < 50)
    diurnal = parse_trace("diurnal:period=100")
    assert (
        diurnal.rate_at(50.0, 10, 100) == pytest.approx(20) and diurnal.rate_at(0.0, 10, 100) == 2.5
    )
    assert str(burst) == "burst" and str(parse_trace("step:at=0.25")) == "step:at=0.25"


def test_bad_traces_name_the_problem(tmp_path: Path) -> None:
    for spec, message in [
        ("burst:on=200", "outlast"),
        ("step:at=2", "fraction"),
        ("poisson:rate=3", "takes none"),
        ("burst:high=x", "number"),
        ("bursty", "unknown trace"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_trace(spec)
    path = tmp_path / "arrivals.txt"
    path.write_text("# seconds\n0.5\n0.1\n\n2.0\nsoon\n")
    with pytest.raises(InputFormatError, match="arrivals.txt:6"):
        parse_trace(path).arrivals(1, 10)
    path.write_text("0.5\n0.1\n12\n")
    assert parse_trace(path).arrivals(1, 10).tolist() == [0.1, 0.5]


# --- simulation --------------------------------------------------------------------------


def _summary(records, slo):  # a few numbers, computed here independently of the report module
    answered = [r for r in records if r.latency is not None]
    within = sum(1 for r in answered if r.latency <= slo) / len(records)
    quality = [r.quality if r.latency is not None and r.latency <= slo else 0.0 for r in records]
    return within, float(np.mean(quality))


def test_simulation_gives_every_request_one_record_and_repeats_itself() -> None:
    points = make_points(spread=(0.8, 1.0, 1.3))
    arrivals = parse_trace("poisson").arrivals(40, 30, seed=0)
    ids = [f"q{i}" for i in range(4)]
    one = simulate(points, parse_schedule("deadline"), arrivals, ids, slo=0.1, max_batch=4)
    two = simulate(points, parse_schedule("deadline"), arrivals, ids, slo=0.1, max_batch=4)
    assert len(one.records) == len(arrivals)
    assert [r.id for r in one.records] == list(range(len(arrivals)))
    assert [(r.latency, r.choice) for r in one.records] == [
        (r.latency, r.choice) for r in two.records
    ]
    served = [r for r in one.records if r.status == "ok"]
    assert all(r.latency > 0 for r in served)
    assert one.counts["served"] == len(served)
    # a request's quality is its choice's profiled value for its query
    for r in served[:50]:
        assert r.quality == points[r.choice].per_query[r.qid]


def test_deadline_holds_the_slo_under_a_burst_where_static_best_does_not() -> None:
    points = make_points(spread=(0.9, 1.0, 1.1))
    slo, ids = 0.15, [f"q{i}" for i in range(4)]
    # the best choice serves ~35 queries/s at batch 4; bursts offer 4x 10/s
    arrivals = parse_trace("burst:low=0.5,high=4,on=10,every=40").arrivals(10, 80, seed=4)
    results = {}
    for spec in ("static:" + BEST, "queue", "deadline"):
        run = simulate(points, parse_schedule(spec), arrivals, ids, slo=slo, max_batch=4)
        results[spec] = _summary(run.records, slo)
    assert results["static:" + BEST][0] < 0.8
    assert results["deadline"][0] >= 0.99
    assert results["deadline"][1] > results["static:" + BEST][1]
    assert results["deadline"][1] > 0.5  # it used better choices than the cheapest


def test_more_servers_serve_more() -> None:
    points = make_points()
    arrivals = parse_trace("poisson").arrivals(60, 20, seed=5)
    ids = ["q0"]
    one = simulate(points, StaticPolicy(BEST), arrivals, ids, slo=0.2, max_batch=4, servers=1)
    four = simulate(points, StaticPolicy(BEST), arrivals, ids, slo=0.2, max_batch=4, servers=4)
    assert _summary(four.records, 0.2)[0] > _summary(one.records, 0.2)[0]
    assert len(four.busy) == 4 and all(b > 0 for b in four.busy)
    assert sum(four.busy) == pytest.approx(sum(one.busy), rel=0.3)


def test_overhead_delays_answers_and_cpu_per_request_lengthens_batches() -> None:
    points = make_points(spread=(1.0,))
    ids = ["q0"]
    alone = [0.0, 1.0, 2.0]  # one request at a time: nothing queues
    base = simulate(points, StaticPolicy(CHEAP), alone, ids, slo=1.0)
    later = simulate(points, StaticPolicy(CHEAP), alone, ids, slo=1.0, overhead=0.003)
    for a, b in zip(base.records, later.records):
        assert b.latency == pytest.approx(a.latency + 0.003)
    spaced = [float(i) for i in range(30)]  # one at a time, like ``alone``
    drawn = simulate(
        points, StaticPolicy(CHEAP), spaced, ids, slo=1.0, overhead=[0.001, 0.005]
    )  # a measured distribution: each answer draws its own
    extra = {round(b.latency - base.records[0].latency, 6) for b in drawn.records}
    assert extra == {0.001, 0.005}
    cpu = simulate(points, StaticPolicy(CHEAP), alone, ids, slo=1.0, cpu_per_request=0.002)
    for a, b in zip(base.records, cpu.records):
        assert b.latency == pytest.approx(a.latency + 0.002)  # a batch of one: 1 x 2 ms
    assert sum(cpu.busy) == pytest.approx(sum(base.busy) + 3 * 0.002)
    # under load the per-request CPU is paid by every request of a batch, and queues build
    arrivals = parse_trace("poisson").arrivals(60, 20, seed=6)
    light = simulate(points, StaticPolicy(CHEAP), arrivals, ids, slo=1.0, max_batch=4)
    heavy = simulate(
        points, StaticPolicy(CHEAP), arrivals, ids, slo=1.0, max_batch=4, cpu_per_request=0.004
    )
    assert sum(heavy.busy) > sum(light.busy) + 0.9 * 0.004 * len(arrivals)
    mean = lambda run: np.mean([r.latency for r in run.records])  # noqa: E731
    assert mean(heavy) > mean(light)
    with pytest.raises(ValueError, match="cpu_per_request"):
        simulate(points, StaticPolicy(CHEAP), alone, ids, slo=1.0, cpu_per_request=-1.0)
    with pytest.raises(ValueError, match="overhead"):
        simulate(points, StaticPolicy(CHEAP), alone, ids, slo=1.0, overhead=math.nan)


def test_simulation_refuses_bad_input() -> None:
    points = make_points()
    with pytest.raises(ValueError, match="sorted"):
        simulate(points, StaticPolicy(CHEAP), [1.0, 0.5], ["q0"], slo=0.1)
    with pytest.raises(ValueError, match="servers"):
        simulate(points, StaticPolicy(CHEAP), [0.5], ["q0"], slo=0.1, servers=0)
    assert math.isfinite(make_points().frontier[0].cost.predict(1))
