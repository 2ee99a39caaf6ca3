"""The contract every scorer keeps, run over each one: the bi-encoder, ElasticRanker, DiPair.

A scorer turns a query and passages into one float per passage, higher better; it is
deterministic, does not depend on which other passages share the call, keeps nothing between
calls, and, if it is elastic, takes its compute choice per call (any level it offers; two
threads at two choices get what each gets alone). In a cascade it neither adds nor drops a
document, and the call's report counts what it scored. The seeded models are untrained: the
contract is about behaviour, not quality; the shipped, trained models keep it too.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from elasticir.data.records import Passage, Query
from elasticir.pipeline import Rerank, RunFile

pytestmark = [pytest.mark.contract, pytest.mark.usefixtures("one_torch_thread")]

QUERY = "why is the sea salty"
TEXTS = [
    "The sea is salty because rivers carry dissolved minerals into it.",
    "Honeybees dance to tell their nest mates where flowers are.",
    "Salt in the ocean comes mostly from the weathering of rocks on land.",
    "The Eiffel Tower was finished in 1889.",
    "Evaporation leaves the salt behind while fresh water returns as rain.",
    "A short one.",
]
PASSAGES = [Passage(f"d{i}", text) for i, text in enumerate(TEXTS)]
SCORERS = ["biencoder", "ranker", "dipair", "shipped-ranker", "shipped-dipair"]


@pytest.fixture(params=SCORERS)
def scorer(request: pytest.FixtureRequest, scorers: dict[str, object]) -> object:
    return scorers[request.param]


def test_one_finite_float_per_passage(scorer: object) -> None:
    scores = np.asarray(scorer.score(QUERY, PASSAGES))
    assert scores.shape == (len(PASSAGES),) and np.issubdtype(scores.dtype, np.floating)
    assert np.all(np.isfinite(scores))
    assert np.asarray(scorer.score(QUERY, PASSAGES[:1])).shape == (1,)


def test_deterministic_and_independent_of_the_other_passages(scorer: object) -> None:
    together = np.asarray(scorer.score(QUERY, PASSAGES))
    np.testing.assert_array_equal(together, np.asarray(scorer.score(QUERY, PASSAGES)))
    alone = np.array([float(np.asarray(scorer.score(QUERY, [p]))[0]) for p in PASSAGES])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    reversed_ = np.asarray(scorer.score(QUERY, PASSAGES[::-1]))[::-1]
    np.testing.assert_allclose(together, reversed_, atol=1e-4)


def test_in_a_cascade_it_reranks_every_candidate_and_counts_them(scorer: object) -> None:
    first = RunFile({"q": {p.doc_id: -i for i, p in enumerate(PASSAGES)}})
    corpus = {p.doc_id: p for p in PASSAGES}
    stage = Rerank(scorer, corpus, batch=4)  # two scorer calls for the query
    result = (first >> stage)([Query("q", QUERY)])
    assert set(result.run["q"]) == {p.doc_id for p in PASSAGES}
    assert result.reports[stage.name]["pairs scored"] == len(PASSAGES)
    expected = np.asarray(scorer.score(QUERY, PASSAGES))
    got = np.array([result.run["q"][p.doc_id] for p in PASSAGES])
    np.testing.assert_allclose(got, expected, atol=1e-4)


def _elastic(scorer: object) -> tuple[str, str]:
    levels = [str(level) for level in getattr(scorer, "levels", None) or ()]
    if len(levels) < 2:
        pytest.skip(f"{type(scorer).__name__} has no compute levels below full")
    return levels[0], levels[-1]


def test_the_compute_choice_is_an_argument_of_each_call(scorer: object) -> None:
    full, smallest = _elastic(scorer)
    default = np.asarray(scorer.score(QUERY, PASSAGES))
    np.testing.assert_array_equal(np.asarray(scorer.score(QUERY, PASSAGES, compute=full)), default)
    small = np.asarray(scorer.score(QUERY, PASSAGES, compute=smallest))
    assert not np.allclose(small, default)
    # nothing is kept between calls: full again after the small level is full
    np.testing.assert_array_equal(np.asarray(scorer.score(QUERY, PASSAGES, compute=full)), default)
    with pytest.raises(ValueError):
        scorer.score(QUERY, PASSAGES, compute="L99")


def test_two_threads_at_two_levels_get_what_each_gets_alone(scorer: object) -> None:
    full, smallest = _elastic(scorer)
    alone = {c: np.asarray(scorer.score(QUERY, PASSAGES, compute=c)) for c in (full, smallest)}
    results: dict[tuple[str, int], np.ndarray] = {}
    errors: list[BaseException] = []

    def work(choice: str, turn: int) -> None:
        try:
            for repeat in range(3):
                results[(choice, turn * 3 + repeat)] = np.asarray(
                    scorer.score(QUERY, PASSAGES, compute=choice)
                )
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [
        threading.Thread(target=work, args=(choice, turn))
        for turn in range(2)
        for choice in (full, smallest)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for (choice, _), scores in results.items():
        np.testing.assert_allclose(scores, alone[choice], atol=1e-5)


def test_a_stage_without_levels_refuses_a_named_level(scorers: dict[str, object]) -> None:
    first = RunFile({"q": {p.doc_id: -i for i, p in enumerate(PASSAGES)}})
    corpus = {p.doc_id: p for p in PASSAGES}
    pipeline = first >> Rerank(scorers["dipair"], corpus)
    with pytest.raises(ValueError, match="no compute levels"):
        pipeline([Query("q", QUERY)], compute="dipair@L4")
    # a level for every stage leaves it alone (it has none to choose)
    result = pipeline([Query("q", QUERY)], compute="L4")
    assert result.compute == {"run": "-", "dipair": "-"}
