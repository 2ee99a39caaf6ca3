"""Elastic optimization of the query encoder, on a tiny real config (shared data folder).

Every run trains 24 real training queries against a 200-passage pool for a few steps on one
thread; the teacher's vectors are cached once for the whole module.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from elasticir.cli.app import app
from safetensors.torch import load_file
from typer.testing import CliRunner

from elasticir import api
from elasticir.compute.levels import FULL, Level
from elasticir.data import read_topics, sample_dataset
from elasticir.models.denser import ElasticDenser
from elasticir.retrieve.dense import DenseSearcher
from elasticir.train.denser import (
    DenserTrainConfig,
    initial_student,
    level_plan,
    prepare_distillation,
    train_denser,
)

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_torch_thread")]

SMALL = Level("L2-W50")


@pytest.fixture(scope="module")
def straight(tiny: DenserTrainConfig) -> Path:
    return train_denser(tiny, progress=False)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_trained_directory_loads_with_levels_and_base_space(
    straight: Path, denser: ElasticDenser
) -> None:
    manifest = json.loads((straight / "elasticir.json").read_text())
    assert manifest["levels"] == ["full", str(SMALL)]
    assert manifest["passage_encoder"] == {
        "model": "all-MiniLM-L6-v2",
        "fingerprint": denser.fingerprint,
    }
    training = manifest["training"]
    assert training["steps"] == 6 and training["seed"] == 13
    assert training["config"]["batch_size"] == 8
    assert training["data"]["queries_used"] == 24 and training["data"]["passage_pool"] == 200
    assert training["data"]["sources"]["topics/topics.dpr.nq.dev.txt"] > 0
    assert set(training["final_losses"]) == {"full", str(SMALL)}
    assert len((straight / "training-log.jsonl").read_text().splitlines()) == 6
    assert not (straight / "checkpoint").exists()  # removed once the model is written

    trained = ElasticDenser(straight)
    assert trained.levels == (FULL, SMALL)
    assert trained.fingerprint == denser.fingerprint
    queries = ["who wrote the origin of species", "boiling point of water at altitude"]
    for level in trained.levels:
        vectors = trained.encode_queries(queries, level=level)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the queries moved; the passages are the frozen base model's, bit for bit
    assert not np.allclose(trained.encode_queries(queries), denser.encode_queries(queries))
    passages = ["Charles Darwin published On the Origin of Species in 1859.", "Water boils."]
    np.testing.assert_array_equal(
        trained.encode_passages(passages), denser.encode_passages(passages)
    )
    # passage-side levels (cheap indexing) run the trained sub-network, not the base model
    cheap = trained.encode_passages(passages, level=SMALL)
    np.testing.assert_allclose(np.linalg.norm(cheap, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(cheap, denser.encode_passages(passages))
    with pytest.raises(ValueError, match="not offered"):
        trained.encode_passages(passages, level="L3")


def test_a_cheap_passage_level_index_is_marked_and_never_resumed_as_full(
    straight: Path, tmp_path: Path
) -> None:
    sample = sample_dataset()
    trained = ElasticDenser(straight)
    cheap = api.IndexConfig(
        corpus=sample.corpus, output=tmp_path / "cheap", level=str(SMALL), progress=False
    )
    api.build_index(cheap, encoder=trained)
    meta = json.loads((tmp_path / "cheap" / "meta.json").read_text())
    assert meta["level"] == str(SMALL)
    assert meta["encoder"]["passage_level"] == str(SMALL)
    assert meta["encoder"]["passage_weights_fingerprint"] == trained.own_fingerprint
    assert trained.own_fingerprint != trained.fingerprint
    searcher = DenseSearcher(tmp_path / "cheap", trained)
    assert searcher.passage_level == str(SMALL)
    run = searcher.search(read_topics(sample.queries)[:2], k=3)
    assert all(len(docs) == 3 for docs in run.values())
    # the same store asked for full-compute vectors refuses instead of mixing the two
    full = dataclasses.replace(
        cheap, level="full", output=tmp_path / "full", store=cheap.store_dir()
    )
    with pytest.raises(ValueError, match="made differently.*level"):
        api.build_index(full, encoder=trained)


def test_index_of_the_base_model_is_searched_at_every_query_level(
    straight: Path, denser: ElasticDenser, tmp_path: Path
) -> None:
    sample = sample_dataset()
    config = api.IndexConfig(corpus=sample.corpus, output=tmp_path / "index", progress=False)
    api.build_index(config, encoder=denser)
    searcher = DenseSearcher(tmp_path / "index", ElasticDenser(straight))  # fingerprint check
    queries = read_topics(sample.queries)[:3]
    for level in (FULL, SMALL):
        run = searcher.search(queries, k=5, level=level)
        assert [len(run[q.query_id]) for q in queries] == [5, 5, 5]


def test_resuming_after_a_kill_reaches_the_uninterrupted_weights(
    straight: Path, tiny: DenserTrainConfig
) -> None:
    config = dataclasses.replace(tiny, output=tiny.output.with_name("resumed"))

    def kill_at_step_4(step: int, losses: dict) -> None:
        if step == 4:
            raise KeyboardInterrupt  # after the step-3 checkpoint, before the next one

    with pytest.raises(KeyboardInterrupt):
        train_denser(config, progress=False, on_step=kill_at_step_4)
    assert (config.output / "checkpoint" / "state.pt").is_file()
    assert not (config.output / "elasticir.json").exists()
    assert train_denser(config, progress=False) == config.output  # resumes at step 3
    expected, got = weights(straight), weights(config.output)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    log = (config.output / "training-log.jsonl").read_text()
    assert log == (straight / "training-log.jsonl").read_text()


def fixed_batch_losses(config: DenserTrainConfig, trained: Path) -> dict[str, dict]:
    """Losses on step 1's batch of the initial student and of the trained model."""
    from transformers import AutoModel

    distillation = prepare_distillation(config, progress=False)
    before_model, _ = initial_student(config, distillation)
    after_model = AutoModel.from_pretrained(trained).eval()
    rows = distillation.batch(1)
    with torch.no_grad():
        return {
            "initial": before_model.state_dict(),
            "before": distillation.losses(before_model.eval(), rows, SMALL).values(),
            "after": distillation.losses(after_model, rows, SMALL).values(),
            "full": distillation.losses(after_model, rows, FULL).values(),
        }


