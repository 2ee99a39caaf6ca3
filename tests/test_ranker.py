"""ElasticRanker: layer stepping, levels, per-candidate early exit, threads, files, policies and
Learn-then-Test calibration.

The ranker is the packaged all-MiniLM-L6-v2 with initialised (untrained) exit heads: every
property tested here is about computation, not about ranking quality. One torch thread.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from elasticir.compute.levels import FULL, Level
from elasticir.data import load_passages, read_run, read_topics
from elasticir.data.records import Passage, Query
from elasticir.models.elastic import elastic_forward, embed, layer_flops, layer_step
from elasticir.rerank.pipeline import Rerank, RunFile
from elasticir.rerank.policies import (
    CalibrationQuery,
    ConfidencePolicy,
    EntropyPolicy,
    FixedLevel,
    PolicyFamily,
    binary_entropy,
    calibrate,
    calibrate_families,
    calibrate_records,
    calibration_queries,
    consistency_grades,
    evaluate_policy,
    hoeffding_bentkus_pvalue,
    hoeffding_pvalue,
    learn_then_test,
    ndcg_at_k,
    parse_policy,
    simulate,
)
from elasticir.rerank.ranker import (
    ElasticRanker,
    LayerRecords,
    RankerScorer,
    UntrainedExitsWarning,
    cost_summary,
    encode_pairs,
    rerank_run,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUERIES = ["what is a cat", "boiling point of water at altitude", "who wrote hamlet"]
PASSAGES = [
    "A cat is a small domesticated carnivorous mammal with soft fur and retractable claws.",
    "Water boils at a lower temperature at high altitude because the air pressure is lower.",
    "Hamlet is a tragedy written by William Shakespeare sometime between 1599 and 1601.",
    "The stock market fell sharply today.",
    "Paris is the capital and most populous city of France, on the river Seine.",
    "Cats sleep for twelve to sixteen hours a day.",
    "Mount Everest is the highest mountain above sea level.",
]
PAIRS_Q = [q for q in QUERIES for _ in PASSAGES]
PAIRS_P = PASSAGES * len(QUERIES)


@pytest.fixture(scope="module")
def ranker() -> ElasticRanker:
    with pytest.warns(UntrainedExitsWarning, match="no trained exit heads"):
        return ElasticRanker(max_length=64, batch_size=8)


def _features(ranker: ElasticRanker, queries: list[str], passages: list[str]) -> dict:
    ids, types = encode_pairs(ranker.tokenizer, queries, passages, ranker.max_length, True)
    longest = max(map(len, ids))
    input_ids = torch.zeros(len(ids), longest, dtype=torch.long)
    token_types = torch.zeros_like(input_ids)
    mask = torch.zeros_like(input_ids)
    for j, (row, kinds) in enumerate(zip(ids, types)):
        input_ids[j, : len(row)] = torch.tensor(row)
        token_types[j, : len(row)] = torch.tensor(kinds)
        mask[j, : len(row)] = 1
    return {"input_ids": input_ids, "token_type_ids": token_types, "attention_mask": mask}


# ------------------------------------------------------------------ inputs and layer stepping


def test_pair_encoding_truncates_the_passage(ranker: ElasticRanker) -> None:
    tokenizer = ranker.tokenizer
    ids, types = encode_pairs(tokenizer, ["who wrote hamlet"], [PASSAGES[2] * 10], 32, True)
    assert len(ids[0]) == 32 and ids[0][0] == tokenizer.cls_token_id
    query = tokenizer("who wrote hamlet", add_special_tokens=False)["input_ids"]
    assert ids[0][1 : 1 + len(query)] == query  # the query is whole
    assert ids[0][1 + len(query)] == tokenizer.sep_token_id and ids[0][-1] == tokenizer.sep_token_id
    assert types[0] == [0] * (len(query) + 2) + [1] * (32 - len(query) - 2)
    # same ids as the tokenizer's own pair encoding when nothing is cut
    ours, _ = encode_pairs(tokenizer, [QUERIES[0]], [PASSAGES[0]], 64, True)
    assert ours[0] == tokenizer(QUERIES[0], PASSAGES[0])["input_ids"]
    # an overlong query is cut to leave a long passage half of the room
    long_ids, _ = encode_pairs(tokenizer, ["cat " * 100], ["dog " * 100], 64, True)
    assert len(long_ids[0]) == 64 and long_ids[0].count(tokenizer.sep_token_id) == 2


def test_layer_stepping_equals_hugging_face_hidden_states(ranker: ElasticRanker) -> None:
    encoder = ranker.net.encoder
    features = _features(ranker, PAIRS_Q[:6], PAIRS_P[:6])
    mask = features["attention_mask"].bool()
    with torch.inference_mode():
        reference = encoder(**features, output_hidden_states=True).hidden_states
        hidden = embed(encoder, features["input_ids"], features["token_type_ids"])
        torch.testing.assert_close(hidden, reference[0])
        for i in range(ranker.num_layers):
            hidden = layer_step(encoder, i, hidden, features["attention_mask"], FULL)
            torch.testing.assert_close(hidden[mask], reference[i + 1][mask], atol=2e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="outside level"):
        layer_step(encoder, 3, hidden, features["attention_mask"], "L3")
    assert layer_flops(ranker.config, "L4-W50", 40) * 4 == ranker.level_flops("L4-W50", 40)


@pytest.mark.parametrize("level", ["L3-W50", "L6-W75", "L2"])
def test_a_levels_scores_equal_its_sub_network_alone(ranker: ElasticRanker, level: str) -> None:
    output = ranker.score_pairs(PAIRS_Q, PAIRS_P, level=level)
    depth = Level(level).depth
    assert output.scores.dtype == np.float32 and output.exit_layers.tolist() == [depth] * 21
    alone = []
    with torch.inference_mode():
        for q, p in zip(PAIRS_Q, PAIRS_P):  # one pair at a time: no batch, no padding
            f = _features(ranker, [q], [p])
            hidden = elastic_forward(
                ranker.net.encoder,
                f["input_ids"],
                f["attention_mask"],
                level,
                token_type_ids=f["token_type_ids"],
            )
            alone.append(float(ranker.net.heads(depth - 1, hidden[:, 0])[0]))
    np.testing.assert_allclose(output.scores, alone, atol=2e-5)
    ratio = output.flops_ratio
    assert ratio == pytest.approx(ranker.level_flops(level) / ranker.level_flops(FULL), rel=1e-6)


def test_a_policy_exiting_everything_at_layer_2_gives_the_layer_2_scores(
    ranker: ElasticRanker,
) -> None:
    everything = EntropyPolicy(1.0, min_layer=2)  # binary entropy is < 1 unless score == 0
    early = ranker.score_pairs(PAIRS_Q, PAIRS_P, policy=everything)
    level_2 = ranker.score_pairs(PAIRS_Q, PAIRS_P, level="L2")
    assert early.exit_layers.tolist() == [2] * 21
    np.testing.assert_array_equal(early.scores, level_2.scores)
    np.testing.assert_array_equal(early.flops, level_2.flops)
    assert early.speedup == pytest.approx(3.0)
    assert early.policy == everything and early.level == FULL


def test_exited_rows_are_removed_and_the_rest_run_on(ranker: ElasticRanker) -> None:
    records = ranker.layer_records(PAIRS_Q, PAIRS_P, batch_size=8)
    full = ranker.score_pairs(PAIRS_Q, PAIRS_P)
    np.testing.assert_allclose(records.scores[:, -1], full.scores, atol=1e-5)
    # per-layer margin thresholds: about half the pairs leave after layer 2, a few after 4
    margins = np.abs(2 / (1 + np.exp(-records.scores.astype(np.float64))) - 1)
    cut2 = float(np.median(margins[:, 1]))
    cut4 = float(np.quantile(margins[:, 3], 0.8))
    policy = ConfidencePolicy("margin", (1.0, cut2, 1.0, cut4, 1.0), min_layer=2)
    out = ranker.score_pairs(PAIRS_Q, PAIRS_P, policy=policy, batch_size=8)
    expected_layers, expected_scores = simulate(policy, records)
    np.testing.assert_array_equal(out.exit_layers, expected_layers)
    assert {2, 6} <= set(out.exit_layers.tolist())
    np.testing.assert_allclose(out.scores, expected_scores, atol=1e-5)
    np.testing.assert_array_equal(out.flops, out.exit_layers * records.layer_cost)
    assert out.total_flops < full.total_flops and out.speedup > 1.0
    # at reduced width the cost per layer shrinks too
    narrow = ranker.score_pairs(PAIRS_Q, PAIRS_P, level="L6-W50", policy=policy)
    assert narrow.total_flops < out.total_flops


def test_kept_states_are_what_the_exit_heads_read(ranker: ElasticRanker) -> None:
    plain = ranker.layer_records(PAIRS_Q, PAIRS_P, level="L4-W75", batch_size=5)
    kept = ranker.layer_records(PAIRS_Q, PAIRS_P, level="L4-W75", batch_size=5, states=True)
    assert plain.states is None
    assert kept.states.shape == (21, 5, ranker.config.hidden_size)
    np.testing.assert_array_equal(kept.scores, plain.scores)
    states = torch.from_numpy(kept.states)
    with torch.inference_mode():
        heads = torch.stack([ranker.net.heads(i, states[:, i + 1]) for i in range(4)], 1)
        cosine = F.cosine_similarity(states[:, 1:], states[:, :-1], dim=-1)
    np.testing.assert_allclose(heads.numpy(), kept.scores, atol=1e-5)
    np.testing.assert_allclose(cosine.numpy(), kept.saturation, atol=1e-5)


def test_exited_rows_leave_the_batch(
    ranker: ElasticRanker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counts the rows each real layer call receives: pairs that exited are not computed."""
    import elasticir.models.ranker.net as module

    rows_per_layer = np.zeros(ranker.num_layers, dtype=np.int64)
    real_step = module.layer_step

    def counting_step(model, index, hidden, mask, level, attention_bias=None):  # noqa: ANN001, ANN202
        rows_per_layer[index] += hidden.shape[0]
        return real_step(model, index, hidden, mask, level, attention_bias)

    monkeypatch.setattr(module, "layer_step", counting_step)
    records = ranker.layer_records(PAIRS_Q, PAIRS_P)
    cut = float(np.median(records.saturation[:, 1]))
    policy = ConfidencePolicy("saturation", cut, min_layer=2)
    rows_per_layer[:] = 0
    out = ranker.score_pairs(PAIRS_Q, PAIRS_P, policy=policy, batch_size=8)
    still_running = [(out.exit_layers >= layer).sum() for layer in range(1, 7)]
    assert rows_per_layer.tolist() == still_running
    assert still_running[0] == 21 and still_running[2] < 21  # some left after layer 2


