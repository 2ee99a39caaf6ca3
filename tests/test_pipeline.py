"""Cascades: ``>>`` and ``%`` over real first stages, reranking with real scorers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elasticir import api
from elasticir.data import load_passages, read_topics, sample_dataset
from elasticir.data.records import Query
from elasticir.data.trec import write_run
from elasticir.models.denser import ElasticDenser
from elasticir.rerank.pipeline import (
    BiEncoderScorer,
    Cascade,
    Cutoff,
    DenseRetrieval,
    FunctionScorer,
    MissingInputError,
    Rerank,
    RunFile,
)


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory: pytest.TempPathFactory, denser: ElasticDenser) -> Path:
    sample = sample_dataset()
    out = tmp_path_factory.mktemp("pipeline") / "index"
    api.build_index(api.IndexConfig(sample.corpus, out, progress=False), encoder=denser)
    return out


def by_length() -> FunctionScorer:
    """A transparent scorer: longer passages first (ties: input order is irrelevant)."""
    return FunctionScorer(lambda query, texts: [float(len(t)) for t in texts])


def test_operators_compose_and_cut(sample_index: Path, denser: ElasticDenser) -> None:
    sample = sample_dataset()
    queries = read_topics(sample.queries)
    dense = DenseRetrieval(sample_index, denser)
    pipeline = dense % 10 >> by_length() % 3
    assert isinstance(pipeline, Cascade)
    assert [type(s) for s in pipeline.stages] == [Cutoff, Cutoff]
    assert repr(pipeline) == "DenseRetrieval(index, level=full) % 10 >> Rerank(FunctionScorer) % 3"
    result = pipeline(queries)
    run = result.run
    first = (dense % 10).run(queries)
    passages = load_passages(sample.corpus)
    for query in queries:
        kept = run[query.query_id]
        assert len(kept) == 3 and set(kept) <= set(first[query.query_id])
        # the 3 longest of the dense top 10: reranking reorders, never adds
        lengths = sorted(
            (len(passages[d].encoder_text()) for d in first[query.query_id]), reverse=True
        )
        assert sorted(kept.values(), reverse=True) == [float(x) for x in lengths[:3]]
    counts = result.reports  # one tally per stage, by the stage's name, for this call
    assert counts["rerank"]["pairs scored"] == 10 * len(queries)
    assert counts["dense"]["queries"] == len(queries)
    assert set(result.seconds) == {"dense", "rerank"} and all(
        v > 0 for v in result.seconds.values()
    )
    assert result.compute == {"dense": "full", "rerank": "-"}
    assert pipeline(queries).reports == counts  # nothing accumulates between calls


def test_bi_encoder_reranking_reproduces_dense_order(
    sample_index: Path, denser: ElasticDenser
) -> None:
    """Rescoring dense candidates with the same bi-encoder keeps the dense order."""
    queries = read_topics(sample_dataset().queries)
    dense = DenseRetrieval(sample_index, denser)
    first = (dense % 8).run(queries)
    reranked = (dense % 8 >> BiEncoderScorer(denser)).run(queries)
    for query in queries:
        a, b = first[query.query_id], reranked[query.query_id]
        assert list(sorted(a, key=lambda d: (-a[d], d))) == list(
            sorted(b, key=lambda d: (-b[d], d))
        )
        np.testing.assert_allclose([a[d] for d in a], [b[d] for d in a], atol=1e-5)


def test_run_file_needs_a_corpus_and_reports_missing_documents(tmp_path: Path) -> None:
    sample = sample_dataset()
    queries = read_topics(sample.queries)[:2]
    doc_ids = list(load_passages(sample.corpus))[:4]
    run = {q.query_id: {d: 1.0 / (i + 1) for i, d in enumerate(doc_ids)} for q in queries}
    run[queries[0].query_id]["no-such-doc"] = 5.0  # ranked first, not in the corpus
    path = tmp_path / "in.trec"
    write_run(path, run)

    with pytest.raises(ValueError, match="no corpus"):
        (RunFile(path) >> by_length()).run(queries)
    with pytest.raises(MissingInputError, match=r"1 candidate document\(s\).*no-such-doc"):
        (RunFile(path, corpus=sample.corpus) >> by_length()).run(queries)

    stage = Rerank(by_length(), sample.corpus, on_missing="skip")
    result = (RunFile(path) >> stage)(queries)
    out = result.run
    assert result.reports["rerank"]["documents missing from corpus (kept below, unscored)"] == 1
    assert result.reports["rerank"]["pairs scored"] == 8
    ranked = sorted(out[queries[0].query_id].items(), key=lambda kv: -kv[1])
    assert ranked[-1][0] == "no-such-doc" and len(ranked) == 5  # kept, below every scored one


def test_queries_missing_from_topics_are_an_error_or_a_counted_skip(tmp_path: Path) -> None:
    sample = sample_dataset()
    queries = read_topics(sample.queries)[:2]
    doc = next(iter(load_passages(sample.corpus)))
    run = {q.query_id: {doc: 1.0} for q in queries}
    run["ghost"] = {doc: 1.0}
    with pytest.raises(MissingInputError, match="not in the topics.*ghost"):
        RunFile(run).run(queries)
    first = RunFile(run, on_missing="skip", corpus=sample.corpus)
    result = (first >> by_length())([*queries, Query("lonely", "no candidates for me")])
    out = result.run
    assert set(out) == {q.query_id for q in queries} | {"lonely"}
    assert out["lonely"] == {}
    assert result.reports["run"]["queries missing from topics (skipped)"] == 1
    assert result.reports["run"]["queries without candidates"] == 1


def test_bad_cutoffs_and_stages_are_refused(sample_index: Path, denser: ElasticDenser) -> None:
    dense = DenseRetrieval(sample_index, denser)
    for k in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="positive number"):
            dense % k  # noqa: B018
    with pytest.raises(TypeError):
        dense >> 42  # noqa: B018
    with pytest.raises(ValueError, match="put a first stage before it"):
        Rerank(by_length(), sample_dataset().corpus).run(read_topics(sample_dataset().queries))