def test_sandwich_training_reduces_the_smallest_levels_distillation_loss(
    straight: Path, tiny: DenserTrainConfig
) -> None:
    losses = fixed_batch_losses(tiny, straight)
    before, after = losses["before"], losses["after"]
    assert after["kl"] < 0.8 * before["kl"], (before, after)
    assert after["align"] < before["align"] and after["total"] < before["total"]
    assert losses["full"]["total"] < after["total"]  # full stays near the teacher it started as


def test_static_mode_trains_only_the_given_level(tiny: DenserTrainConfig) -> None:
    config = dataclasses.replace(
        tiny, output=tiny.output.with_name("static"), levels=(str(SMALL),), sandwich=False, steps=20
    )
    trained = train_denser(config, progress=False)
    losses = fixed_batch_losses(config, trained)  # 20 steps at the smallest level alone
    before, after = losses["before"], losses["after"]
    assert after["total"] < 0.7 * before["total"], (before, after)
    initial, final = losses["initial"], weights(trained)
    layer = "encoder.layer.{}.attention.self.query.weight"
    for i in (2, 3, 4, 5):  # deeper than the level: never used, never changed
        assert torch.equal(final[layer.format(i)], initial[layer.format(i)])
    assert not torch.equal(final[layer.format(0)], initial[layer.format(0)])
    manifest = json.loads((config.output / "elasticir.json").read_text())
    assert manifest["training"]["method"] == "static"
    assert manifest["training"]["trained_levels"] == [str(SMALL)]
    assert set(manifest["training"]["final_losses"]) == {str(SMALL)}
    assert ElasticDenser(config.output).levels == (FULL, SMALL)