def test_saturation_policy_runs_and_matches_the_records(ranker: ElasticRanker) -> None:
    records = ranker.layer_records(PAIRS_Q, PAIRS_P, level="L4-W75", batch_size=5)
    assert records.depth == 4 and records.classifier is None
    threshold = float(np.median(records.saturation[:, 2]))
    policy = ConfidencePolicy("saturation", threshold, min_layer=3)
    out = ranker.score_pairs(PAIRS_Q, PAIRS_P, level="L4-W75", policy=policy, batch_size=5)
    layers, scores = simulate(policy, records)
    np.testing.assert_array_equal(out.exit_layers, layers)
    np.testing.assert_allclose(out.scores, scores, atol=1e-5)
    assert set(layers.tolist()) == {3, 4}
    with pytest.raises(ValueError, match="exit classifier"):
        ranker.score_pairs(PAIRS_Q, PAIRS_P, policy="classifier:0.9")


def test_two_threads_at_two_levels_match_each_alone(ranker: ElasticRanker) -> None:
    jobs = [("L6-W50", None), ("full", EntropyPolicy(0.9999, min_layer=3))]
    alone = [ranker.score_pairs(PAIRS_Q, PAIRS_P, level=lv, policy=pol) for lv, pol in jobs]

    def run(job: tuple[str, EntropyPolicy | None]) -> list:
        return [ranker.score_pairs(PAIRS_Q, PAIRS_P, level=job[0], policy=job[1]) for _ in range(3)]

    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(run, jobs))
    for expected, results in zip(alone, together):
        for got in results:
            np.testing.assert_array_equal(got.scores, expected.scores)
            np.testing.assert_array_equal(got.exit_layers, expected.exit_layers)


