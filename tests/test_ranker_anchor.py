"""Anchor groups for ranker training (unlabelled MS MARCO dev queries scored by the bi-encoder),
on a 60-passage slice of the DL19 pool so that mining encodes little."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from elasticir.data.topics import read_topics
from elasticir.models.denser import ElasticDenser
from elasticir.train.anchor import ANCHOR_SOURCE, AnchorData, anchor_groups
from elasticir.train.data import evaluation_questions, norm_text
from elasticir.train.ranker import (
    GroupBatch,
    RankerTrainConfig,
    batch_tensors,
    group_losses,
    initial_net,
    load_groups,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    lines = (data_root / "msmarco-dl19" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("anchor") / "pool.jsonl"
    path.write_text("\n".join(lines[:60]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def spec(small_corpus: Path, data_root: Path) -> AnchorData:
    return AnchorData(
        queries=6,
        corpus=str(small_corpus),
        depth=5,
        seed=13,
        base_model=None,
        data_root=data_root,
        cache=small_corpus.parent / "cache",
    )


@pytest.mark.data
def test_anchor_groups_are_the_bi_encoders_top_passages_with_its_cosines(
    spec: AnchorData, small_corpus: Path, data_root: Path
) -> None:
    groups, record = anchor_groups(spec, banned=set(), progress=False)
    assert len(groups) == 6 == record["queries"] == len(record["query_ids"])
    assert record["depth"] == 5 and record["corpus"] == str(small_corpus)
    topics = {
        q.query_id: q.text
        for q in read_topics(data_root / "topics" / ("topics.msmarco-passage.dev-subset.txt"))
    }
    passages = [json.loads(line) for line in small_corpus.read_text().splitlines()]
    texts = [p["contents"] for p in passages]
    encoder = ElasticDenser(batch_size=32)
    pool = encoder.encode_passages(texts)
    for group, qid in zip(groups, record["query_ids"]):
        assert group.source == ANCHOR_SOURCE and not group.labelled
        assert group.query == " ".join(topics[qid].split())
        scores = pool @ encoder.encode_queries([topics[qid]])[0]
        order = np.argsort(-scores)[:5]
        expected = [" ".join(texts[i].split()) for i in order]
        assert [group.positive, *group.negatives] == expected
        np.testing.assert_allclose(group.teacher, scores[order], atol=2e-5)
        assert list(group.teacher) == sorted(group.teacher, reverse=True)
    again, _ = anchor_groups(spec, banned=set(), progress=False)
    assert again == groups  # seeded, and the corpus store is reused
    # a banned (evaluation) question is never drawn
    banned = {norm_text(topics[record["query_ids"][0]])}
    without, other = anchor_groups(spec, banned=banned, progress=False)
    assert record["query_ids"][0] not in other["query_ids"] and len(without) == 6
    with pytest.raises(ValueError, match="anchor_depth"):
        anchor_groups(dataclasses.replace(spec, depth=61), banned=set(), progress=False)


@pytest.mark.data
def test_fused_anchor_groups_are_the_minmax_fusion_of_bm25_and_the_bi_encoder(
    spec: AnchorData, small_corpus: Path, data_root: Path
) -> None:
    from elasticir.retrieve.bm25 import bm25_search, build_bm25_index

    weight = 0.3
    fused_spec = dataclasses.replace(spec, bm25_weight=weight)
    groups, record = anchor_groups(fused_spec, banned=set(), progress=False, threads=1)
    assert record["teacher_scores"] == "bm25+biencoder fusion" and record["bm25"]["weight"] == 0.3
    # the same queries as the bi-encoder-scored anchors: only the scoring differs
    plain, plain_record = anchor_groups(spec, banned=set(), progress=False)
    assert record["query_ids"] == plain_record["query_ids"] and groups != plain
    assert plain_record["bm25"] is None and plain_record["teacher_scores"] == "biencoder"
    topics = {
        q.query_id: q
        for q in read_topics(data_root / "topics" / ("topics.msmarco-passage.dev-subset.txt"))
    }
    picked = [topics[qid] for qid in record["query_ids"]]
    passages = [json.loads(line) for line in small_corpus.read_text().splitlines()]
    ids, texts = [p["id"] for p in passages], [p["contents"] for p in passages]
    lexical = bm25_search(build_bm25_index(small_corpus, spec.cache / "oracle", 1, False), picked)
    encoder = ElasticDenser(batch_size=32)
    cosines = encoder.encode_queries([q.text for q in picked]) @ encoder.encode_passages(texts).T

    def minmax(values: np.ndarray) -> np.ndarray:  # one hit (or equal ones) normalises to 1
        spread = values.max() - values.min() if len(values) else 0.0
        return (values - values.min()) / spread if spread > 0 else np.ones_like(values)

    for group, query, cos in zip(groups, picked, cosines):
        sparse = np.array([lexical[query.query_id].get(d, np.nan) for d in ids])
        found = ~np.isnan(sparse)
        bm25 = np.zeros(len(ids))  # a passage BM25 does not retrieve gets its floor, 0
        bm25[found] = minmax(sparse[found])
        fused = weight * bm25 + (1 - weight) * minmax(cos)
        order = sorted(range(len(ids)), key=lambda i: (-round(fused[i], 6), ids[i]))[:5]
        assert [group.positive, *group.negatives] == [" ".join(texts[i].split()) for i in order]
        np.testing.assert_allclose(group.teacher, fused[order], atol=2e-5)


@pytest.mark.data
def test_anchor_groups_enter_only_the_teacher_term(
    spec: AnchorData, small_corpus: Path, data_root: Path, tmp_path: Path
) -> None:
    config = RankerTrainConfig(
        output=tmp_path / "m",
        data_root=data_root,
        head="pooled",
        sources=("msmarco-triples",),
        max_groups_per_source=6,
        anchor_queries=6,
        anchor_corpus=str(small_corpus),
        anchor_depth=4,  # = group_size: a batch takes all of a group's passages
        cache=spec.cache,
        group_size=4,
        max_length=64,
        importance_pairs=8,
        exit_holdout=2,
    )
    groups = load_groups(config)
    anchors = [g for g in groups.train + groups.holdout if not g.labelled]
    assert len(anchors) == 6 and groups.data["sources"][ANCHOR_SOURCE]["groups"] == 6
    assert groups.data["anchor"]["query_ids"] == anchor_groups(spec, set(), False)[1]["query_ids"]
    banned = evaluation_questions(data_root)
    assert not any(norm_text(g.query) in banned for g in anchors)
    # the anchor settings key the run; a run without anchors keys as it did before them
    assert "anchor_queries" in config.training_fields()
    plain = RankerTrainConfig(output=tmp_path / "p", head="pooled")
    assert not {"anchor_queries", "anchor_corpus", "anchor_depth", "cache"} & set(
        plain.training_fields()
    )
    # so does a run with bi-encoder-scored anchors; a fused teacher keys its own
    assert "anchor_bm25_weight" not in config.training_fields()
    fused = dataclasses.replace(config, anchor_bm25_weight=0.5)
    assert fused.training_fields()["anchor_bm25_weight"] == 0.5
    assert "cache" not in config.training_fields()

    net, tokenizer, _ = initial_net(config, groups)
    labelled = next(g for g in groups.train if g.labelled)
    rng = np.random.default_rng(0)
    mixed = groups.make_batch([labelled, anchors[0]], rng)
    assert mixed.labelled.tolist() == [True, False] and mixed.has_teacher.tolist() == [False, True]
    only_anchor = groups.make_batch([anchors[0]], np.random.default_rng(0))
    only_label = groups.make_batch([labelled], np.random.default_rng(0))
    net.eval()
    with torch.no_grad():

        def losses(batch: GroupBatch):
            tensors = batch_tensors(batch, tokenizer, config, "cpu", True)
            return group_losses(net, tensors, batch, 100, config)

        a, b, m = losses(only_anchor), losses(only_label), losses(mixed)
    assert a.listwise == 0 and a.pointwise == 0 and a.teacher > 0
    assert b.teacher == 0 and b.listwise > 0
    # in a mixed batch the label terms are the labelled group's alone
    assert torch.isclose(m.listwise, b.listwise, atol=1e-5)
    assert torch.isclose(m.pointwise, b.pointwise, atol=1e-5)
    assert torch.isclose(m.teacher, a.teacher, atol=1e-5)


def test_anchor_settings_are_checked(tmp_path: Path) -> None:
    bad_settings = (
        {"anchor_queries": -1},
        {"anchor_depth": 1},
        {"anchor_corpus": ""},
        {"anchor_bm25_weight": 1.5},
        {"anchor_bm25_weight": "0.5"},
    )
    for bad in bad_settings:
        with pytest.raises(ValueError, match="anchor"):
            RankerTrainConfig(output=tmp_path, **bad)
