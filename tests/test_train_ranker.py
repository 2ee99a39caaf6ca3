"""Training ElasticRanker on a tiny real config (shared data folder), one torch thread.

Every run takes 4 groups per source file, 2 groups of 4 pairs a step at 64 tokens, two widths
(full and W50), 6 steps; the exit classifier is fitted on 4 held-out queries.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

from elasticir.compute.levels import FULL, Level
from elasticir.data.errors import InputFormatError
from elasticir.rerank.policies import ConfidencePolicy
from elasticir.rerank.ranker import ElasticRanker, RankerNet
from elasticir.train.data import evaluation_questions
from elasticir.train.ranker import (
    SOURCES,
    RankerTrainConfig,
    RankingGroup,
    batch_tensors,
    exit_agreement,
    group_losses,
    initial_net,
    load_groups,
    read_source,
    train_ranker,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIDE, NARROW = 100, 50


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> RankerTrainConfig:
    root = tmp_path_factory.mktemp("train-ranker")
    return RankerTrainConfig(
        output=root / "straight",
        data_root=data_root,
        max_groups_per_source=4,
        steps=6,
        batch_size=2,
        group_size=4,
        max_length=64,
        lr=2e-4,
        head_lr=3e-3,
        levels=("full", "L6-W50"),
        importance_pairs=16,
        exit_holdout=4,
        classifier_steps=30,
        checkpoint_every=3,
        threads=1,
    )


@pytest.fixture(scope="module")
def straight(tiny: RankerTrainConfig) -> Path:
    return train_ranker(tiny, progress=False)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return {
        **load_file(str(path / "model.safetensors")),
        **load_file(str(path / "exits.safetensors")),
    }


@pytest.mark.data
def test_trained_directory_loads_and_records_its_training(
    straight: Path, tiny: RankerTrainConfig
) -> None:
    manifest = json.loads((straight / "elasticir.json").read_text())
    assert manifest["kind"] == "elastic-ranker" and manifest["levels"] == ["full", "L6-W50"]
    assert manifest["max_length"] == 64 and manifest["exits"]["classifier"] is True
    training = manifest["training"]
    assert training["steps"] == 6 and training["widths"] == [WIDE, NARROW]
    assert training["config"] == tiny.to_dict()
    sources = training["data"]["sources"]
    expected_files = {name for source in tiny.sources for name in SOURCES[source]}
    assert set(sources) == expected_files
    assert all(counts["groups"] == 4 for counts in sources.values())
    assert sources["msmarco-teacher-scored-c.jsonl"]["with_teacher"] == 4
    assert sources["wikiqa-train.tsv"]["with_teacher"] == 0
    assert training["data"]["held_out_queries"] == 4
    assert set(training["final_losses"]) == {"W100", "W50"}
    layers = training["exit_classifier"]["layers"]
    assert [entry["layer"] for entry in layers] == [1, 2, 3, 4, 5, 6]
    assert len((straight / "training-log.jsonl").read_text().splitlines()) == 6
    assert not (straight / "checkpoint").exists()
    assert train_ranker(tiny, progress=False) == straight  # finished: returns at once

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ranker = ElasticRanker(straight)
    assert ranker.levels == (FULL, Level("L6-W50")) and ranker.has_classifier
    pairs = (["who wrote hamlet"] * 3, ["Shakespeare wrote Hamlet.", "Cats purr.", "Rain."])
    full = ranker.score_pairs(*pairs)
    policy = ConfidencePolicy("classifier", 0.5, min_layer=2)
    adaptive = ranker.score_pairs(*pairs, level="L6-W50", policy=policy)
    assert adaptive.exit_layers.min() >= 2 and adaptive.total_flops < full.total_flops
    records = ranker.layer_records(*pairs)
    assert records.classifier is not None and np.all(
        (records.classifier >= 0) & (records.classifier <= 1)
    )


@pytest.mark.data
def test_resuming_after_a_kill_reaches_the_uninterrupted_weights(
    straight: Path, tiny: RankerTrainConfig
) -> None:
    config = dataclasses.replace(tiny, output=tiny.output.with_name("resumed"))

    def kill_at_step_5(step: int, losses: dict) -> None:
        if step == 5:
            raise KeyboardInterrupt  # after the step-3 checkpoint, before the next one

    with pytest.raises(KeyboardInterrupt):
        train_ranker(config, progress=False, on_step=kill_at_step_5)
    assert (config.output / "checkpoint" / "state.pt").is_file()
    assert not (config.output / "elasticir.json").exists()
    assert train_ranker(config, progress=False) == config.output  # resumes at step 3
    expected, got = weights(straight), weights(config.output)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    log = (config.output / "training-log.jsonl").read_text()
    assert log == (straight / "training-log.jsonl").read_text()
    other = dataclasses.replace(config, steps=7)
    with pytest.raises(ValueError, match="other settings"):
        train_ranker(other, progress=False)


@pytest.mark.data
def test_training_lowers_the_loss_on_a_fixed_batch(straight: Path, tiny: RankerTrainConfig) -> None:
    groups = load_groups(tiny)
    before, tokenizer, _ = initial_net(tiny, groups)
    after = ElasticRanker(straight, device="cpu").net
    batch = groups.batch(1)
    tensors = batch_tensors(batch, tokenizer, tiny, "cpu", True)
    with torch.no_grad():
        for width in (WIDE, NARROW):
            old = group_losses(before.eval(), tensors, batch, width, tiny)
            new = group_losses(after.eval(), tensors, batch, width, tiny)
            assert new.total < 0.9 * old.total, (width, old.values(), new.values())
            assert new.listwise < old.listwise
            assert old.per_exit.shape == (6,)


@pytest.mark.data
def test_training_groups_from_every_source(data_root: Path, tiny: RankerTrainConfig) -> None:
    train = data_root / "train"
    triples = read_source(train / "msmarco-triples-100.tsv")
    assert 0 < len(triples) <= 100 and all(len(g.negatives) >= 1 for g in triples)
    scored = read_source(train / "msmarco-teacher-scored-c.jsonl")
    assert len(scored) == 8 and all(len(g.teacher) == 1 + len(g.negatives) for g in scored)
    a = read_source(train / "msmarco-teacher-scored-a.jsonl")
    assert all(g.teacher is not None and len(g.negatives) == 25 for g in a)
    wikiqa = read_source(train / "wikiqa-train.tsv")
    assert 1000 <= len(wikiqa) <= 1040  # one group per positive sentence
    assert all(p.strip() for g in wikiqa for p in (g.positive, *g.negatives))
    trecqa = read_source(train / "trecqa-train.jsonl")
    assert len(trecqa) == 348
    medquad = read_source(train / "medquad-qa.jsonl.gz")
    assert len(medquad) > 10000 and all(not g.negatives for g in medquad[:100])

    groups = load_groups(tiny)
    banned = evaluation_questions(data_root)
    assert not any(g.query.lower() in banned for g in groups.train + groups.holdout)
    held = {g.query for g in groups.holdout}
    assert len(held) == 4 and not held & {g.query for g in groups.train}
    batch = groups.batch(1)
    assert batch.size == 2 and len(batch.queries) == len(batch.passages) == 8
    again = load_groups(tiny).batch(1)
    assert again.passages == batch.passages and torch.equal(again.teacher, batch.teacher)
    # too few negatives of its own: filled from the source, and no teacher term
    lonely = RankingGroup("wikiqa-train.tsv", "q", "p", ("n",), None)
    filled = groups.make_batch([lonely], np.random.default_rng(0))
    assert filled.passages[:2] == ["p", "n"] and len(set(filled.passages)) == 4
    assert not bool(filled.has_teacher[0])


def test_bad_training_files_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "msmarco-triples-100.tsv"
    bad.write_text("q\tpos\tneg\nq only two\tfields\n", encoding="utf-8")
    with pytest.raises(InputFormatError, match=r"msmarco-triples-100.tsv:2: expected"):
        read_source(bad)
    scored = tmp_path / "nq-train-teacher-scored.jsonl"
    scored.write_text('{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0]}\n')
    with pytest.raises(InputFormatError, match=":1: expected"):
        read_source(scored)
    wikiqa = tmp_path / "wikiqa-train.tsv"
    wikiqa.write_text("QuestionID\tQuestion\tSentenceID\tSentence\tLabel\nQ1\tq\tS1\ts\tyes\n")
    with pytest.raises(InputFormatError, match=":2: expected"):
        read_source(wikiqa)


def test_both_rerank_trainers_report_bad_lines_from_the_shared_parsers(tmp_path: Path) -> None:
    from elasticir.train.dipair import read_groups

    train = tmp_path / "train"
    train.mkdir()
    trecqa = train / "trecqa-train.jsonl"
    trecqa.write_text('{"qid": 1, "question": "q", "sentence": "s", "label": 1}\n' + "[1, 2]\n")
    scored = train / "nq-train-teacher-scored.jsonl"
    scored.write_text('{"query": "q", "pos": ["p"], "neg": ["n", "m"], "teacher_scores": [1, 2]}\n')
    for path, source, where in (
        (trecqa, "trecqa", ":2: expected a JSON object"),
        (scored, "nq-train-teacher-scored", ':1: expected "teacher_scores": one teacher score'),
    ):
        with pytest.raises(InputFormatError, match=path.name + where):
            read_source(path)
        with pytest.raises(InputFormatError, match=path.name + where):
            read_groups(train, [source])
    trecqa.write_text('{"qid": 1, "question": "q", "sentence": "s", "label": 2}\n')
    with pytest.raises(InputFormatError, match=r"trecqa-train.jsonl:1: expected .*label.: 0 or 1"):
        read_source(trecqa)


def test_exit_agreement_targets() -> None:
    # one group of 3: deepest scores 3, 2, 1; layer 1 moves candidate 2 above candidate 0
    scores = torch.tensor([[[0.0, 3.0], [1.5, 2.0], [9.0, 1.0]]])
    agree = exit_agreement(scores)
    assert agree[0, :, 1].tolist() == [1.0, 1.0, 1.0]  # the deepest exit agrees with itself
    assert agree[0, :, 0].tolist() == [0.0, 1.0, 0.0]


def test_gradient_equilibrium_averages_the_exit_gradients() -> None:
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    net = RankerNet(BertModel(config)).eval()
    net.init_exits_(None, seed=1)
    ids = torch.randint(1, 50, (3, 7))
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)

    def grads(rescale: bool, exit_index: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        net.zero_grad(set_to_none=True)
        scores, _ = net.exit_outputs(ids, types, mask, FULL, grad_rescale=rescale)
        scores[:, exit_index].sum().backward()
        named = dict(net.named_parameters())
        trunk = named["encoder.encoder.layer.0.intermediate.dense.weight"].grad.clone()
        head = {n: p.grad.clone() for n, p in named.items() if n.startswith("heads.")}
        return scores.detach(), trunk, head

    plain_scores, plain_trunk, plain_head = grads(False, 0)
    scaled_scores, scaled_trunk, scaled_head = grads(True, 0)
    assert torch.equal(plain_scores, scaled_scores)  # forward unchanged
    torch.testing.assert_close(scaled_trunk, plain_trunk / 2)  # exit 1 of 2: 1 / (L - 0)
    for name in plain_head:
        torch.testing.assert_close(scaled_head[name], plain_head[name])  # heads: unscaled
    _, plain_deep, _ = grads(False, 1)
    _, scaled_deep, _ = grads(True, 1)
    torch.testing.assert_close(scaled_deep, plain_deep / 2)  # (L - 1) / L from the deeper side


def test_config_round_trips_and_rejects_nonsense(tmp_path: Path) -> None:
    config = RankerTrainConfig(
        output=tmp_path / "m", levels=("L6-W50", "full"), sources=("wikiqa", "medquad")
    )
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    assert RankerTrainConfig.from_json(path) == config
    assert config.levels == ("L6-W50", "full") and config.sources == ("wikiqa", "medquad")
    with pytest.raises(ValueError, match="unknown training setting"):
        RankerTrainConfig.from_dict({"output": "m", "stpes": 3})
    with pytest.raises(ValueError, match="unknown training source"):
        RankerTrainConfig(output=tmp_path, sources=("msmarco-dl19",))
    with pytest.raises(ValueError, match="sandwich"):
        RankerTrainConfig(output=tmp_path, sandwich=False)
    with pytest.raises(ValueError, match="not a compute level"):
        RankerTrainConfig(output=tmp_path, levels=("L2-X9",))
    with pytest.raises(ValueError, match="L6-H100-F23: ElasticRanker cuts heads and FFN"):
        RankerTrainConfig(output=tmp_path, levels=("full", "L6-H100-F23"))
    for bad in (
        {"steps": 0},
        {"group_size": 1},
        {"lr": 0},
        {"warmup": 1.0},
        {"exit_weighting": "cubic"},
        {"pointwise_weight": -1},
        {"listwise_weight": 0, "teacher_weight": 0, "self_weight": 0, "pointwise_weight": 0},
        {"exit_holdout": -1},
        {"max_length": 8},
    ):
        with pytest.raises(ValueError):
            RankerTrainConfig(output=tmp_path, **bad)
    with pytest.raises(InputFormatError):
        bad_json = tmp_path / "bad.json"
        bad_json.write_text("[1, 2]")
        RankerTrainConfig.from_json(bad_json)


@pytest.mark.data
def test_cli_calibrates_and_reranks_with_the_trained_ranker(
    straight: Path, tmp_path: Path, sample_first_stage
) -> None:
    """`elasticir calibrate` then `elasticir rerank --ranker elastic:DIR --policy calibrated:`."""
    from elasticir.cli.app import app
    from typer.testing import CliRunner

    from elasticir.data import read_run, sample_dataset

    sample = sample_dataset()
    run_path, docs = sample_first_stage(8)
    first = read_run(run_path)
    runner = CliRunner()
    common = [
        "--run",
        str(run_path),
        "--topics",
        str(sample.queries),
        "--corpus",
        str(sample.corpus),
    ]
    calibration = tmp_path / "calibration.json"
    result = runner.invoke(
        app,
        [
            "calibrate",
            "--model",
            str(straight),
            *common,
            "--family",
            "margin",
            "--delta",
            "0.2",
            "--epsilon",
            "0.2",
            "-o",
            str(calibration),
        ],
    )
    assert result.exit_code == 0, result.output
    chosen = json.loads(calibration.read_text())
    assert {"policy", "level", "risk", "pvalues"} <= set(chosen)
    out = tmp_path / "reranked.trec"
    result = runner.invoke(
        app,
        [
            "rerank",
            *common,
            "--ranker",
            f"elastic:{straight}%5",
            "--policy",
            f"calibrated:{calibration}",
            "-o",
            str(out),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"pairs scored: {8 * len(first)}" in result.output
    reranked = read_run(out)
    assert all(len(d) == 5 and set(d) <= set(docs) for d in reranked.values())
    # no model named: the shipped ranker (ranker-minilm) reranks
    result = runner.invoke(app, ["rerank", *common, "--ranker", "elastic%5", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert chosen["precision"] == "fp32"  # a calibration holds at the precision it was made at
    stage = ["--ranker", f"elastic:{straight}", "--policy", f"calibrated:{calibration}", "-q"]
    result = runner.invoke(app, ["rerank", *common, *stage, "--precision", "bf16"])
    assert result.exit_code == 2 and "calibrated at fp32 precision" in result.output
    result = runner.invoke(app, ["rerank", *common, *stage, "--precision", "fp16"])
    assert result.exit_code == 2 and "precision must be one of" in result.output
    fast = tmp_path / "bf16.trec"
    result = runner.invoke(
        app,
        ["rerank", *common, "--ranker", f"elastic:{straight}", "--precision", "bf16", "-q"]
        + ["-o", str(fast)],
    )
    assert result.exit_code == 0, result.output
    assert {q: set(d) for q, d in read_run(fast).items()} == {
        q: set(d) for q, d in first.items()
    }  # every candidate rescored, none dropped


@pytest.mark.data
def test_cli_calibrates_a_rank_policy_and_reranks_with_the_run_ranks(
    straight: Path, tmp_path: Path, sample_first_stage
) -> None:
    """`calibrate --family rank` fits on every third query and tests on the others; the
    calibrated policy reranks a run, its exited candidates pruned below the others."""
    from elasticir.cli.app import app
    from typer.testing import CliRunner

    from elasticir.data import read_run, sample_dataset
    from elasticir.rerank.policies import RankPolicy, parse_policy

    sample = sample_dataset()
    run_path, docs = sample_first_stage(16)
    common = ["--run", str(run_path), "--topics", str(sample.queries)]
    common += ["--corpus", str(sample.corpus)]
    calibration = tmp_path / "rank.json"
    runner = CliRunner()
    args = ["calibrate", "--model", str(straight), *common, "--family", "rank", "-q"]
    result = runner.invoke(
        app, [*args, "--delta", "0.3", "--epsilon", "0.3", "-o", str(calibration)]
    )
    assert result.exit_code == 0, result.output
    assert "on 6 queries (exit weights fitted on 4 others)" in result.output
    chosen = json.loads(calibration.read_text())
    assert chosen["fit_queries"] == 4 and chosen["n_queries"] == 6 and chosen["family"] == "rank"
    policy = parse_policy(chosen["policy"])
    assert isinstance(policy, RankPolicy) and len(policy.weights) == 5
    out = tmp_path / "reranked.trec"
    stage = ["--ranker", f"elastic:{straight}", "--policy", f"calibrated:{calibration}"]
    result = runner.invoke(app, ["rerank", *common, *stage, "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    reranked = read_run(out)
    assert all(set(d) == set(docs) for d in reranked.values())  # pruned, never dropped
    # too few candidates per query for a top 10 to predict: a clear error
    short, _ = sample_first_stage(8)
    args = ["calibrate", "--model", str(straight), "--run", str(short), *common[2:]]
    result = runner.invoke(app, [*args, "--family", "rank", "-q", "-o", str(tmp_path / "x.json")])
    assert result.exit_code != 0 and "nothing to fit" in result.output
    assert not (tmp_path / "x.json").exists()


@pytest.mark.data
def test_cli_calibrates_a_list_cutoff_and_reranks_only_its_top(
    straight: Path, tmp_path: Path, sample_first_stage
) -> None:
    """`calibrate --family cutoff` picks how many of the first stage's candidates to rerank;
    `rerank` with it rescores those and keeps the others, in first-stage order, below."""
    from elasticir.cli.app import app
    from typer.testing import CliRunner

    from elasticir.data import read_run, sample_dataset
    from elasticir.rerank.policies import CutoffPolicy, parse_policy

    sample = sample_dataset()
    run_path, docs = sample_first_stage(16)
    common = ["--run", str(run_path), "--topics", str(sample.queries)]
    common += ["--corpus", str(sample.corpus)]
    calibration = tmp_path / "cutoff.json"
    runner = CliRunner()
    args = ["calibrate", "--model", str(straight), *common, "--family", "cutoff", "-q"]
    result = runner.invoke(
        app, [*args, "--delta", "0.5", "--epsilon", "0.3", "-o", str(calibration)]
    )
    assert result.exit_code == 0, result.output
    chosen = json.loads(calibration.read_text())
    assert chosen["family"] == "cutoff" and chosen["fit_queries"] == 0
    policy = parse_policy(chosen["policy"])
    assert isinstance(policy, CutoffPolicy) and policy.cutoff < 16  # a loose delta cuts
    first = read_run(run_path)
    out = tmp_path / "reranked.trec"
    stage = ["--ranker", f"elastic:{straight}", "--policy", f"calibrated:{calibration}"]
    result = runner.invoke(app, ["rerank", *common, *stage, "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    # the saving is reported: only the top R of 16 ran, every one of them to the last layer
    assert f"(mean exit layer {6 * policy.cutoff / 16:.2f})" in result.output
    assert "FLOPs speedup vs the full ranker" in result.output
    reranked = read_run(out)
    for qid, scored in reranked.items():
        assert set(scored) == set(docs)  # none dropped
        first_order = sorted(first[qid], key=lambda d: (-first[qid][d], d))
        new_order = sorted(scored, key=lambda d: -scored[d])
        cut = first_order[policy.cutoff :]
        assert new_order[policy.cutoff :] == cut  # below the reranked, in first-stage order
        assert set(new_order[: policy.cutoff]) == set(first_order[: policy.cutoff])
