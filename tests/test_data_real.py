"""Integration tests: the readers on the real benchmark files in the shared data folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from elasticir.data import (
    count_passages,
    iter_corpus,
    read_qas,
    read_qrels,
    read_queries_any,
    read_run,
    read_topics,
)

pytestmark = pytest.mark.data


def test_msmarco_dl19(require_dataset) -> None:
    ds = require_dataset("msmarco-dl19")
    passages = list(iter_corpus(ds.corpus))  # raises on any duplicate id
    assert len(passages) == 20_152
    assert count_passages(ds.corpus) == 20_152
    doc_ids = {p.doc_id for p in passages}
    assert all(p.text for p in passages)

    queries = read_topics(ds.queries)
    assert len(queries) == 43
    qids = {q.query_id for q in queries}

    qrels = read_qrels(ds.qrels)
    assert sum(len(judged) for judged in qrels.values()) == 9_260
    assert set(qrels) == qids
    assert {rel for judged in qrels.values() for rel in judged.values()} == {0, 1, 2, 3}
    # The corpus holds every judged passage.
    assert {d for judged in qrels.values() for d in judged} <= doc_ids

    run = read_run(ds.runs["bm25"])
    assert set(run) == qids
    assert all(len(ranked) == 100 for ranked in run.values())
    assert {d for ranked in run.values() for d in ranked} <= doc_ids


def test_nq_open(require_dataset) -> None:
    ds = require_dataset("nq-open")
    passages = list(iter_corpus(ds.corpus))
    assert len(passages) == 2_600
    assert all(p.title for p in passages)

    qas = read_qas(ds.qas)
    queries = read_topics(ds.queries)
    assert len(qas) == len(queries) == 2_000
    # Ids are nq<index in DPR's NQ test set>: increasing, with gaps. qas.tsv has no ids;
    # its lines are the same questions in the same order.
    assert queries[0].query_id == "nq0000"
    assert all(re.fullmatch(r"nq\d{4}", q.query_id) for q in queries)
    numbers = [int(q.query_id[2:]) for q in queries]
    assert numbers == sorted(set(numbers))
    assert [qa.question for qa in qas] == [q.text for q in queries]
    assert all(qa.answers for qa in qas)
    assert qas[0].answers == ("Wilhelm Conrad Röntgen",)

    qrels = read_qrels(ds.qrels)
    assert set(qrels) == {q.query_id for q in queries}
    assert {d for judged in qrels.values() for d in judged} <= {p.doc_id for p in passages}
    assert read_queries_any(ds.qas)[5].text == queries[5].text


def test_topic_files(require_dataset) -> None:
    trivia = read_qas(require_dataset("dpr-trivia-dev").qas)
    assert len(trivia) == 8_837
    # CSV-quoted lines (answers that contain double quotes) are unquoted.
    assert "The '70s" in trivia[16].answers
    assert all(qa.answers for qa in trivia)

    nq_dev = read_qas(require_dataset("dpr-nq-dev").qas)
    assert len(nq_dev) == 8_757
    assert nq_dev[0].answers == ("Linda Davis",)

    dev = require_dataset("msmarco-dev-subset")
    queries = read_topics(dev.queries)
    assert len(queries) == 6_980
    qrels = read_qrels(dev.qrels)
    assert sum(len(judged) for judged in qrels.values()) == 7_437
    assert set(qrels) == {q.query_id for q in queries}


def test_data_root_fixture(data_root: Path) -> None:
    assert (data_root / "README.md").is_file()
