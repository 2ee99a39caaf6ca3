"""The CLI end to end on the built-in sample, and its handling of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from elasticir.cli.app import app
from typer.testing import CliRunner

from elasticir.data import read_run, sample_dataset

runner = CliRunner()
SAMPLE = sample_dataset()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Dense and BM25 indexes of the sample, built through the CLI once for the module."""
    root = tmp_path_factory.mktemp("cli")
    result = invoke("index", SAMPLE.corpus, "-o", root / "dense", "-q", "--shard-size", "16")
    assert result.exit_code == 0, result.output
    result = invoke("index", SAMPLE.corpus, "-o", root / "bm25", "--type", "bm25", "-q")
    assert result.exit_code == 0, result.output
    return root


def test_every_command_has_help() -> None:
    for command in ("index", "search", "eval", "fuse", "quickstart"):
        result = invoke(command, "--help")
        assert result.exit_code == 0
        assert "Usage" in result.output and len(result.output) > 300


def test_index_search_eval_fuse(built: Path) -> None:
    assert json.loads((built / "dense" / "meta.json").read_text())["index_type"] == "flat"
    assert (built / "dense" / "docid").read_text().count("\n") == 40
    runs = {}
    for name in ("dense", "bm25"):
        out = built / f"{name}.trec"
        result = invoke(
            "search", "--index", built / name, "--topics", SAMPLE.queries, "-k", "10", "-o", out
        )
        assert result.exit_code == 0, result.output
        runs[name] = read_run(out)
        assert len(runs[name]) == 10
    result = invoke("fuse", built / "dense.trec", built / "bm25.trec", "-o", built / "rrf.trec")
    assert result.exit_code == 0, result.output
    result = invoke(
        "eval", built / "rrf.trec", "--qrels", SAMPLE.qrels, "-m", "nDCG@10,RR@10", "--json"
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["nDCG@10"] > 0.8 and scores["RR@10"] > 0.8
    result = invoke(
        "eval",
        built / "dense.trec",
        "--qas",
        SAMPLE.qas,
        "--corpus",
        SAMPLE.corpus,
        "--topics",
        SAMPLE.queries,
        "--ks",
        "1,5",
    )
    assert result.exit_code == 0, result.output
    assert "Top1" in result.output and "Top5" in result.output


def test_search_is_deterministic(built: Path) -> None:
    outputs = []
    for i in range(2):
        out = built / f"again-{i}.trec"
        assert (
            invoke(
                "search", "--index", built / "dense", "--topics", SAMPLE.queries, "-o", out
            ).exit_code
            == 0
        )
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_bad_corpus_line_is_reported_and_leaves_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a", "contents": "fine"}\n{"id": "b", "contents": \n')
    out = tmp_path / "idx"
    result = invoke("index", corpus, "-o", out, "-q")
    assert result.exit_code == 2
    assert f"{corpus}:2" in result.output
    assert not out.exists() and not (tmp_path / "idx.embeddings").exists()


def test_bad_topics_are_reported_and_write_no_run(built: Path, tmp_path: Path) -> None:
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\tfine query\nq2 no tab here\n")
    out = tmp_path / "run.trec"
    result = invoke("search", "--index", built / "dense", "--topics", topics, "-o", out)
    assert result.exit_code == 2
    assert f"{topics}:2" in result.output and "tab" in result.output
    assert not out.exists()


def test_bad_qrels_and_run_lines_are_reported(tmp_path: Path) -> None:
    good_run = tmp_path / "good.trec"
    good_run.write_text("q01 Q0 d1 1 3.0 x\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q01 0 d1 1\nq01 0 d2 high\n")
    result = invoke("eval", good_run, "--qrels", qrels)
    assert result.exit_code == 2 and f"{qrels}:2" in result.output
    bad_run = tmp_path / "bad.trec"
    bad_run.write_text("q01 Q0 d1 1 3.0 x\nq01 Q0 d2 2 2.0\n")
    result = invoke("eval", bad_run, "--qrels", SAMPLE.qrels)
    assert result.exit_code == 2 and f"{bad_run}:2" in result.output


def test_unknown_model_and_missing_index(tmp_path: Path) -> None:
    result = invoke(
        "index", SAMPLE.corpus, "-o", tmp_path / "x", "--model", "/nonexistent/model", "-q"
    )
    assert result.exit_code == 2 and "/nonexistent/model" in result.output
    assert not (tmp_path / "x").exists()
    result = invoke("search", "--index", tmp_path / "nothing", "--topics", SAMPLE.queries)
    assert result.exit_code == 2 and "not an index directory" in result.output


def test_shard_option_is_validated(tmp_path: Path) -> None:
    result = invoke("index", SAMPLE.corpus, "-o", tmp_path / "x", "--shard", "3/2", "-q")
    assert result.exit_code != 0
    assert "0 <= i < n" in result.output