def test_levels_score_and_rerank_run(ranker: ElasticRanker) -> None:
    assert ranker.levels[0] == FULL and ranker.widths == (100, 75, 50)
    assert ranker.check_level("L1-W50") == Level("L1-W50")  # every depth has an exit
    with pytest.raises(ValueError, match="not trained"):
        ranker.check_level("L6-W60")
    with pytest.raises(ValueError, match="different amounts"):
        ranker.check_level("L6-H100-F50")  # heads and FFN cut apart: not a ranker level
    with pytest.raises(ValueError, match="layers"):
        ranker.check_level("L7")
    one = ranker.score(QUERIES[1], PASSAGES, level="L4")
    np.testing.assert_allclose(
        one.scores, ranker.score_pairs(PAIRS_Q[7:14], PAIRS_P[7:14], "L4").scores, atol=1e-6
    )
    fixed = ranker.score(QUERIES[1], PASSAGES, policy="L4")
    np.testing.assert_array_equal(fixed.scores, one.scores)
    assert fixed.policy == FixedLevel(Level("L4"))
    with pytest.raises(ValueError, match="two levels"):
        ranker.score(QUERIES[1], PASSAGES, level="L3", policy="L4")
    run = {"q1": {f"d{i}": float(-i) for i in range(len(PASSAGES))}, "q9": {"d0": 1.0}}
    texts = {f"d{i}": p for i, p in enumerate(PASSAGES)}
    reranked, output = rerank_run(ranker, run, {"q1": QUERIES[1]}, texts, depth=4, level="L4")
    assert list(reranked) == ["q1"] and sorted(reranked["q1"]) == ["d0", "d1", "d2", "d3"]
    got = [reranked["q1"][f"d{i}"] for i in range(4)]
    np.testing.assert_allclose(got, one.scores[:4], atol=1e-6)  # other batches: float noise
    assert len(output) == 4
    empty = ranker.score_pairs([], [])
    assert len(empty) == 0 and empty.speedup == 1.0


