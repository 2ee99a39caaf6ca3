"""Two-stage DiPair training on a tiny real config (shared data folder, one thread).

16 groups (4 from each of four real sources), 32-token passages, a 32-d head: stage 1 (head
only, over cached frozen encoder outputs) runs 6 steps and stage 2 (end to end) 4 steps.
The frozen outputs are cached once for the whole module.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from elasticir.data.records import Passage
from elasticir.data.trec import read_run, write_run
from elasticir.rerank.dipair import DiPair
from elasticir.train.dipair import (
    DiPairTrainConfig,
    export_teacher_inputs,
    initial_dipair,
    prepare_dipair_data,
    read_groups,
    train_dipair,
)

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_torch_thread")]

SOURCES = ("msmarco-teacher-scored-a", "nq-train-teacher-scored", "wikiqa", "trecqa")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> DiPairTrainConfig:
    """The tiny config; each test replaces ``output`` (and whatever it studies)."""
    root = tmp_path_factory.mktemp("dipair")
    return DiPairTrainConfig(
        output=root / "straight",
        cache=root / "cache",
        data_root=data_root,
        sources=SOURCES,
        max_groups=4,
        max_passages=6,
        group_size=4,
        batch_size=4,
        stage2_batch_size=2,
        k=16,
        query_tokens=8,
        dim=32,
        query_max_length=16,
        passage_max_length=32,
        stage1_steps=6,
        stage2_steps=4,
        residual=False,  # the plain head here; test_a_residual_head_trains... covers the default
        lr=3e-3,
        stage2_lr=1e-3,
        encoder_lr=1e-4,
        checkpoint_every=2,
        threads=1,
    )


@pytest.fixture(scope="module")
def straight(tiny: DiPairTrainConfig) -> Path:
    return train_dipair(tiny, progress=False)


def weights(path: Path) -> dict[str, torch.Tensor]:
    out = {f"head.{k}": v for k, v in load_file(str(path / "dipair.safetensors")).items()}
    encoder = path / "encoder" / "model.safetensors"
    if encoder.is_file():
        out.update({f"encoder.{k}": v for k, v in load_file(str(encoder)).items()})
    return out


def test_the_training_files_are_read_into_groups(data_root: Path) -> None:
    groups = read_groups(data_root / "train")
    counts = Counter(g.source for g in groups)
    assert counts["msmarco-teacher-scored-a"] == 10 and counts["msmarco-teacher-scored-c"] == 8
    assert counts["nq-train-teacher-scored"] == 10 and counts["msmarco-triples"] == 100
    assert counts["wikiqa"] == 856  # the questions with a positive and a negative sentence
    assert 50 < counts["trecqa"] < 93
    for group in groups:
        assert 1 in group.labels and 0 in group.labels
        assert len(set(group.passages)) == len(group.passages) == len(group.labels)
        if group.scores is not None:
            assert len(group.scores) == len(group.passages)
    scored = {g.source for g in groups if g.scores is not None}
    assert scored == {f"msmarco-teacher-scored-{x}" for x in "abc"} | {"nq-train-teacher-scored"}
    # WikiQA sentences that hold a tab inside their quotes are read whole
    assert any("\t" in p for g in groups if g.source == "wikiqa" for p in g.passages)


def test_evaluation_questions_are_never_trained_on(data_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    for name in ("msmarco-dl19", "nq-open"):
        (root / name).symlink_to(data_root / name)
    dl19 = (data_root / "msmarco-dl19" / "queries.tsv").read_text().splitlines()[0].split("\t")[1]
    rows = [
        {"qid": "1", "question": dl19.upper(), "sentence": "an answer", "label": 1},
        {"qid": "1", "question": dl19.upper(), "sentence": "not one", "label": 0},
        {"qid": "2", "question": "who built the pyramids", "sentence": "workers did", "label": 1},
        {"qid": "2", "question": "who built the pyramids", "sentence": "it rains", "label": 0},
    ]
    (root / "train" / "trecqa-train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = DiPairTrainConfig(
        output=tmp_path / "out", data_root=root, sources=("trecqa",), passage_max_length=32
    )
    from elasticir.train.dipair.groups import select_groups

    groups, stats = select_groups(config, root)
    assert [g.query for g in groups] == ["who built the pyramids"]
    assert stats["eval_overlap_checked"] is True
    assert stats["sources"]["trecqa"]["excluded_eval_overlap"] == 1


def test_trained_directory_loads_and_records_its_training(
    straight: Path, tiny: DiPairTrainConfig
) -> None:
    manifest = json.loads((straight / "elasticir.json").read_text())
    assert manifest["kind"] == "dipair"
    assert (manifest["k"], manifest["query_tokens"], manifest["dim"]) == (16, 8, 32)
    assert manifest["encoder"]["model"] == "encoder"  # stage 2 changed it: saved inside
    assert manifest["encoder"]["base_model"] == "all-MiniLM-L6-v2"
    training = manifest["training"]
    assert training["config"] == tiny.to_dict()
    data = training["data"]
    assert data["groups"] == 16 and data["eval_overlap_checked"] is True
    assert {name: s["groups"] for name, s in data["sources"].items()} == dict.fromkeys(SOURCES, 4)
    assert data["sources"]["wikiqa"]["groups_available"] == 856
    # the two teacher-scored sources bring their own teacher; WikiQA and TrecQA have labels only
    assert data["teacher"] == {"teacher": 0, "file": 0, "source": 8, "none": 8}
    assert set(training["stages"]) == {"stage1", "stage2"}
    log = [json.loads(line) for line in (straight / "training-log.jsonl").read_text().splitlines()]
    assert [(e["stage"], e["step"]) for e in log] == [(1, s) for s in range(1, 7)] + [
        (2, s) for s in range(1, 5)
    ]
    assert not (straight / "checkpoint").exists()
    assert train_dipair(tiny, progress=False) == straight  # finished: returns at once

    model = DiPair.load(straight)
    assert model.fingerprint != initial_dipair(tiny).fingerprint
    query = "big little lies season 2 how many episodes"
    scores = model.score_texts(query, ["Big Little Lies has seven episodes.", "Paris is big."])
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_training_lowers_the_loss_on_a_fixed_batch(straight: Path, tiny: DiPairTrainConfig) -> None:
    data = prepare_dipair_data(tiny, progress=False)
    before, after = initial_dipair(tiny), DiPair.load(straight)
    batch = data.batch(1, 1)
    with torch.no_grad():
        start = data.losses(before.head.eval(), batch)  # stage-1 path: cached frozen outputs
        end = data.losses(after.head.eval(), batch, after.encoder.model)  # end to end
        frozen_path = data.losses(before.head, batch, before.encoder.model)
    assert end["total"] < 0.8 * start["total"], (start, end)
    assert end["ce"] < start["ce"]
    # the cached frozen outputs are the encoder's own (up to float16)
    assert abs(frozen_path["total"].item() - start["total"].item()) < 1e-2


@pytest.mark.parametrize("kill_at", [(1, 5), (2, 3)], ids=["in-stage-1", "in-stage-2"])
def test_resuming_after_a_kill_reaches_the_uninterrupted_weights(
    straight: Path, tiny: DiPairTrainConfig, kill_at: tuple[int, int]
) -> None:
    config = dataclasses.replace(tiny, output=tiny.output.with_name(f"resumed-{kill_at[0]}"))

    def kill(stage: int, step: int, losses: dict) -> None:
        if (stage, step) == kill_at:
            raise KeyboardInterrupt  # after the step-4 (or stage-2 step-2) checkpoint

    with pytest.raises(KeyboardInterrupt):
        train_dipair(config, progress=False, on_step=kill)
    state = torch.load(config.output / "checkpoint" / "state.pt", weights_only=True)
    assert (state["stage"], state["step"]) == (kill_at[0], kill_at[1] - 1)
    assert not (config.output / "elasticir.json").exists()
    assert train_dipair(config, progress=False) == config.output
    expected, got = weights(straight), weights(config.output)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    log = (config.output / "training-log.jsonl").read_text()
    assert log == (straight / "training-log.jsonl").read_text()


def test_a_checkpoint_of_other_settings_is_refused(tiny: DiPairTrainConfig) -> None:
    config = dataclasses.replace(tiny, output=tiny.output.with_name("refused"), stage2_steps=0)

    def kill(stage: int, step: int, losses: dict) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_dipair(config, progress=False, on_step=kill)
    with pytest.raises(ValueError, match="other settings"):
        train_dipair(dataclasses.replace(config, lr=1e-2), progress=False)
    # the run-only settings may change between a run and its resume
    path = train_dipair(dataclasses.replace(config, checkpoint_every=5), progress=False)
    assert not (path / "encoder").exists()  # stage 1 only: the base encoder is named
    assert json.loads((path / "elasticir.json").read_text())["encoder"]["model"] == (
        "all-MiniLM-L6-v2"
    )


class OverlapTeacher:
    """A real, deterministic stand-in for a cross-encoder: word overlap with the query."""

    fingerprint = "word-overlap-v1"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, query: str, passages: list[Passage]) -> list[float]:
        self.calls += 1
        words = set(query.lower().split())
        return [len(words & set(p.text.lower().split())) / (1 + len(words)) for p in passages]


def test_teachers_from_a_callable_and_from_files(tiny: DiPairTrainConfig, tmp_path: Path) -> None:
    teacher = OverlapTeacher()
    data = prepare_dipair_data(tiny, progress=False, teacher=teacher)
    assert data.stats["teacher"] == {"teacher": 16, "file": 0, "source": 0, "none": 0}
    assert teacher.calls == 16
    plain = prepare_dipair_data(tiny, progress=False)
    assert data.key != plain.key  # the teacher's targets decide the weights
    again = prepare_dipair_data(tiny, progress=False, teacher=OverlapTeacher())
    assert again.key == data.key  # fingerprinted teacher: its scores came from the cache
    assert len(list((tiny.cache_dir() / "dipair" / "teacher").glob("*.npy"))) == 1

    # the same scores as a TREC run over the exported ids
    paths = export_teacher_inputs(tiny, tmp_path / "pairs", progress=False)
    queries = dict(line.split("\t", 1) for line in paths["queries"].read_text().splitlines())
    corpus = {
        r["id"]: r["contents"] for r in map(json.loads, paths["corpus"].read_text().splitlines())
    }
    candidates = read_run(paths["candidates"])
    assert len(corpus) == len(data.passages) and len(queries) == len(data.queries)
    assert {d for docs in candidates.values() for d in docs} == set(corpus)
    scored = {
        qid: dict(
            zip(docs, OverlapTeacher().score(queries[qid], [Passage(d, corpus[d]) for d in docs]))
        )
        for qid, docs in candidates.items()
    }
    write_run(tmp_path / "teacher.trec", scored)
    from_run = dataclasses.replace(tiny, teacher_scores=tmp_path / "teacher.trec")
    by_run = prepare_dipair_data(from_run, progress=False)
    assert by_run.stats["teacher"]["file"] == 16
    # TREC files keep a few significant digits: compare targets, not keys
    for a, b in zip(by_run.group_teacher, data.group_teacher):
        np.testing.assert_allclose(a, b, atol=1e-3)

    # and as JSON lines keyed by text
    lines = [
        {"query": queries[qid], "passage": corpus[doc], "score": score}
        for qid, docs in scored.items()
        for doc, score in docs.items()
    ]
    (tmp_path / "teacher.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    by_lines = prepare_dipair_data(
        dataclasses.replace(tiny, teacher_scores=tmp_path / "teacher.jsonl"), progress=False
    )
    assert by_lines.key == data.key
    (tmp_path / "none.jsonl").write_text(json.dumps({"query": "q", "passage": "p", "score": 1}))
    with pytest.raises(ValueError, match="scores none of the training groups"):
        prepare_dipair_data(
            dataclasses.replace(tiny, teacher_scores=tmp_path / "none.jsonl"), progress=False
        )


def test_config_round_trips_and_rejects_nonsense(tmp_path: Path) -> None:
    config = DiPairTrainConfig(
        output=tmp_path / "m",
        sources=["wikiqa", "trecqa"],
        stage2_steps=0,
        teacher_scores="t.jsonl",
    )
    assert config.sources == ("wikiqa", "trecqa") and config.teacher_scores == Path("t.jsonl")
    (tmp_path / "config.json").write_text(config.to_json())
    assert DiPairTrainConfig.from_json(tmp_path / "config.json") == config
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"output": str(tmp_path / "x"), "dim": 32}))
    assert DiPairTrainConfig.from_json(partial).dim == 32
    bad = [
        ({"sources": ["dl19"]}, "unknown training source"),
        ({"sources": "wikiqa"}, "list of names"),
        ({"group_size": 1}, "at least 2"),
        ({"stage1_steps": 0, "stage2_steps": 0}, "nothing to train"),
        ({"stage2_steps": -1}, "non-negative"),
        ({"lr": 0}, "lr must be positive"),
        ({"dim": 30}, "multiple of heads"),
        ({"ce_weight": 0, "kl_weight": 0}, "loss would be empty"),
        ({"warmup": 1.0}, "warmup"),
        ({"max_groups": 0}, "max_groups"),
        ({"stage2_batch_size": 0}, "stage2_batch_size"),
        ({"k": 64, "passage_max_length": 32}, "cannot exceed passage_max_length"),
    ]
    for values, message in bad:
        with pytest.raises(ValueError, match=message):
            DiPairTrainConfig(output=tmp_path / "m", **values)
    with pytest.raises(ValueError, match="unknown training setting"):
        DiPairTrainConfig.from_dict({"output": "m", "stage3_steps": 5})
    with pytest.raises(ValueError, match="output directory"):
        DiPairTrainConfig(output="")


def test_cli_reranks_through_a_token_cache(
    straight: Path, tmp_path: Path, sample_first_stage
) -> None:
    """`elasticir rerank --ranker dipair:DIR --token-cache C`: the cache is built, then used."""
    from elasticir.cli.app import app
    from typer.testing import CliRunner

    from elasticir.data import read_run, sample_dataset

    sample = sample_dataset()
    run_path, _ = sample_first_stage(6)
    args = [
        "rerank",
        "--run",
        str(run_path),
        "--topics",
        str(sample.queries),
        "--corpus",
        str(sample.corpus),
        "--ranker",
        f"dipair:{straight}%3",
        "-q",
    ]
    cache = tmp_path / "tokens"
    result = CliRunner().invoke(
        app, [*args, "--token-cache", str(cache), "-o", str(tmp_path / "a")]
    )
    assert result.exit_code == 0, result.output
    assert (cache / "meta.json").is_file()
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "b")])  # on the fly
    assert result.exit_code == 0, result.output
    cached, fresh = read_run(tmp_path / "a"), read_run(tmp_path / "b")
    assert {q: set(d) for q, d in cached.items()} == {q: set(d) for q, d in fresh.items()}
    assert all(len(d) == 3 for d in cached.values())


def test_python_cascade_takes_the_corpus_from_the_first_stage(
    straight: Path, tmp_path: Path, denser
) -> None:
    """``dense % 10 >> dipair % 3``: passages come from the corpus the index was built from."""
    from elasticir import api
    from elasticir.data import read_topics, sample_dataset
    from elasticir.rerank.dipair import DiPair, DiPairScorer
    from elasticir.rerank.pipeline import DenseRetrieval

    sample = sample_dataset()
    api.build_index(api.IndexConfig(sample.corpus, tmp_path / "ix", progress=False), encoder=denser)
    dense = DenseRetrieval(tmp_path / "ix", denser)
    assert dense.corpus == sample.corpus.resolve()
    pipeline = dense % 10 >> DiPairScorer(DiPair.load(straight)) % 3
    queries = read_topics(sample.queries)[:3]
    result, first = pipeline(queries), (dense % 10).run(queries)
    run = result.run
    assert all(len(run[q.query_id]) == 3 for q in queries)
    assert all(set(run[q.query_id]) <= set(first[q.query_id]) for q in queries)
    assert result.reports["dipair"]["pairs scored"] == 30


def test_a_residual_head_trains_through_both_stages(tiny: DiPairTrainConfig) -> None:
    config = dataclasses.replace(tiny, output=tiny.output.with_name("residual"), residual=True)
    data = prepare_dipair_data(config, progress=False)
    assert data.query_vectors is not None and data.passage_vectors is not None
    start = initial_dipair(config)
    batch = data.batch(1, 1)
    with torch.no_grad():
        cached = data.losses(start.head.eval(), batch)  # cached frozen vectors
        live = data.losses(start.head, batch, start.encoder.model)  # the encoder run live
        # untrained, a residual head scores 20 * cos(q, p): the bi-encoder's own ranking
        scores = data.scores(start.head, batch)
    assert abs(cached["total"].item() - live["total"].item()) < 1e-2
    rows = batch.passage_rows[0][batch.mask[0]]
    query = data.queries[int(batch.query_rows[0])]
    cosine = (
        start.encoder.encode_passages([data.passages[int(r)] for r in rows])
        @ (start.encoder.encode_queries([query])[0])
    )
    np.testing.assert_allclose(scores[0][: len(rows)].numpy(), 20 * cosine, atol=0.05)

    path = train_dipair(config, progress=False)
    model = DiPair.load(path)
    assert model.config.residual
    trained = model.head.state_dict()
    assert trained["score.weight"].abs().sum() > 0  # the correction was learned
    assert trained["residual_scale"].item() != 20.0
    with torch.no_grad():
        end = data.losses(model.head.eval(), batch, model.encoder.model)
    assert end["total"] < cached["total"], (cached, end)


def test_anchor_groups_teach_only_through_the_teacher_term(
    tiny: DiPairTrainConfig, tmp_path: Path, data_root: Path
) -> None:
    """Unlabelled anchor groups (MS MARCO dev queries over a 60-passage slice of the DL19
    pool): scored by the teacher, never in the CE term; the labelled groups' teacher scores
    are reused from the cache, and runs without anchors keep their keys."""
    from elasticir.train.anchor import ANCHOR_SOURCE, AnchorData, anchor_groups
    from elasticir.train.dipair.groups import select_groups

    lines = (data_root / "msmarco-dl19" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    corpus = tmp_path / "pool.jsonl"
    corpus.write_text("\n".join(lines[:60]) + "\n", encoding="utf-8")
    anchored = dataclasses.replace(
        tiny,
        cache=tmp_path / "cache",
        anchor_queries=3,
        anchor_corpus=str(corpus),
        anchor_depth=5,
        anchor_cache=tmp_path / "anchor-cache",
    )
    assert "anchor_queries" not in tiny.training_fields()  # keys of runs without anchors
    assert anchored.training_fields()["anchor_queries"] == 3
    assert "anchor_bm25_weight" not in anchored.training_fields()
    for bad in ({"anchor_bm25_weight": 1.5}, {"anchor_depth": 1}, {"anchor_corpus": ""}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            dataclasses.replace(anchored, **bad)

    groups, stats = select_groups(anchored, data_root)
    anchors = [g for g in groups if not g.labelled]
    assert [g for g in groups if g.labelled] == select_groups(tiny, data_root)[0]
    mined, record = anchor_groups(
        AnchorData(3, str(corpus), 5, tiny.seed, None, data_root, tmp_path / "anchor-cache"),
        banned=set(),
        progress=False,
    )
    assert stats["anchor"]["query_ids"] == record["query_ids"]
    assert stats["sources"][ANCHOR_SOURCE] == {"groups": 3, "labelled": False}
    for group, expected in zip(anchors, mined, strict=True):
        assert group.source == ANCHOR_SOURCE and set(group.labels) == {0}
        assert group.passages == (expected.positive, *expected.negatives)

    # the labelled groups' teacher scores come from the cache: only anchors are scored anew
    unanchored = dataclasses.replace(tiny, cache=tmp_path / "cache")
    prepare_dipair_data(unanchored, progress=False, teacher=OverlapTeacher())
    teacher = OverlapTeacher()
    data = prepare_dipair_data(anchored, progress=False, teacher=teacher)
    assert teacher.calls == 3
    assert data.stats["teacher"]["teacher"] == 16 + 3
    assert len(data.group_queries) == 19 and (data.group_positives[16:] == 0).all()

    # a step's anchor group has no positive slot; CE is the mean over labelled groups only
    head = initial_dipair(anchored).head
    head.eval()
    mixed = None
    for step in range(1, 12):
        batch = data.batch(1, step)
        if batch.labelled is not None and batch.labelled.any():
            mixed = batch
            break
    assert mixed is not None, "no step mixed labelled and anchor groups"
    anchor_slot = int(np.nonzero(~mixed.labelled)[0][0])
    assert mixed.mask[anchor_slot].sum() == 4  # group_size passages of its 5, none a positive
    assert not np.isnan(mixed.teacher[anchor_slot, :4]).any()
    with torch.no_grad():
        losses = data.losses(head, mixed)
        log_p = torch.log_softmax(data.scores(head, mixed), dim=-1)
    expected_ce = -log_p[torch.from_numpy(mixed.labelled), 0].mean()
    torch.testing.assert_close(losses["ce"], expected_ce)
    only_anchors = dataclasses.replace(
        mixed,
        query_rows=mixed.query_rows[~mixed.labelled],
        passage_rows=mixed.passage_rows[~mixed.labelled],
        teacher=mixed.teacher[~mixed.labelled],
        labelled=mixed.labelled[~mixed.labelled],
    )
    with torch.no_grad():
        losses = data.losses(head, only_anchors)
    assert float(losses["ce"]) == 0.0 and float(losses["kl"]) > 0.0
    torch.testing.assert_close(losses["total"], anchored.kl_weight * losses["kl"])


class DyingTeacher(OverlapTeacher):
    """Killed after five groups: the sixth call raises."""

    def score(self, query: str, passages: list[Passage]) -> list[float]:
        if self.calls == 5:
            raise KeyboardInterrupt
        return super().score(query, passages)


def test_a_killed_teacher_scoring_resumes_where_it_stopped(
    tiny: DiPairTrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import elasticir.train.dipair.teacher as module

    monkeypatch.setattr(module, "_PARTIAL_SECONDS", -1.0)  # save after every group
    config = dataclasses.replace(tiny, cache=tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        prepare_dipair_data(config, progress=False, teacher=DyingTeacher())
    folder = tmp_path / "cache" / "dipair" / "teacher"
    assert [p.name.endswith(".partial.npy") for p in folder.iterdir()] == [True]
    teacher = OverlapTeacher()
    resumed = prepare_dipair_data(config, progress=False, teacher=teacher)
    assert teacher.calls == 16 - 5  # the five scored groups were not asked again
    assert not list(folder.glob("*.partial.npy")) and len(list(folder.glob("*.npy"))) == 1
    elsewhere = dataclasses.replace(tiny, cache=tmp_path / "other")
    straight = prepare_dipair_data(elsewhere, progress=False, teacher=OverlapTeacher())
    assert resumed.key == straight.key
    for a, b in zip(resumed.group_teacher, straight.group_teacher, strict=True):
        np.testing.assert_array_equal(a, b)