def test_focus_levels_join_every_step_of_the_sandwich(tmp_path: Path) -> None:
    menu = tuple(Level(lv) for lv in ("full", "L6-W75", "L4", "L6-W50", "L3-W50", "L2-W50"))
    plain = DenserTrainConfig(output=tmp_path / "plain")
    focused = dataclasses.replace(plain, focus=("L6-W50",))
    assert "focus" not in plain.training_fields()  # older runs keep their checkpoint keys
    assert focused.training_fields()["focus"] == ["L6-W50"]
    plan, plain_plan = level_plan(focused, menu), level_plan(plain, menu)
    middles = set()
    for step in range(1, 201):
        levels = plan(step)
        assert levels[0] == FULL and levels[-1] == SMALL and Level("L6-W50") in levels
        assert len(levels) == len(set(levels)) == 4
        middles.add(levels[2])
        assert plain_plan(step)[0] == FULL and len(plain_plan(step)) == 3
    assert middles == {Level("L6-W75"), Level("L4"), Level("L3-W50")}  # never the focus again
    with pytest.raises(ValueError, match="not in the menu"):
        level_plan(dataclasses.replace(plain, focus=("L5-W50",)), menu)
    with pytest.raises(ValueError, match="static run"):
        DenserTrainConfig(output=tmp_path, levels=("L4",), sandwich=False, focus=("L4",))
    with pytest.raises(ValueError, match="list of levels"):
        DenserTrainConfig(output=tmp_path, focus="L4")


def test_a_focus_level_outside_the_menu_fails_before_any_encoding(
    tiny: DenserTrainConfig, tmp_path: Path
) -> None:
    config = dataclasses.replace(
        tiny, output=tmp_path / "m", cache=tmp_path / "cache", focus=("L4",)
    )
    with pytest.raises(ValueError, match=r"focus level\(s\) L4 not in the menu \(full, L2-W50\)"):
        train_denser(config, progress=False)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "m").exists()
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    result = CliRunner().invoke(
        app, ["train", "denser", "-c", str(path), "--focus", "L2-W50, L3-W50", "-q"]
    )
    assert result.exit_code == 2 and "L3-W50 not in the menu" in result.output, result.output
    assert not (tmp_path / "m").exists()


def test_config_round_trips_and_rejects_nonsense(tmp_path: Path) -> None:
    config = DenserTrainConfig(output=tmp_path / "m", levels=("L4-W75", "full"), steps=10)
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    assert DenserTrainConfig.from_json(path) == config
    assert config.levels == ("L4-W75", "full")
    with pytest.raises(ValueError, match="unknown training setting"):
        DenserTrainConfig.from_dict({"output": "m", "stpes": 3})
    with pytest.raises(ValueError, match="static training"):
        DenserTrainConfig(output=tmp_path, sandwich=False)
    with pytest.raises(ValueError, match="not a compute level"):
        DenserTrainConfig(output=tmp_path, levels=("L2-X9",))
    with pytest.raises(ValueError, match="steps"):
        DenserTrainConfig(output=tmp_path, steps=0)


def test_cli_flags_override_the_config_file(
    straight: Path, tiny: DenserTrainConfig, tmp_path: Path
) -> None:
    runner = CliRunner()
    path = tmp_path / "config.json"
    path.write_text(dataclasses.replace(tiny, steps=99).to_json())
    # --steps 6 restores the finished run's settings: the command finds the model done
    result = runner.invoke(app, ["train", "denser", "-c", str(path), "--steps", "6", "-q"])
    assert result.exit_code == 0, result.output
    assert f"model: {straight}" in result.output
    result = runner.invoke(app, ["train", "denser", "--steps", "3"])
    assert result.exit_code == 2 and "--output" in result.output
    result = runner.invoke(
        app, ["train", "denser", "-o", str(tmp_path), "--levels", "L4", "--static-level", "L2"]
    )
    assert result.exit_code == 2 and "not both" in result.output
    help_text = runner.invoke(app, ["train", "denser", "--help"]).output
    assert "--static-level" in help_text and "frozen" in help_text
    assert "--pseudo-queries" in help_text and "--corpus" in help_text
    result = runner.invoke(
        app, ["train", "denser", "-o", str(tmp_path / "m"), "--corpus", "msmarco-dl20"]
    )
    assert result.exit_code == 2 and "unknown training corpus_passages" in result.output