def test_ranker_scorer_in_a_cascade(ranker: ElasticRanker) -> None:
    corpus = {f"d{i}": Passage(f"d{i}", text) for i, text in enumerate(PASSAGES)}
    first = RunFile({"q1": {f"d{i}": float(-i) for i in range(len(PASSAGES))}}, corpus=None)
    scorer = RankerScorer(ranker, level="L6-W50", policy="entropy:1.0,min=3")
    result = (first % 5 >> Rerank(scorer, corpus))([Query("q1", QUERIES[1])])
    run = result.run
    assert sorted(run["q1"]) == ["d0", "d1", "d2", "d3", "d4"]
    direct = ranker.score(QUERIES[1], PASSAGES[:5], level="L6-W50", policy="entropy:1.0,min=3")
    np.testing.assert_allclose([run["q1"][f"d{i}"] for i in range(5)], direct.scores, atol=1e-6)
    report = result.reports["ranker"]  # what this call cost, returned with its run
    costs = cost_summary(report)
    assert report["pairs scored"] == 5 and costs["mean_exit_layer"] == 3.0
    assert costs["speedup"] == pytest.approx(direct.speedup)
    assert result.compute["ranker"] == "entropy:1,min=3"  # the policy's canonical spec
    # another call may choose another level: the same scorer, nothing kept between calls
    again = (first % 5 >> Rerank(scorer, corpus))([Query("q1", QUERIES[1])], compute="L2-W50")
    at_l2 = ranker.score(QUERIES[1], PASSAGES[:5], level="L2-W50")
    np.testing.assert_allclose(
        [again.run["q1"][f"d{i}"] for i in range(5)], at_l2.scores, atol=1e-6
    )
    assert cost_summary(again.reports["ranker"])["mean_exit_layer"] == 2.0
    with pytest.raises(ValueError, match="exit classifier"):
        RankerScorer(ranker, policy="classifier:0.5")


