"""Cross-validation folds over a judged collection, and fine-tuning a ranker on them.

The folds must partition the judged queries the same way in every fold's run, a fold's training
groups must never hold one of its held-out queries, and a model must record both sets so that a
benchmark can refuse to evaluate it on a query it saw.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from elasticir.data.topics import read_topics
from elasticir.data.trec import read_qrels
from elasticir.rerank.ranker import ElasticRanker
from elasticir.train.judged import (
    JUDGED_SOURCE,
    JudgedData,
    assign_folds,
    judged_groups,
    judged_record,
    split_queries,
)
from elasticir.train.ranker import RankerTrainConfig, load_groups, train_ranker

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_folds_partition_the_queries_the_same_way_every_time() -> None:
    ids = [f"q{i}" for i in range(43)]
    folds = assign_folds(ids, 5)
    assert set(folds) == set(ids)
    sizes = sorted(list(folds.values()).count(f) for f in range(5))
    assert sizes == [8, 8, 9, 9, 9]
    assert assign_folds(list(reversed(ids)), 5) == folds  # order of the input does not matter
    assert assign_folds(ids, 5, seed=1) != folds
    held = set()
    for fold in range(5):
        train, out = split_queries(ids, 5, fold)
        assert not set(train) & set(out) and set(train) | set(out) == set(ids)
        assert not held & set(out)
        held |= set(out)
    assert held == set(ids)
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds(ids, 1)
    with pytest.raises(ValueError, match="only 3 queries"):
        assign_folds(ids[:3], 5)
    with pytest.raises(ValueError, match="fold must be in"):
        split_queries(ids, 5, 5)
    # one fold: every query trains (the shipped ranker's DL21 recipe), none is held out
    assert split_queries(list(reversed(ids)), 1, 0) == (sorted(ids), [])
    with pytest.raises(ValueError, match="fold 0"):
        split_queries(ids, 1, 1)


@pytest.mark.data
def test_judged_groups_hold_only_training_queries_with_grades_as_teacher(
    require_dataset, data_root: Path
) -> None:
    dl = require_dataset("msmarco-dl19")
    spec = JudgedData("msmarco-dl19", 5, 2, 0, 2, 6, 13, data_root)
    groups, record = judged_groups(spec)
    texts = {q.query_id: q.text for q in read_topics(dl.queries)}
    qrels = read_qrels(dl.qrels)
    train, held = set(record["train_query_ids"]), set(record["held_out_query_ids"])
    assert not train & held and train | held == set(qrels)
    assert 8 <= len(held) <= 9
    held_texts = {" ".join(texts[q].split()) for q in held}
    assert groups and all(g.query not in held_texts for g in groups)
    assert {g.query for g in groups} <= {" ".join(texts[q].split()) for q in train}
    for group in groups:
        assert group.source == JUDGED_SOURCE and group.labelled
        assert group.teacher[0] >= 2 and all(t < 2 for t in group.teacher[1:])
        assert len(group.teacher) == 1 + len(group.negatives)
    per_query: dict[str, int] = {}
    for group in groups:
        per_query[group.query] = per_query.get(group.query, 0) + 1
    assert max(per_query.values()) == 6  # the cap; many DL19 queries have more positives
    assert record["judged_passages_missing_from_corpus"] == 0


@pytest.mark.data
def test_fine_tuning_on_a_fold_records_what_it_saw(
    tmp_path_factory: pytest.TempPathFactory, data_root: Path, require_dataset
) -> None:
    require_dataset("msmarco-dl19")
    root = tmp_path_factory.mktemp("judged")
    start = RankerTrainConfig(
        output=root / "start",
        data_root=data_root,
        sources=("trecqa",),
        max_groups_per_source=4,
        steps=2,
        batch_size=2,
        group_size=4,
        max_length=48,
        levels=("full", "L6-W50"),
        importance_pairs=8,
        exit_holdout=0,
        head="pooled",
        threads=1,
    )
    train_ranker(start, progress=False)
    tuned = dataclasses.replace(
        start,
        output=root / "tuned",
        sources=(),
        judged="msmarco-dl19",
        judged_fold=3,
        judged_per_query=1,
        init_from=root / "start",
        levels=None,
        steps=2,
    )
    groups = load_groups(tuned)
    assert {g.source for g in groups.train} == {JUDGED_SOURCE}
    assert groups.data["init_from"]["fingerprint"] == ElasticRanker(root / "start").fingerprint
    path = train_ranker(tuned, progress=False)
    model, first = ElasticRanker(path), ElasticRanker(root / "start")
    assert [str(lv) for lv in model.levels] == [str(lv) for lv in first.levels]
    record = judged_record(model.manifest)
    train, held = set(record["train_query_ids"]), set(record["held_out_query_ids"])
    assert record["dataset"] == "msmarco-dl19" and record["fold"] == 3
    assert train and held and not train & held
    assert held == set(split_queries(sorted(train | held), 5, 3)[1])
    before = load_file(str(root / "start" / "model.safetensors"))
    after = load_file(str(path / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it was trained
    assert judged_record(first.manifest) is None
    with pytest.raises(ValueError, match="has a 'pooled' head"):
        train_ranker(dataclasses.replace(tuned, output=root / "wrong", head="cls"), progress=False)
    assert not (root / "wrong" / "elasticir.json").exists()  # refused before anything is written


def test_dense_negatives_are_the_judged_ones_the_bi_encoder_ranks_high(tmp_path: Path) -> None:
    """``negatives_depth``: a query's negatives are its judged non-relevant passages in the
    base bi-encoder's top k, checked against the bi-encoder's own scores; a query with too few
    there keeps all its judged negatives, and the record counts both kinds."""
    import numpy as np

    from elasticir.data import load_passages, sample_dataset
    from elasticir.models.denser import ElasticDenser

    sample = sample_dataset()
    root = tmp_path / "data"
    (root / "msmarco-dl19").mkdir(parents=True)
    layout = root / "msmarco-dl19"
    (layout / "corpus.jsonl").write_bytes(sample.corpus.read_bytes())
    (layout / "queries.tsv").write_bytes(sample.queries.read_bytes())
    relevant = {q: set(d) for q, d in read_qrels(sample.qrels).items()}
    passages = load_passages(sample.corpus)
    topics = {q.query_id: q.text for q in read_topics(sample.queries)}
    lines = [f"{q} 0 {d} {2 if d in relevant.get(q, ()) else 0}" for q in topics for d in passages]
    (layout / "qrels.txt").write_text("\n".join(lines) + "\n")
    (layout / "runs").mkdir()
    (layout / "runs" / "bm25-top100.trec").write_text("")  # the layout names one; unread here
    depth = 4
    spec = JudgedData("msmarco-dl19", 2, 0, 0, 2, 3, 13, root, depth, 3, None, tmp_path / "cache")
    groups, record = judged_groups(spec)
    plain, _ = judged_groups(dataclasses.replace(spec, negatives_depth=None))
    # the bi-encoder's top k of each training query, from its own scores
    encoder = ElasticDenser()
    ids = list(passages)
    vectors = encoder.encode_passages([passages[d].encoder_text() for d in ids])
    texts = {" ".join(topics[q].split()): q for q in record["train_query_ids"]}
    counted = {"queries": 0, "fallback_queries": 0}
    by_query = {g.query: g for g in groups}
    for query, group in by_query.items():
        qid = texts[query]
        scores = vectors @ encoder.encode_queries([topics[qid]])[0]
        top = {ids[i] for i in np.argsort(-scores)[:depth]}
        hard = {passages[d].encoder_text() for d in top if d not in relevant.get(qid, ())}
        if len(hard) >= 3:
            assert set(group.negatives) == hard
            counted["queries"] += 1
        else:
            assert len(group.negatives) == len(passages) - len(relevant.get(qid, ()))
            counted["fallback_queries"] += 1
    assert record["dense_negatives"] == counted and counted["queries"] > 0
    assert record["negatives_depth"] == depth
    assert len(plain) == len(groups) and all(len(g.negatives) > depth for g in plain)
    with pytest.raises(ValueError, match="needs judged"):
        RankerTrainConfig(output=tmp_path, judged_negatives_depth=100)
    with pytest.raises(ValueError, match="judged_negatives_depth"):
        RankerTrainConfig(output=tmp_path, judged="msmarco-dl19", judged_negatives_depth=0)
    keyed = RankerTrainConfig(output=tmp_path, sources=(), judged="msmarco-dl19")
    assert "judged_negatives_depth" not in keyed.training_fields()  # old runs keep their keys
    deep = dataclasses.replace(keyed, judged_negatives_depth=100)
    assert deep.training_fields()["judged_negatives_depth"] == 100


def test_judged_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="0-based"):
        RankerTrainConfig(output=tmp_path, judged="msmarco-dl19", judged_fold=5)
    with pytest.raises(ValueError, match="judged_folds"):
        RankerTrainConfig(output=tmp_path, judged="msmarco-dl19", judged_folds=0)
    with pytest.raises(ValueError, match="unknown training sources"):
        RankerTrainConfig(output=tmp_path, sources=())  # nothing at all to train on
    config = RankerTrainConfig(output=tmp_path, sources=(), judged="msmarco-dl19")
    assert config.sources == ()
    # runs without judged folds or a starting ranker keep the training keys they had
    plain = RankerTrainConfig(output=tmp_path).training_fields()
    assert "judged" not in plain and "init_from" not in plain
