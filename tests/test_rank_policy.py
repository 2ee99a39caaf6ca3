"""The policies that read first-stage ranks. The rank-aware exit policy: an exit classifier
that reads the candidate's first-stage rank, fitted without labels, calibrated by
Learn-then-Test on queries it was not fitted on, and run for real by the ranker, with exited
candidates pruned below the ones that went deeper. The calibrated list cutoff: score only the
first stage's top R (no early exit), the rest never encoded and kept in first-stage order
below; R calibrated by Learn-then-Test like an exit threshold.

Synthetic records test the statistics; the packaged MiniLM with untrained exit heads tests
the computation (one torch thread).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from elasticir.compute.levels import Level
from elasticir.data.records import Passage, Query
from elasticir.rerank.pipeline import Rerank, RunFile
from elasticir.rerank.policies import (
    CUTOFFS,
    PRUNE_GAP,
    CutoffPolicy,
    PolicyFamily,
    RankPolicy,
    calibrate_records,
    evaluate_policy,
    first_stage_ranks,
    fit_rank_exits,
    parse_policy,
    query_losses,
    simulate,
)
from elasticir.rerank.ranker import (
    ElasticRanker,
    LayerRecords,
    RankerScorer,
    UntrainedExitsWarning,
    cost_summary,
    rerank_run,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WEIGHTS = ((1.0, 0.5, -2.0), (0.5, 1.0, -1.5))


def _records(n_queries: int, rng: np.random.Generator, per: int = 20) -> LayerRecords:
    """Three layers, ``per`` candidates a query in first-stage order. The deepest exit's
    score follows the first-stage order with noise; layer 1 is noise; layer 2 half and half."""
    ranks = np.tile(np.arange(1, per + 1, dtype=np.float64), n_queries)
    deepest = -np.log(ranks) + rng.normal(0, 0.4, len(ranks))
    layer_1 = rng.normal(0, 1, len(ranks))
    layer_2 = 0.5 * deepest + 0.5 * rng.normal(0, 1, len(ranks))
    n = len(ranks)
    return LayerRecords(
        scores=np.stack([layer_1, layer_2, deepest], 1).astype(np.float32),
        saturation=np.ones((n, 3), dtype=np.float32),
        classifier=None,
        layer_cost=np.full(n, 100, dtype=np.int64),
        full_cost=np.full(n, 600, dtype=np.int64),
        level=Level("L3"),
        num_layers=6,
    )


def test_rank_policy_is_a_value_whose_spec_carries_its_weights() -> None:
    policy = RankPolicy(0.05, WEIGHTS, min_layer=2)
    namespace = {"RankPolicy": RankPolicy}
    assert eval(repr(policy), namespace) == policy  # noqa: S307
    assert parse_policy(policy.spec) == policy and hash(parse_policy(policy.spec)) == hash(policy)
    assert policy.spec.startswith("rank:0.05,w=1.0:0.5:-2.0/0.5:1.0:-1.5")
    assert policy.spec.endswith(",min=2")
    exact = RankPolicy(0.1, ((0.1 + 0.2, -1 / 3, 1e-17),))
    assert parse_policy(exact.spec) == exact  # floats round-trip exactly
    assert policy.uses_ranks and policy.prunes
    for bad in ("rank:0.05", "margin:0.5,w=1:2:3", "rank:0.05,w=1:2", "rank:0.05,w=a:b:c"):
        with pytest.raises(ValueError):
            parse_policy(bad)
    with pytest.raises(ValueError, match="finite"):
        RankPolicy(0.1, ((float("nan"), 0.0, 0.0),))
    with pytest.raises(ValueError, match="needs 2"):
        RankPolicy(0.1, WEIGHTS[:1]).check(3)
    with pytest.raises(ValueError, match="first-stage rank"):
        policy.exits(2, torch.zeros(3))
    with pytest.raises(ValueError, match="fitted exit weights"):
        PolicyFamily("rank").policy(0.1)
    with pytest.raises(ValueError, match="only the rank family"):
        PolicyFamily("margin", weights=WEIGHTS)
    # p = sigmoid(0.5 + 1.0 * score - 1.5 ln(rank)) after layer 2
    scores, ranks = torch.tensor([0.0, 0.0, 2.0]), torch.tensor([1.0, 20.0, 20.0])
    expected = torch.sigmoid(0.5 + scores.double() - 1.5 * torch.log(ranks.double()))
    torch.testing.assert_close(policy.probability(2, scores, ranks), expected)
    assert policy.exits(2, scores, ranks=ranks).tolist() == (expected < 0.05).tolist()
    assert policy.exits(1, scores, ranks=ranks).tolist() == [False] * 3  # before min_layer


def test_fitted_exits_read_the_rank_where_the_score_says_nothing() -> None:
    records = _records(300, np.random.default_rng(0))
    offsets = np.arange(0, records.scores.shape[0] + 1, 20)
    weights = fit_rank_exits(records, offsets)
    assert len(weights) == 2
    (_, noise_slope, rank_slope_1), (_, slope_2, rank_slope_2) = weights
    assert rank_slope_1 < -2.0 and abs(noise_slope) < 0.2  # layer 1 is noise: the rank decides
    assert slope_2 > 0.5 and rank_slope_2 < 0  # layer 2 carries signal too
    # the fit separates the deepest exit's top 10 from the rest
    target = np.zeros(len(records.scores), dtype=bool)
    for a in offsets[:-1]:
        target[a + np.argsort(-records.scores[a : a + 20, 2], kind="stable")[:10]] = True
    ranks = torch.from_numpy(first_stage_ranks(offsets).astype(np.float64))
    p = RankPolicy(0.5, weights).probability(1, torch.from_numpy(records.scores[:, 0]), ranks)
    p = p.numpy()
    assert p[target].mean() > 0.7 > 0.3 > p[~target].mean()
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_rank_exits(records, offsets, k=20)


def test_rank_calibration_fits_on_some_queries_and_tests_on_the_others() -> None:
    rng = np.random.default_rng(3)
    records = _records(300, rng)
    offsets = np.arange(0, records.scores.shape[0] + 1, 20)
    delta = 0.05
    result = calibrate_records(records, offsets, "rank", delta=delta, epsilon=0.1)
    assert result.fit_queries == 100 and result.n_queries == 200 and result.n_pairs == 4000
    assert result.chosen is not None and result.speedup > 1.3 and result.risk <= delta
    fit_rows = np.concatenate([np.arange(q * 20, q * 20 + 20) for q in range(0, 300, 3)])
    fit_offsets = np.arange(0, len(fit_rows) + 1, 20)
    import dataclasses

    fit_records = dataclasses.replace(
        records,
        scores=records.scores[fit_rows],
        saturation=records.saturation[fit_rows],
        layer_cost=records.layer_cost[fit_rows],
        full_cost=records.full_cost[fit_rows],
    )
    assert isinstance(result.policy, RankPolicy)
    assert result.policy.weights == fit_rank_exits(fit_records, fit_offsets)
    assert result.thresholds[0] == 0.0 and result.speedups[0] == 1.0  # 0 never exits
    json.dumps(result.to_dict())
    assert result.to_dict()["fit_queries"] == 100
    # the guarantee carries to new queries from the same distribution
    fresh = _records(400, np.random.default_rng(4))
    fresh_offsets = np.arange(0, fresh.scores.shape[0] + 1, 20)
    exits, scores = simulate(result.policy, fresh, first_stage_ranks(fresh_offsets))
    risk = query_losses(scores, fresh.scores[:, 2], fresh_offsets).mean()
    assert risk <= delta and exits.mean() < 3.0
    # pruned candidates sit below every candidate that went deeper
    for a in fresh_offsets[:-1:50]:
        layers, values = exits[a : a + 20], scores[a : a + 20]
        for shallow in range(1, 3):
            if (layers == shallow).any() and (layers > shallow).any():
                assert values[layers == shallow].max() < values[layers > shallow].min()
    # with weights given, every query is a test query
    given = calibrate_records(
        records, offsets, PolicyFamily("rank", weights=result.policy.weights), delta, 0.1
    )
    assert given.fit_queries == 0 and given.n_queries == 300
    with pytest.raises(ValueError, match="needs one first-stage rank"):
        simulate(result.policy, fresh)
    with pytest.raises(ValueError, match="at least 3"):
        calibrate_records(_records(2, rng), offsets[:3], "rank", delta=delta, epsilon=0.1)


def _cut_records(n_queries: int, rng: np.random.Generator, per: int = 100) -> LayerRecords:
    """Two layers, ``per`` candidates a query in first-stage order; the deepest exit's score
    follows the first-stage order with noise, so its top 10 come mostly from the top 30."""
    ranks = np.tile(np.arange(1, per + 1, dtype=np.float64), n_queries)
    deepest = -np.log(ranks) + rng.normal(0, 0.5, len(ranks))
    n = len(ranks)
    return LayerRecords(
        scores=np.stack([rng.normal(0, 1, n), deepest], 1).astype(np.float32),
        saturation=np.ones((n, 2), dtype=np.float32),
        classifier=None,
        layer_cost=np.full(n, 100, dtype=np.int64),
        full_cost=np.full(n, 600, dtype=np.int64),
        level=Level("L2"),
        num_layers=6,
    )


def test_cutoff_policy_is_a_value_with_a_spec() -> None:
    policy = CutoffPolicy(30)
    assert eval(repr(policy), {"CutoffPolicy": CutoffPolicy}) == policy  # noqa: S307
    assert policy.spec == "cutoff:30" and parse_policy("cutoff:30") == policy
    assert parse_policy(" cutoff:30.0 ") == policy  # a whole number written as a float
    assert policy.uses_ranks and policy.prunes and not policy.exits_early
    assert policy.skips(np.array([1, 30, 31, 100])).tolist() == [False, False, True, True]
    assert not policy.exits(2, torch.randn(4), ranks=torch.tensor([1.0, 2, 40, 50])).any()
    for bad in ("cutoff:0", "cutoff:2.5", "cutoff:10/20", "cutoff:10,min=2", "cutoff:-3"):
        with pytest.raises(ValueError):
            parse_policy(bad)
    for bad_value in (0, 2.5, True, float("inf"), "30"):
        with pytest.raises(ValueError, match="whole number"):
            CutoffPolicy(bad_value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no exit layers"):
        PolicyFamily("cutoff", min_layer=2)
    family = PolicyFamily("cutoff")
    assert family.default_thresholds() == tuple(float(c) for c in CUTOFFS)
    assert family.is_ordered(family.default_thresholds()) and not family.increasing
    assert family.policy(50.0) == CutoffPolicy(50)


def test_simulated_cutoff_keeps_the_first_stage_order_below_the_scored() -> None:
    records = _cut_records(3, np.random.default_rng(0), per=40)
    ranks = first_stage_ranks(np.arange(0, 121, 40))
    exits, scores = simulate(CutoffPolicy(15), records, ranks)
    assert exits.tolist() == ([2] * 15 + [0] * 25) * 3
    np.testing.assert_array_equal(scores[ranks <= 15], records.scores[ranks <= 15, 1])
    for a in (0, 40, 80):
        head, tail = scores[a : a + 15], scores[a + 15 : a + 40]
        assert tail.max() < head.min() - PRUNE_GAP  # below every scored candidate
        assert np.all(np.diff(tail) < 0)  # in first-stage order
    with pytest.raises(ValueError, match="first-stage rank"):
        simulate(CutoffPolicy(15), records)


def test_cutoff_calibration_holds_on_fresh_queries() -> None:
    records = _cut_records(200, np.random.default_rng(1))
    offsets = np.arange(0, records.scores.shape[0] + 1, 100)
    delta = 0.05
    result = calibrate_records(records, offsets, "cutoff", delta=delta, epsilon=0.1)
    assert isinstance(result.policy, CutoffPolicy) and result.fit_queries == 0
    assert result.n_queries == 200 and result.risk <= delta
    # 1000 and 500 cut nothing from 100-long lists; the chosen one cuts
    assert result.risks[:6] == (0.0,) * 6 and result.speedups[:6] == (1.0,) * 6
    assert 10 < result.policy.cutoff < 100
    assert result.speedup == pytest.approx(100 / result.policy.cutoff)
    assert result.mean_exit_layers[result.chosen] == pytest.approx(2 * result.policy.cutoff / 100)
    assert json.loads(json.dumps(result.to_dict()))["policy"] == result.policy.spec
    # one step shorter than the chosen cutoff is not shown safe (fixed-sequence testing)
    assert result.chosen + 1 == len(CUTOFFS) or result.pvalues[result.chosen + 1] > 0.1
    fresh = _cut_records(300, np.random.default_rng(2))
    fresh_offsets = np.arange(0, fresh.scores.shape[0] + 1, 100)
    _, scores = simulate(result.policy, fresh, first_stage_ranks(fresh_offsets))
    assert query_losses(scores, fresh.scores[:, 1], fresh_offsets).mean() <= delta
    with pytest.raises(ValueError, match="strictly decreasing"):
        calibrate_records(records, offsets, "cutoff", delta, 0.1, thresholds=[10, 50])


@pytest.fixture(scope="module")
def ranker() -> ElasticRanker:
    with pytest.warns(UntrainedExitsWarning, match="no trained exit heads"):
        return ElasticRanker(max_length=64, batch_size=4)


QUERY = "boiling point of water at altitude"
PASSAGES = [
    "Water boils at a lower temperature at high altitude because the air pressure is lower.",
    "At sea level water boils at 100 degrees Celsius.",
    "A cat is a small domesticated carnivorous mammal with soft fur.",
    "Hamlet is a tragedy written by William Shakespeare.",
    "The stock market fell sharply today.",
    "Paris is the capital and most populous city of France.",
    "Mount Everest is the highest mountain above sea level.",
    "Pressure cookers raise the boiling point of water.",
]


def test_the_ranker_prunes_exactly_as_simulated(ranker: ElasticRanker) -> None:
    n = len(PASSAGES)
    queries, ranks = [QUERY] * n, np.arange(1, n + 1)
    records = ranker.layer_records(queries, PASSAGES, batch_size=3)
    # exits after layer 2 for ranks >= 6, after layer 4 for ranks 4-5, whatever the scores
    above = [(10.0, 0.0, -10.0 / np.log(cut)) for cut in (5.5, 5.5, 5.5, 3.5, 3.5)]
    policy = RankPolicy((0.0, 0.5, 0.0, 0.5, 0.0), tuple(above))  # p < 0.5 iff rank > cut
    out = ranker.score_pairs(queries, PASSAGES, policy=policy, ranks=ranks, batch_size=3)
    expected_layers, expected_scores = simulate(policy, records, ranks)
    assert out.exit_layers.tolist() == [6, 6, 6, 4, 4, 2, 2, 2] == expected_layers.tolist()
    np.testing.assert_allclose(out.scores, expected_scores, atol=1e-3)
    np.testing.assert_allclose(out.scores[5:], records.scores[5:, 1] - 4 * PRUNE_GAP, atol=1e-3)
    order = np.argsort(-out.scores)
    assert set(order[:3]) == {0, 1, 2} and set(order[3:5]) == {3, 4}
    assert out.speedup == pytest.approx(6 * n / (3 * 6 + 2 * 4 + 3 * 2), rel=0.05)
    # score() reads the passages' order as their ranks
    direct = ranker.score(QUERY, PASSAGES, policy=policy, batch_size=3)
    np.testing.assert_array_equal(direct.exit_layers, out.exit_layers)
    shifted = ranker.score(QUERY, PASSAGES[:3], policy=policy, first_rank=6)
    assert shifted.exit_layers.tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="first-stage rank"):
        ranker.score_pairs(queries, PASSAGES, policy=policy)
    with pytest.raises(ValueError, match="1-based"):
        ranker.score_pairs(queries, PASSAGES, policy=policy, ranks=np.zeros(n))
    with pytest.raises(ValueError, match="1-based"):
        ranker.score_pairs(queries, PASSAGES, policy=policy, ranks=ranks[:3])
    # a cascade that splits a query's candidates into calls still passes the right ranks
    corpus = {f"d{i}": Passage(f"d{i}", text) for i, text in enumerate(PASSAGES)}
    first = RunFile({"q": {f"d{i}": float(-i) for i in range(n)}})
    scorer = RankerScorer(ranker, policy=policy)
    assert scorer.reads_ranks and not RankerScorer(ranker).reads_ranks
    result = (first >> Rerank(scorer, corpus, batch=3))([Query("q", QUERY)])
    run = result.run
    np.testing.assert_allclose([run["q"][f"d{i}"] for i in range(n)], out.scores, atol=1e-3)
    costs = cost_summary(result.reports["ranker"])
    assert costs["mean_exit_layer"] == pytest.approx(out.exit_layers.mean())
    # rerank_run takes the ranks from the run
    reranked, output = rerank_run(
        ranker,
        {"q": {f"d{i}": float(-i) for i in range(n)}},
        {"q": QUERY},
        {f"d{i}": text for i, text in enumerate(PASSAGES)},
        policy=policy,
    )
    np.testing.assert_array_equal(output.exit_layers, out.exit_layers)
    assert set(reranked["q"]) == set(corpus)


def test_evaluate_policy_gives_the_rank_policy_its_ranks(ranker: ElasticRanker) -> None:
    weights = tuple((10.0, 0.0, -10.0 / np.log(5.5)) for _ in range(5))
    policy = RankPolicy(0.5, weights, min_layer=3)
    evaluation = evaluate_policy(ranker, policy, [(QUERY, PASSAGES)])
    assert evaluation.mean_exit_layer == pytest.approx((5 * 6 + 3 * 3) / 8)
    assert 0.0 <= evaluation.risk <= 1.0 and evaluation.speedup > 1.0


def test_the_ranker_never_encodes_the_cut_candidates(ranker: ElasticRanker) -> None:
    n = len(PASSAGES)
    queries, ranks = [QUERY] * n, np.arange(1, n + 1)
    policy = CutoffPolicy(4)
    out = ranker.score_pairs(queries, PASSAGES, policy=policy, ranks=ranks, batch_size=3)
    full = ranker.score_pairs(queries, PASSAGES, batch_size=3)
    assert out.exit_layers.tolist() == [6, 6, 6, 6, 0, 0, 0, 0]
    np.testing.assert_allclose(out.scores[:4], full.scores[:4], atol=1e-4)
    assert out.flops[4:].tolist() == [0, 0, 0, 0]
    assert out.flops[:4].tolist() == full.flops[:4].tolist()
    assert out.speedup == pytest.approx(full.full_flops.sum() / full.flops[:4].sum())
    np.testing.assert_array_equal(out.full_flops, full.full_flops)
    records = ranker.layer_records(queries, PASSAGES, batch_size=3)
    expected_layers, expected_scores = simulate(policy, records, ranks)
    np.testing.assert_array_equal(out.exit_layers, expected_layers)
    np.testing.assert_allclose(out.scores, expected_scores, atol=1e-3)
    order = np.argsort(-out.scores, kind="stable")
    assert order[4:].tolist() == [4, 5, 6, 7]
    # the model sees only the kept pairs: count the rows that enter the encoder
    seen: list[int] = []
    start = ranker.net.start

    def counting_start(input_ids, *rest):  # type: ignore[no-untyped-def]
        seen.append(int(input_ids.shape[0]))
        return start(input_ids, *rest)

    ranker.net.start = counting_start  # type: ignore[method-assign]
    try:
        direct = ranker.score(QUERY, PASSAGES, policy="cutoff:4", batch_size=3)
    finally:
        del ranker.net.start
    assert sum(seen) == 4 and direct.exit_layers.tolist() == [6] * 4 + [0] * 4
    with pytest.raises(ValueError, match="first-stage rank"):
        ranker.score_pairs(queries, PASSAGES, policy=policy)
    # a cascade split into calls keeps the query's ranks: the second call starts at rank 4
    corpus = {f"d{i}": Passage(f"d{i}", text) for i, text in enumerate(PASSAGES)}
    first = RunFile({"q": {f"d{i}": float(-i) for i in range(n)}})
    scorer = RankerScorer(ranker, policy=policy)
    assert scorer.reads_ranks
    result = (first >> Rerank(scorer, corpus, batch=3))([Query("q", QUERY)])
    run = result.run
    np.testing.assert_allclose([run["q"][f"d{i}"] for i in range(n)], out.scores, atol=1e-3)
    assert cost_summary(result.reports["ranker"])["speedup"] == pytest.approx(out.speedup)
    reranked, output = rerank_run(
        ranker,
        {"q": {f"d{i}": float(-i) for i in range(n)}},
        {"q": QUERY},
        {f"d{i}": text for i, text in enumerate(PASSAGES)},
        policy="cutoff:2",
    )
    assert output.exit_layers.tolist() == [6, 6, 0, 0, 0, 0, 0, 0] and set(reranked["q"]) == set(
        corpus
    )