def test_save_and_load_round_trip(ranker: ElasticRanker, tmp_path: Path) -> None:
    path = ranker.save(tmp_path / "ranker", training={"note": "untrained test copy"})
    manifest = json.loads((path / "elasticir.json").read_text())
    assert manifest["kind"] == "elastic-ranker" and manifest["max_length"] == 64
    assert manifest["levels"] == [str(lv) for lv in ranker.levels]
    assert manifest["exits"]["classifier"] is False
    assert manifest["training"] == {"note": "untrained test copy"}
    assert (path / "exits.safetensors").is_file() and (path / "model.safetensors").is_file()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a saved ranker has its heads: no warning
        loaded = ElasticRanker(path, batch_size=ranker.batch_size)
    assert loaded.heads_trained and loaded.max_length == 64 and loaded.levels == ranker.levels
    expected, got = ranker.net.state_dict(), loaded.net.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    for level in ("full", "L3-W50"):
        np.testing.assert_array_equal(
            loaded.score_pairs(PAIRS_Q, PAIRS_P, level=level).scores,
            ranker.score_pairs(PAIRS_Q, PAIRS_P, level=level).scores,
        )


# ------------------------------------------------------------------ policies


def test_policies_are_values_with_round_tripping_repr_and_spec() -> None:
    namespace = {"EntropyPolicy": EntropyPolicy, "ConfidencePolicy": ConfidencePolicy}
    namespace.update({"FixedLevel": FixedLevel, "Level": Level})
    policies = [
        EntropyPolicy(0.3),
        EntropyPolicy((0.1, 0.2, 0.3, 0.4, 0.5), min_layer=2),
        ConfidencePolicy("margin", 0.9),
        ConfidencePolicy("saturation", 0.99, min_layer=3),
        ConfidencePolicy("classifier", 0.75),
        FixedLevel(Level("L4-W75")),
    ]
    for policy in policies:
        assert eval(repr(policy), namespace) == policy  # noqa: S307
        assert parse_policy(policy.spec) == policy
        assert hash(policy) == hash(parse_policy(policy.spec))
    assert parse_policy("margin:0.9,min=2") == ConfidencePolicy("margin", 0.9, 2)
    assert parse_policy("full") == FixedLevel(FULL)
    for bad in ("entropy:1.5", "margin:x", "speed:0.5", "L2-X4", "margin:0.5,min=0"):
        with pytest.raises(ValueError):
            parse_policy(bad)
    with pytest.raises(ValueError, match="measure"):
        ConfidencePolicy("softmax", 0.5)
    with pytest.raises(ValueError, match="per-layer"):
        EntropyPolicy((0.1, 0.2)).check(6)
    scores = torch.tensor([-20.0, -1.0, 0.0, 1.0, 20.0])
    entropy = EntropyPolicy(0.5).signal(scores)
    assert entropy[2] == pytest.approx(1.0) and entropy[0] < 1e-6 and entropy[4] < 1e-6
    assert EntropyPolicy(0.5).exits(1, scores).tolist() == [True, False, False, False, True]
    assert EntropyPolicy(0.5, min_layer=2).exits(1, scores).tolist() == [False] * 5
    margin = ConfidencePolicy("margin", 0.4)
    assert margin.exits(1, scores).tolist() == [True, True, False, True, True]


# ------------------------------------------------------------------ Learn-then-Test


def test_ndcg_and_consistency_grades() -> None:
    reference = np.array([0.1, 3.0, 2.0, -1.0])
    grades = consistency_grades(reference, k=3)
    assert grades.tolist() == [1.0, 3.0, 2.0, 0.0]
    assert ndcg_at_k(reference, grades, 3) == pytest.approx(1.0)
    assert ndcg_at_k(-reference, grades, 3) < 0.5
    assert ndcg_at_k(reference, np.zeros(4), 3) == 0.0


