"""Unit tests for run fusion: reciprocal rank fusion and score interpolation."""

from __future__ import annotations

import math

import pytest

from elasticir.retrieve.fusion import interpolate, ranked, reciprocal_rank_fusion


def test_ranked_orders_by_score_then_doc_id() -> None:
    assert ranked({"b": 1.0, "a": 1.0, "c": 2.0}) == [("c", 2.0), ("a", 1.0), ("b", 1.0)]
    assert ranked({"b": 1.0, "a": 1.0, "c": 2.0}, depth=2) == [("c", 2.0), ("a", 1.0)]


def test_rrf_hand_computed() -> None:
    run_a = {"q": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}
    run_b = {"q": {"d3": 9.0, "d1": 5.0}}
    fused = reciprocal_rank_fusion([run_a, run_b], k=60)
    assert list(fused["q"]) == ["d1", "d3", "d2"]
    assert fused["q"]["d1"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["q"]["d3"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["q"]["d2"] == pytest.approx(1 / 62)


def test_rrf_weights_and_depth() -> None:
    run_a = {"q": {"d1": 3.0, "d2": 2.0}}
    run_b = {"q": {"d2": 3.0, "d1": 2.0}}
    weighted = reciprocal_rank_fusion([run_a, run_b], k=0, weights=[1.0, 3.0])
    assert weighted["q"] == pytest.approx({"d2": 1 / 2 + 3 / 1, "d1": 1 / 1 + 3 / 2})
    assert list(weighted["q"]) == ["d2", "d1"]
    # depth=1: only each run's top document counts, and one document is kept.
    shallow = reciprocal_rank_fusion([run_a, run_b], k=60, depth=1)
    assert shallow == {"q": {"d1": pytest.approx(1 / 61)}}  # tie with d2, broken by doc id


def test_rrf_union_of_queries_and_determinism() -> None:
    run_a = {"q1": {"x": 1.0, "y": 1.0}, "q2": {"z": 0.5}}
    run_b = {"q3": {"w": 2.0}}
    fused = reciprocal_rank_fusion([run_a, run_b])
    assert sorted(fused) == ["q1", "q2", "q3"]
    reordered = {"q2": {"z": 0.5}, "q1": {"y": 1.0, "x": 1.0}}
    again = reciprocal_rank_fusion([run_b, reordered])
    assert fused == again
    assert list(fused["q1"]) == list(again["q1"]) == ["x", "y"]


def test_rrf_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="weights"):
        reciprocal_rank_fusion([{}, {}], weights=[1.0])
    with pytest.raises(ValueError, match="depth"):
        reciprocal_rank_fusion([{}], depth=0)


def test_interpolate_minmax_hand_computed() -> None:
    run_a = {"q": {"d1": 10.0, "d2": 5.0, "d3": 0.0}}
    run_b = {"q": {"d1": 1.0, "d4": 3.0}}
    fused = interpolate(run_a, run_b, alpha=0.5)
    # a -> d1 1, d2 .5, d3 0; b -> d1 0, d4 1; missing docs get 0.
    assert fused["q"] == pytest.approx({"d1": 0.5, "d4": 0.5, "d2": 0.25, "d3": 0.0})
    assert list(fused["q"]) == ["d1", "d4", "d2", "d3"]
    weighted = interpolate(run_a, run_b, alpha=0.8)
    assert weighted["q"]["d1"] == pytest.approx(0.8)
    assert weighted["q"]["d4"] == pytest.approx(0.2)


def test_interpolate_zscore_missing_doc_gets_run_minimum() -> None:
    run_a = {"q": {"d1": 3.0, "d2": 1.0}}  # z: d1 +1, d2 -1
    run_b = {"q": {"d1": 2.0, "d2": 2.0, "d3": 5.0}}
    mean, std = 3.0, math.sqrt(2.0)  # of (2, 2, 5)
    fused = interpolate(run_a, run_b, alpha=0.5, normalization="zscore")
    z_b = {d: (s - mean) / std for d, s in run_b["q"].items()}
    assert fused["q"]["d1"] == pytest.approx(0.5 * 1 + 0.5 * z_b["d1"])
    assert fused["q"]["d3"] == pytest.approx(0.5 * -1 + 0.5 * z_b["d3"])  # min of a: -1


def test_interpolate_alpha_one_keeps_first_run_order_and_depth() -> None:
    run_a = {"q": {f"d{i}": float(i) for i in range(10)}}
    run_b = {"q": {f"d{i}": float(-i) for i in range(10)}, "q2": {"x": 1.0}}
    fused = interpolate(run_a, run_b, alpha=1.0)
    assert list(fused["q"]) == [f"d{i}" for i in range(9, -1, -1)]
    assert fused["q2"] == {"x": 0.0}  # query only in run_b: a contributes nothing
    shallow = interpolate(run_a, run_b, alpha=1.0, depth=3)
    # Only each run's top 3 count and 3 are kept. a's 3rd (d7) normalizes to 0 like
    # documents missing from a (d0, d1, d2 from b), so the tie goes by doc id.
    assert list(shallow["q"]) == ["d9", "d8", "d0"]
    assert shallow["q"]["d0"] == 0.0


def test_interpolate_degenerate_scores() -> None:
    fused = interpolate({"q": {"a": 2.0, "b": 2.0}}, {"q": {"c": 1.0}}, alpha=0.5)
    # all-equal lists: retrieved documents get 1, so they still beat missing ones (0).
    assert fused["q"] == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.5})


def test_interpolate_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="normalization"):
        interpolate({}, {}, normalization="rank")
    with pytest.raises(ValueError, match="alpha"):
        interpolate({}, {}, alpha=1.5)
