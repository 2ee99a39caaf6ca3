"""Measuring operating points: every choice's service time by batch size, and its quality.

:func:`profile_pipeline` times each choice of a :class:`~elasticir.schedule.executor.
PipelineExecutor` at several batch sizes (after one warm-up call, on queries it cycles
through, so no batch repeats another's queries), fits its :class:`~elasticir.schedule.points.
CostModel`, and scores it on development queries: with judgements, ``metric`` per query
(nDCG@10 on DL, RR@10 or Success@1 on NQ); without, ``overlap@10``, the share of the most
expensive choice's top 10 a choice also returns (a judgement-free proxy, marked as such).

:func:`quick_profile` is the server's start-up profile when it is given no points file: a few
batch sizes, one timing each, and pseudo-queries cut from the corpus (their first words).
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from elasticir.compute.levels import Level
from elasticir.data.records import Query
from elasticir.machine import machine
from elasticir.progress import progress_bar
from elasticir.schedule.choices import Choice
from elasticir.schedule.executor import PipelineExecutor
from elasticir.schedule.points import CostModel, OperatingPoint, OperatingPoints
from elasticir.schedule.quality import DEFAULT_METRIC, check_metric

__all__ = ["OVERLAP", "profile_pipeline", "pseudo_queries", "quick_profile"]

OVERLAP = "overlap@10"
Qrels = Mapping[str, Mapping[str, int]]


def _batches(queries: Sequence[Query], size: int, start: int) -> tuple[list[Query], int]:
    """``size`` queries from ``start`` on, cycling, with ids made unique within the batch."""
    picked = []
    for j in range(size):
        query = queries[(start + j) % len(queries)]
        picked.append(Query(f"{query.query_id}#{j}", query.text) if size > len(queries) else query)
    return picked, (start + size) % len(queries)


def _time_choice(
    executor: PipelineExecutor,
    choice: Choice,
    queries: Sequence[Query],
    batch_sizes: Sequence[int],
    repeats: int,
    k: int,
    advance: Callable[[int], None],
) -> list[tuple[int, float]]:
    samples: list[tuple[int, float]] = []
    cursor = 0
    warm, cursor = _batches(queries, min(batch_sizes), cursor)
    executor.run(warm, choice, k)  # first call: lazy loads, allocator warm-up
    for _ in range(repeats):
        for size in batch_sizes:
            batch, cursor = _batches(queries, size, cursor)
            started = time.perf_counter()
            executor.run(batch, choice, k)
            samples.append((size, time.perf_counter() - started))
            advance(size)
    return samples


def _runs(
    executor: PipelineExecutor, choice: Choice, queries: Sequence[Query], k: int, batch: int
) -> tuple[dict[str, dict[str, float]], list[tuple[int, float]]]:
    """The run of every query at ``choice`` (in batches), and those batches' timings."""
    run: dict[str, dict[str, float]] = {}
    timings = []
    for start in range(0, len(queries), batch):
        chunk = list(queries[start : start + batch])
        started = time.perf_counter()
        result = executor.run(chunk, choice, k)
        timings.append((len(chunk), time.perf_counter() - started))
        run.update(result.run)
    return run, timings


def _overlap(run: Mapping[str, Mapping[str, float]], reference: Mapping[str, Mapping[str, float]]):
    values = {}
    for qid, ref in reference.items():
        top = sorted(ref, key=lambda d: -ref[d])[:10]
        got = set(sorted(run.get(qid, {}), key=lambda d: -run[qid][d])[:10])
        values[qid] = len(got & set(top)) / max(1, len(top))
    return values


def _reference(choices: Sequence[Choice]) -> Choice:
    """What the judgement-free overlap compares with: the cross-encoder at full compute over
    the most candidates when there is one, else dense retrieval at the best query level (a
    cheaper reranker such as DiPair is not assumed to be better than its first stage)."""
    ranker = [c for c in choices if c.rerank == "ranker" and c.compute is None]
    ranker = ranker or [c for c in choices if c.rerank == "ranker"]  # policies approximate full
    if ranker:
        return max(ranker, key=lambda c: (c.level == "full", c.depth))
    dense = [c for c in choices if not c.reranks]
    if dense:
        return max(dense, key=lambda c: Level(c.level))
    return max(choices, key=lambda c: c.depth)