def test_pvalues_are_monotone_and_hoeffding_bentkus_is_tighter() -> None:
    risks = np.linspace(0, 0.3, 31)
    for bound in (hoeffding_pvalue, hoeffding_bentkus_pvalue):
        p = [bound(float(r), 1000, 0.1) for r in risks]
        assert all(a <= b + 1e-12 for a, b in zip(p, p[1:]))
        assert p[-1] == 1.0 and p[0] < 1e-6
    for r in risks:
        assert hoeffding_bentkus_pvalue(r, 300, 0.1) <= hoeffding_pvalue(r, 300, 0.1) + 1e-12


def test_fixed_sequence_testing_stops_at_the_first_non_rejection() -> None:
    n = 400
    losses = np.zeros((n, 4))
    losses[: int(0.3 * n), 2] = 1.0  # threshold 2 is bad; 3 is fine again but never reached
    risks, pvalues, chosen = learn_then_test(losses, delta=0.1, epsilon=0.05)
    assert risks.tolist() == [0.0, 0.0, 0.3, 0.0]
    assert pvalues[0] <= 0.05 and pvalues[1] <= 0.05 and pvalues[2] > 0.05 and pvalues[3] <= 0.05
    assert chosen == 1
    _, _, none = learn_then_test(np.full((n, 2), 0.5), delta=0.1, epsilon=0.05)
    assert none is None
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        learn_then_test(np.full((3, 2), 1.5), 0.1, 0.1)


def test_learn_then_test_controls_the_risk_over_many_draws() -> None:
    """Nested losses with known risks r_j; over 400 calibration draws the chosen threshold's
    true risk exceeds delta in at most about epsilon of them."""
    rng = np.random.default_rng(0)
    true_risks = np.linspace(0.0, 0.4, 41)
    delta, epsilon, n = 0.1, 0.1, 300
    violations, chosen_risks = 0, []
    for _ in range(400):
        u = rng.random(n)[:, None]
        losses = (u < true_risks[None, :]).astype(float)  # nested: one draw per query
        risks, pvalues, chosen = learn_then_test(losses, delta, epsilon)
        assert np.all(np.diff(pvalues) >= -1e-12)  # nested losses, monotone p-values
        risk = 0.0 if chosen is None else true_risks[chosen]
        violations += risk > delta
        chosen_risks.append(risk)
    assert violations / 400 <= epsilon
    assert np.mean(chosen_risks) > 0.05  # and it is not trivially conservative


def _synthetic_records(n_queries: int, rng: np.random.Generator) -> tuple[LayerRecords, np.ndarray]:
    """Two layers, 10 candidates a query. Layer 2 is the reference; layer 1 ranks a query's
    candidates in reverse and its classifier confidence is 1 - h_q with h_q ~ U(0, 1), so the
    policy 'classifier > t' exits query q's candidates at layer 1 iff h_q < 1 - t."""
    per = 10
    deepest = np.tile(np.arange(per, 0, -1, dtype=np.float32), n_queries)
    hardness = rng.random(n_queries)
    scores = np.stack([-deepest, deepest], axis=1)
    confidence = np.repeat(1 - hardness, per).astype(np.float32)
    classifier = np.stack([confidence, np.ones_like(confidence)], axis=1)
    n = n_queries * per
    records = LayerRecords(
        scores=scores,
        saturation=np.ones((n, 2), dtype=np.float32),
        classifier=classifier,
        layer_cost=np.full(n, 100, dtype=np.int64),
        full_cost=np.full(n, 600, dtype=np.int64),
        level=Level("L2"),
        num_layers=6,
    )
    return records, np.arange(0, n + 1, per)