def test_corpus_passages_join_the_pool_and_pseudo_queries_are_spans_of_it(
    tiny: DenserTrainConfig, data_root: Path
) -> None:
    from elasticir.data import iter_corpus
    from elasticir.data.datasets import get_dataset
    from elasticir.train.denser.texts import cached_training_text, corpus_texts, select_texts

    text = cached_training_text(data_root.resolve())
    config = dataclasses.replace(tiny, corpus_passages=("nq-open",), pseudo_queries=40)
    corpus = corpus_texts(data_root, config.corpus_passages)
    nq = get_dataset("nq-open", root=data_root)
    assert len(corpus) == sum(1 for _ in iter_corpus(nq.corpus))  # every passage, none lost
    queries, pool = select_texts(config, text, corpus)
    plain_queries, plain_pool = select_texts(tiny, text)
    assert pool[: len(plain_pool)] == plain_pool  # the sampled training pool comes first
    assert set(pool[len(plain_pool) :]) == set(corpus) - set(plain_pool)
    assert queries[:24] == plain_queries and len(queries) == 24 + 40
    for span in queries[24:]:
        words = span.split()
        assert 1 <= len(words) <= 12
        assert any(f" {span} " in f" {p} " for p in pool), span  # a contiguous span
    assert sum(len(s.split()) >= 4 for s in queries[24:]) >= 36  # short only in short passages
    again, _ = select_texts(config, text, corpus)
    other, _ = select_texts(dataclasses.replace(config, seed=14), text, corpus)
    assert again == queries and other[24:] != queries[24:]
    banned = frozenset({" ".join(queries[30].lower().split())})  # as if an evaluation question
    kept, _ = select_texts(config, text, corpus, banned)
    assert len(kept) == len(queries) - queries[24:].count(queries[30]) and queries[30] not in kept
    # the new settings key the run only when used, so older runs keep their keys
    assert "pseudo_queries" in config.training_fields()
    assert "corpus_passages" not in tiny.training_fields()
    assert "pseudo_queries" not in tiny.training_fields()
    with pytest.raises(ValueError, match="unknown training corpus_passages"):
        dataclasses.replace(tiny, corpus_passages=("msmarco-dl20",))
    with pytest.raises(ValueError, match="corpus_passages is a list of names"):
        dataclasses.replace(tiny, corpus_passages="nq-open")
    with pytest.raises(ValueError, match="pseudo_queries"):
        dataclasses.replace(tiny, pseudo_queries=-1)


def test_a_run_with_corpus_passages_and_pseudo_queries_records_them(
    tiny: DenserTrainConfig, tmp_path: Path
) -> None:
    config = dataclasses.replace(
        tiny,
        output=tmp_path / "aug",
        cache=tmp_path / "cache",
        corpus_passages=("nq-open",),
        pseudo_queries=8,
        steps=2,
    )
    path = train_denser(config, progress=False)
    data = json.loads((path / "elasticir.json").read_text())["training"]["data"]
    assert data["corpus_passages"]["datasets"] == ["nq-open"]
    assert data["corpus_passages"]["texts"] > 1000
    assert data["pseudo_queries"] == 8 and data["queries_used"] == 24 + 8
    assert data["pseudo_queries_used"] == 8
    assert data["passage_pool"] > 200 + 1000
    assert ElasticDenser(str(path)).encode_queries(["who wrote hamlet"], level=SMALL).shape == (
        1,
        384,
    )


def test_mining_without_faiss_finds_the_same_top_k() -> None:
    import faiss

    from elasticir.train.mining import torch_top_k

    rng = np.random.default_rng(5)
    passages = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((70, 16)).astype(np.float32)
    index = faiss.IndexFlatIP(16)
    index.add(passages)
    _, expected = index.search(queries, 9)
    assert np.array_equal(torch_top_k(queries, passages, 9, chunk=32), expected)