def profile_pipeline(
    executor: PipelineExecutor,
    choices: Sequence[Choice],
    queries: Sequence[Query],
    *,
    qrels: Qrels | None = None,
    metric: str = DEFAULT_METRIC,
    extra_metrics: Sequence[str] = (),
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16),
    repeats: int = 3,
    k: int = 10,
    progress: bool = False,
    say: Callable[[str], None] = print,
    dev: Mapping[str, Any] | None = None,
) -> OperatingPoints:
    """The operating points of ``choices`` on this machine (see the module docstring)."""
    from elasticir.eval.measures import evaluate_per_query

    if not choices:
        raise ValueError("profile: no choices to measure")
    if not queries:
        raise ValueError("profile: no queries to measure with")
    sizes = sorted({int(b) for b in batch_sizes})
    if sizes[0] < 1:
        raise ValueError(f"profile: batch sizes must be positive, got {batch_sizes}")
    if repeats < 1:
        raise ValueError(f"profile: repeats must be at least 1, got {repeats}")
    for choice in choices:
        executor.check(choice)
    measures = [check_metric(metric)] if qrels is not None else []
    measures += [check_metric(m) for m in extra_metrics if check_metric(m) not in measures]
    judged = [q for q in queries if qrels is not None and q.query_id in qrels]
    if qrels is not None and not judged:
        raise ValueError("profile: none of the queries has judgements in the qrels given")

    costs: dict[Choice, list[tuple[int, float]]] = {}
    runs: dict[Choice, dict[str, dict[str, float]]] = {}
    per_choice = sum(sizes) * repeats
    with progress_bar(progress, per_choice * len(choices), "timing choices") as advance:
        for choice in choices:
            costs[choice] = _time_choice(executor, choice, queries, sizes, repeats, k, advance)
    scored = judged if qrels is not None else list(queries)
    with progress_bar(progress, len(scored) * len(choices), "scoring choices") as advance:
        for choice in choices:
            runs[choice], extra = _runs(executor, choice, scored, k, max(sizes))
            costs[choice] += extra
            advance(len(scored))

    models = {c: CostModel.fit(costs[c]) for c in choices}
    points = []
    if qrels is not None:
        name = measures[0]
        for choice in choices:
            per_query = evaluate_per_query(
                runs[choice], {q.query_id: qrels[q.query_id] for q in judged}, measures
            )
            quality = {m: float(np.mean([v[m] for v in per_query.values()])) for m in measures}
            values = {qid: v[name] for qid, v in per_query.items()}
            points.append(OperatingPoint(choice, models[choice], quality, values))
    else:
        name = OVERLAP
        reference = _reference(choices)
        for choice in choices:
            values = _overlap(runs[choice], runs[reference])
            quality = {OVERLAP: float(np.mean(list(values.values())))}
            points.append(OperatingPoint(choice, models[choice], quality, values))
    info = {
        "queries": len(scored),
        "query_ids": [q.query_id for q in scored],
        "judged": qrels is not None,
        "metric": name,
        **({"reference": str(reference)} if qrels is None else {}),
        **(dev or {}),
    }
    result = OperatingPoints(
        points,
        name,
        pipeline={
            "index": str(executor.index),
            "rerank": list(executor.kinds),
            "dipair": executor.dipair_model if "dipair" in executor.kinds else None,
            "ranker": executor.ranker_model if "ranker" in executor.kinds else None,
            "k": k,
            "batch_sizes": sizes,
            "repeats": repeats,
        },
        dev=info,
        machine=machine(),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    frontier = ", ".join(str(p.choice) for p in result.frontier)
    say(f"profiled {len(points)} choices on {len(scored)} queries; frontier: {frontier}")
    return result


def pseudo_queries(executor: PipelineExecutor, count: int = 16, words: int = 8) -> list[Query]:
    """``count`` queries cut from passages spread over the index's corpus (their first
    ``words`` words): something to time and compare choices on when no topics are given."""
    from elasticir.data.corpus import iter_corpus

    if executor.first.corpus is None:
        raise ValueError(f"{executor.index}: the index does not name its corpus")
    total = int(executor.first.searcher.index.meta.get("num_passages", 0)) or count
    step = max(1, total // count)
    picked: list[Query] = []
    for i, passage in enumerate(iter_corpus(executor.first.corpus)):
        if i % step == 0:
            text = " ".join(passage.encoder_text().split()[:words])
            if text:
                picked.append(Query(f"pseudo{len(picked)}", text))
            if len(picked) == count:
                break
    if not picked:
        raise ValueError(f"{executor.first.corpus}: no passage text to make queries from")
    return picked


def quick_profile(
    executor: PipelineExecutor,
    choices: Sequence[Choice],
    *,
    batch_sizes: Sequence[int] = (1, 4, 16),
    say: Callable[[str], None] = print,
) -> OperatingPoints:
    """A brief profile for a server started without a points file (see the module
    docstring): its costs are rough and its quality is ``overlap@10``, not a judged metric."""
    queries = pseudo_queries(executor, max(batch_sizes))
    say(
        f"no points file: profiling {len(choices)} choices briefly on {len(queries)} "
        f"pseudo-queries from the corpus (quality = {OVERLAP} with the most expensive choice; "
        "run `elasticir profile` with judged topics for real operating points)"
    )
    return profile_pipeline(
        executor,
        choices,
        queries,
        batch_sizes=batch_sizes,
        repeats=1,
        say=say,
        dev={"pseudo_queries": True},
    )