def test_calibration_on_synthetic_records_respects_delta() -> None:
    rng = np.random.default_rng(1)
    records, offsets = _synthetic_records(400, rng)
    grades = consistency_grades(records.scores[:10, 1])
    reversed_loss = 1 - ndcg_at_k(records.scores[:10, 0], grades)  # loss of an exit at layer 1
    delta = 0.2
    family = PolicyFamily("classifier")
    result = calibrate_records(records, offsets, family, delta=delta, epsilon=0.1)
    assert result.thresholds == family.default_thresholds()
    assert result.chosen is not None and result.threshold is not None
    # true risk of threshold t: reversed_loss * P(h < 1 - t) = reversed_loss * (1 - t)
    true_risk = reversed_loss * (1 - result.threshold)
    assert delta / 2 < true_risk <= delta  # safe, and not trivially conservative
    assert result.risk <= delta
    assert result.policy == ConfidencePolicy("classifier", result.threshold)
    j = result.chosen
    exited = np.mean(np.repeat(records.classifier[::10, 0], 1) > result.threshold)
    assert result.speedups[j] == pytest.approx(2 / (2 - exited))
    assert result.full_speedup == pytest.approx(6 / (2 - exited))
    assert result.mean_exit_layers[0] == 2.0 and result.speedups[0] == 1.0
    assert all(a <= b + 1e-12 for a, b in zip(result.pvalues, result.pvalues[1:]))
    summary = result.to_dict()
    assert summary["policy"] == result.policy.spec and len(summary["pvalues"]) == 41
    json.dumps(summary)
    # nothing provably safe: no early exit at all
    strict = calibrate_records(records, offsets, family, delta=0.001, epsilon=0.01)
    assert strict.chosen is None and strict.policy == FixedLevel(Level("L2"))
    assert strict.speedup == 1.0 and strict.risk == 0.0
    with pytest.raises(ValueError, match="conservative to aggressive"):
        calibrate_records(records, offsets, family, 0.1, 0.1, thresholds=[0.2, 0.5])


@pytest.mark.data
def test_calibrate_and_evaluate_end_to_end_on_dl19(
    ranker: ElasticRanker, require_dataset: object
) -> None:
    dataset = require_dataset("msmarco-dl19")  # type: ignore[operator]
    run = read_run(dataset.runs["bm25"])
    queries = {q.query_id: q.text for q in read_topics(dataset.queries)}
    wanted = [qid for qid in run if qid in queries][:6]
    top = {qid: dict(sorted(run[qid].items(), key=lambda kv: -kv[1])[:15]) for qid in wanted}
    needed = {doc for docs in top.values() for doc in docs}
    texts = {p.doc_id: p.text for p in load_passages(dataset.corpus, needed).values()}
    data = calibration_queries(top, queries, texts, depth=15)
    assert len(data) == 6 and all(len(d.passages) == 15 for d in data)
    calibration, held_out = data[:4], data[4:]
    grid = [1.0, 0.999, 0.995, 0.99, 0.98, 0.95, 0.9]
    result = calibrate(ranker, calibration, "saturation", delta=0.3, epsilon=0.3, thresholds=grid)
    assert result.n_queries == 4 and result.n_pairs == 60 and len(result.pvalues) == len(grid)
    assert result.risks[0] == 0.0 and result.speedups[0] == 1.0
    assert all(s >= 1.0 for s in result.speedups)
    # the simulated calibration equals really running the chosen policy on the same queries
    again = evaluate_policy(ranker, result.policy, calibration)
    assert again.risk == pytest.approx(result.risk, abs=1e-6)
    assert again.speedup == pytest.approx(result.speedup, rel=1e-9)
    # and on held-out queries the measured risk is reported the same way
    evaluation = evaluate_policy(ranker, result.policy, held_out)
    assert evaluation.n_queries == 2 and 0.0 <= evaluation.risk <= 1.0
    assert evaluation.speedup >= 1.0 and evaluation.full_speedup >= evaluation.speedup
    json.dumps(evaluation.to_dict())
    # a fixed level is measured against full; qrels-based loss needs relevance
    fixed = evaluate_policy(ranker, "L2", held_out)
    assert fixed.speedup == pytest.approx(3.0) and fixed.mean_exit_layer == 2.0
    with pytest.raises(ValueError, match="relevance"):
        evaluate_policy(ranker, "L2", held_out, loss="qrels")
    graded = [CalibrationQuery(d.query, d.passages, (1,) + (0,) * 14) for d in held_out]
    assert 0.0 <= evaluate_policy(ranker, "L2", graded, loss="qrels").risk <= 1.0


