"""Headline numbers pinned: the rows of results/foundation.md that CI can afford to recompute.

If one of these moves, either a change altered what the toolkit computes (find out why
before anything else), or the committed table must be remade by its benchmark and the pin
moved with it in the same commit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from elasticir import api
from elasticir.eval.measures import TREC_DL_MEASURES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# results/foundation.md, "msmarco-dl19": BM25 full collection (shipped run)
DL19_SHIPPED_BM25 = {"nDCG@10": 0.5058, "RR(rel=2)@10": 0.7024, "R(rel=2)@100": 0.4910}
# results/foundation.md, "nq-open (2,000 questions, 2,600 gold passages)"
NQ_BM25 = {"Top1": 0.8155, "Top5": 0.9345, "Top20": 0.9750, "RR@10": 0.8462}
NQ_DENSE = {"Top1": 0.9335, "Top5": 0.9920, "Top20": 0.9980}
TOLERANCE = 5e-5  # the tables print 4 decimals


def _check(measured: dict[str, float], pinned: dict[str, float]) -> None:
    for name, value in pinned.items():
        assert measured[name] == pytest.approx(value, abs=TOLERANCE), (name, measured)


def test_dl19_shipped_bm25_run(require_dataset) -> None:
    dl19 = require_dataset("msmarco-dl19")
    measured = api.evaluate_run(dl19.runs["bm25"], qrels=dl19.qrels, measures=TREC_DL_MEASURES)
    _check(measured, DL19_SHIPPED_BM25)


def _nq(require_dataset, tmp_path: Path, index_type: str) -> dict[str, float]:
    nq = require_dataset("nq-open")
    index = tmp_path / index_type
    api.build_index(
        api.IndexConfig(corpus=nq.corpus, output=index, index_type=index_type, progress=False)
    )
    run = api.search(api.SearchConfig(index=index, topics=nq.queries, k=100))
    return api.evaluate_run(
        run, qrels=nq.qrels, measures=("RR@10",), qas=nq.qas, corpus=nq.corpus,
        topics=nq.queries, ks=(1, 5, 20),
    )  # fmt: skip


def test_nq_open_bm25(require_dataset, tmp_path: Path) -> None:
    _check(_nq(require_dataset, tmp_path, "bm25"), NQ_BM25)


@pytest.mark.slow
def test_nq_open_dense(require_dataset, tmp_path: Path) -> None:
    _check(_nq(require_dataset, tmp_path, "flat"), NQ_DENSE)


# results/rerank.md, "dl19 BM25 top-100 (shipped run)": bi-encoder scores (reference)
DL19_BM25_BIENCODER = {"nDCG@10": 0.6418, "RR(rel=2)@10": 0.7560, "R(rel=2)@100": 0.4910}


@pytest.mark.slow
def test_dl19_bm25_top100_reranked_by_the_biencoder(require_dataset) -> None:
    dl19 = require_dataset("msmarco-dl19")
    result = api.rerank(
        api.RerankConfig(
            run=dl19.runs["bm25"],
            topics=dl19.queries,
            corpus=dl19.corpus,
            stages=(api.parse_rerank_stage("biencoder"),),
            depth=100,
            progress=False,
        )
    )
    assert result.reports["biencoder"]["pairs scored"] == 4300
    measured = api.evaluate_run(result.run, qrels=dl19.qrels, measures=TREC_DL_MEASURES)
    _check(measured, DL19_BM25_BIENCODER)
