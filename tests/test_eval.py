"""Unit tests for ranking measures and DPR-style answer accuracy, on hand-made data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from elasticir.data.records import QAPair, Query
from elasticir.eval import (
    DEFAULT_MEASURES,
    TREC_DL_MEASURES,
    answer_accuracy,
    evaluate,
    evaluate_per_query,
    has_answer,
    parse_measures,
    trec_eval,
)
from elasticir.eval.qa import tokenize
from elasticir.eval.trec_eval import trec_eval_args

# ---------------------------------------------------------------- ranking measures

QRELS = {
    "q1": {"d1": 2, "d2": 0, "d3": 1},
    "q2": {"d4": 1, "d5": 3},
}
RUN = {
    "q1": {"d2": 3.0, "d1": 2.0, "d3": 1.0},  # ranks: d2 (0), d1 (2), d3 (1)
    "q2": {"d6": 5.0, "d7": 4.0, "d4": 3.0},  # d4 (1) at rank 3, d5 not retrieved
    "q9": {"d1": 1.0},  # not judged: ignored
}


def _ndcg_q1() -> float:
    dcg = 0 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    return dcg / ideal


def _ndcg_q2() -> float:
    dcg = 1 / math.log2(4)
    ideal = 3 / math.log2(2) + 1 / math.log2(3)
    return dcg / ideal


def test_evaluate_hand_computed_values() -> None:
    result = evaluate(RUN, QRELS, ["nDCG@10", "RR@10", "RR(rel=2)@10", "R@2", "AP"])
    assert list(result) == ["nDCG@10", "RR@10", "RR(rel=2)@10", "R@2", "AP"]
    assert result["nDCG@10"] == pytest.approx((_ndcg_q1() + _ndcg_q2()) / 2)
    assert result["RR@10"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    # rel=2: q1's first doc with rel >= 2 is d1 at rank 2; q2's only one (d5) is missing.
    assert result["RR(rel=2)@10"] == pytest.approx((1 / 2 + 0) / 2)
    assert result["R@2"] == pytest.approx((1 / 2 + 0 / 2) / 2)
    # AP q1: relevant d1 (rank 2), d3 (rank 3): (1/2 + 2/3) / 2; q2: d4 at rank 3: (1/3) / 2.
    assert result["AP"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + (1 / 3) / 2) / 2)


def test_unjudged_run_query_ignored_and_missing_query_scores_zero() -> None:
    without_q9 = {qid: docs for qid, docs in RUN.items() if qid != "q9"}
    assert evaluate(RUN, QRELS, ["nDCG@10"]) == evaluate(without_q9, QRELS, ["nDCG@10"])
    only_q1 = {"q1": RUN["q1"]}
    assert evaluate(only_q1, QRELS, ["nDCG@10"])["nDCG@10"] == pytest.approx(_ndcg_q1() / 2)


def test_evaluate_per_query() -> None:
    per_query = evaluate_per_query({"q1": RUN["q1"]}, QRELS, ["nDCG@10", "RR@10"])
    assert list(per_query) == ["q1", "q2"]
    assert per_query["q1"] == pytest.approx({"nDCG@10": _ndcg_q1(), "RR@10": 0.5})
    assert per_query["q2"] == {"nDCG@10": 0.0, "RR@10": 0.0}


def test_measure_lists_parse() -> None:
    assert [str(m) for m in parse_measures(DEFAULT_MEASURES)] == list(DEFAULT_MEASURES)
    assert [str(m) for m in parse_measures(TREC_DL_MEASURES)] == list(TREC_DL_MEASURES)
    assert [str(m) for m in parse_measures(["AP", "AP"])] == ["AP"]


@pytest.mark.parametrize("bad", ["Bogus@10", "nDCG@x", "ndcg_cut.10", ""])
def test_unknown_measure_is_value_error_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match=f"unknown measure {bad!r}"):
        evaluate(RUN, QRELS, ["nDCG@10", bad])


def test_empty_qrels_or_measures_rejected() -> None:
    with pytest.raises(ValueError, match="qrels are empty"):
        evaluate(RUN, {}, ["nDCG@10"])
    with pytest.raises(ValueError, match="no measures"):
        evaluate(RUN, QRELS, [])


# ---------------------------------------------------------------- answer matching

ROENTGEN = (
    "The first Nobel Prize in Physics was awarded in 1901 to Wilhelm Conrad Röntgen, of "
    "Germany. The next Deadpool movie is released on May 18, 2018."
)


def test_tokenize_words_and_punctuation() -> None:
    assert tokenize("U.S. Wi-Fi, 3.5%") == "u . s . wi - fi , 3 . 5 %".split()


@pytest.mark.parametrize(
    ("answers", "text", "expected"),
    [
        (["Wilhelm Conrad Röntgen"], ROENTGEN, True),
        (["röntgen"], ROENTGEN, True),  # case-insensitive
        (["RÖNTGEN"], ROENTGEN, True),
        (["Ro\u0308ntgen"], ROENTGEN, True),  # decomposed vs precomposed: same after NFD
        (["Rontgen"], ROENTGEN, False),  # accents are kept, as in DPR
        (["Rö"], ROENTGEN, False),  # whole tokens only
        (["May 18, 2018"], ROENTGEN, True),  # punctuation is a token
        (["May 18 2018"], ROENTGEN, False),
        (["2018."], ROENTGEN, True),
        (["Germany ."], ROENTGEN, True),  # spacing does not matter
        (["Paris", "1901"], ROENTGEN, True),  # any answer
        (["Nobel Physics"], ROENTGEN, False),  # contiguous only
        ([""], ROENTGEN, False),  # empty answers never match
        ([], ROENTGEN, False),
        (["Wi-Fi"], "supports wi - fi and more", True),
    ],
)
def test_has_answer(answers: list[str], text: str, expected: bool) -> None:
    assert has_answer(answers, text) is expected


# ---------------------------------------------------------------- answer accuracy

PASSAGES = {
    "p1": "Paris Paris is the capital of France.",
    "p2": "Berlin Berlin is the capital of Germany.",
    "p3": "Madrid Madrid is the capital of Spain.",
    "p4": "Rome Rome is the capital of Italy.",
}
QAS = [
    QAPair("0", "capital of france", ("Paris",)),
    QAPair("1", "capital of spain", ("Madrid",)),
    QAPair("2", "capital of italy", ("Rome",)),
    QAPair("3", "capital of peru", ("Lima",)),
]


def test_answer_accuracy_by_qas_ids() -> None:
    run = {
        "0": {"p1": 3.0, "p2": 2.0},  # hit at 1
        "1": {"p2": 3.0, "p4": 2.0, "p3": 1.0},  # hit at 3
        "3": {"p1": 1.0},  # no hit
        # "2" missing from the run: a miss
    }
    acc = answer_accuracy(run, QAS, PASSAGES, ks=(1, 2, 3, 100))
    assert acc == {"Top1": 0.25, "Top2": 0.25, "Top3": 0.5, "Top100": 0.5}


def test_answer_accuracy_ties_break_by_doc_id() -> None:
    run = {"0": {"p2": 1.0, "p1": 1.0}}  # p1 ranks first on the tie
    assert answer_accuracy(run, QAS[:1], PASSAGES, ks=(1,)) == {"Top1": 1.0}


def test_answer_accuracy_through_topics() -> None:
    topics = [
        Query("nq3", "capital of peru"),
        Query("nq0", "capital of france"),
        Query("nq2", "capital of italy"),
    ]
    run = {"nq0": {"p1": 1.0}, "nq2": {"p1": 2.0, "p4": 1.0}, "nq3": {"p4": 1.0}}
    acc = answer_accuracy(run, QAS, PASSAGES, ks=(1, 2), topics=topics)
    assert acc == {"Top1": 0.25, "Top2": 0.5}


def test_answer_accuracy_errors() -> None:
    with pytest.raises(KeyError, match="p9"):
        answer_accuracy({"0": {"p9": 1.0}}, QAS, PASSAGES)
    with pytest.raises(ValueError, match="ks"):
        answer_accuracy({}, QAS, PASSAGES, ks=(0,))
    assert answer_accuracy({}, [], PASSAGES, ks=(1,)) == {"Top1": 0.0}


# ---------------------------------------------------------------- trec_eval mapping


def test_trec_eval_flags_per_measure_group() -> None:
    assert trec_eval_args(TREC_DL_MEASURES, "qrels.txt", "run.trec") == [
        ["-c", "-l", "1", "-m", "ndcg_cut.10", "qrels.txt", "run.trec"],
        ["-c", "-l", "2", "-M", "10", "-m", "recip_rank", "qrels.txt", "run.trec"],
        ["-c", "-l", "2", "-m", "recall.100", "-m", "map", "qrels.txt", "run.trec"],
    ]
    assert trec_eval_args(["AP@100", "P@5", "nDCG"], "q", "r") == [
        ["-c", "-l", "1", "-m", "map_cut.100", "-m", "P.5", "-m", "ndcg", "q", "r"]
    ]


def test_trec_eval_rejects_unmapped_measures_and_missing_files(tmp_path: Path) -> None:
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q1 0 d1 1\n")
    with pytest.raises(ValueError, match="judged_only"):
        trec_eval(qrels, qrels, ["nDCG(judged_only=True)@10"])
    with pytest.raises(ValueError, match="no trec_eval mapping"):
        trec_eval(qrels, qrels, ["R"])
    with pytest.raises(FileNotFoundError, match="missing.trec"):
        trec_eval(tmp_path / "missing.trec", qrels, ["AP"])