def test_calibrating_several_families_in_one_pass_equals_one_at_a_time(
    ranker: ElasticRanker, capsys: pytest.CaptureFixture[str]
) -> None:
    data = [
        ("what is a cat", ["a cat is a small feline", "dogs bark", "the sky is blue", "cats meow"]),
        ("capital of france", ["paris is the capital of france", "berlin", "rome is old"]),
        ("how tall is everest", ["everest is 8849 m tall", "k2 is hard to climb", "tea"]),
    ]
    families = ["entropy", "margin", "saturation"]
    together = calibrate_families(ranker, data, families, delta=0.3, epsilon=0.3, progress=True)
    assert list(together) == families
    assert "ranker exits at full: 10/10" in capsys.readouterr().err  # one pass, 10 pairs
    for family in families:
        alone = calibrate(ranker, data, family, delta=0.3, epsilon=0.3)
        assert together[family].to_dict() == alone.to_dict()
    with pytest.raises(ValueError, match="no exit classifier"):
        calibrate_families(ranker, data, ["margin", "classifier"], delta=0.3, epsilon=0.3)
    with pytest.raises(ValueError, match="no policy families"):
        calibrate_families(ranker, data, [], delta=0.3, epsilon=0.3)


def test_fingerprints_name_what_decides_the_scores(ranker: ElasticRanker) -> None:
    fingerprint = ranker.fingerprint
    assert len(fingerprint) == 16 and fingerprint == ranker.fingerprint
    full, small = RankerScorer(ranker), RankerScorer(ranker, "L2-W50")
    assert full.fingerprint == f"ranker-{fingerprint}-full-none"
    assert small.fingerprint != full.fingerprint
    assert RankerScorer(ranker, policy="margin:0.9").fingerprint.endswith("-full-margin:0.9")
    with pytest.warns(UntrainedExitsWarning):
        shorter = ElasticRanker(max_length=32, batch_size=8)
    assert shorter.fingerprint != fingerprint  # same weights, other truncation
    shorter.max_length, shorter._fingerprint = 64, None
    assert shorter.fingerprint == fingerprint  # same weights, same truncation
    with torch.no_grad():
        shorter.net.heads.out[0].weight.add_(1.0)
    shorter._fingerprint = None
    assert shorter.fingerprint != fingerprint  # one exit head's weights differ


def test_bf16_precision_stays_close_to_fp32_and_has_its_own_fingerprint(
    ranker: ElasticRanker,
) -> None:
    """bfloat16 autocast: float32 scores out, close to fp32's, per-query order kept, the same
    early exits as its own records, and a fingerprint of its own (so caches never mix)."""
    same = ElasticRanker.from_net(ranker.net, ranker.tokenizer, max_length=64, batch_size=8)
    bf16 = ElasticRanker.from_net(
        ranker.net, ranker.tokenizer, max_length=64, batch_size=8, precision="bf16"
    )
    assert same.fingerprint == ranker.fingerprint != bf16.fingerprint
    exact = ranker.score_pairs(PAIRS_Q, PAIRS_P).scores
    fast = bf16.score_pairs(PAIRS_Q, PAIRS_P).scores
    assert fast.dtype == np.float32 and not np.array_equal(fast, exact)  # really bf16
    assert np.abs(fast - exact).max() < 0.05 * exact.std()
    for q in range(len(QUERIES)):
        rows = slice(q * len(PASSAGES), (q + 1) * len(PASSAGES))
        assert np.corrcoef(fast[rows], exact[rows])[0, 1] > 0.99
    records = bf16.layer_records(PAIRS_Q, PAIRS_P)
    np.testing.assert_allclose(records.scores[:, -1], fast, atol=1e-5)
    policy = EntropyPolicy(float(np.median(binary_entropy(torch.from_numpy(records.scores[:, 1])))))
    exits, scores = simulate(policy, records)
    out = bf16.score_pairs(PAIRS_Q, PAIRS_P, policy=policy)
    np.testing.assert_array_equal(out.exit_layers, exits)
    np.testing.assert_allclose(out.scores, scores, atol=1e-5)
    assert "bf16" in repr(RankerScorer(bf16)) and "bf16" not in repr(RankerScorer(same))
    with pytest.raises(ValueError, match="precision must be one of"):
        ElasticRanker.from_net(ranker.net, ranker.tokenizer, precision="fp16")
