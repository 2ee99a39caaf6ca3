"""``elasticir rerank`` from the command line: runs in, runs out, nothing dropped silently."""

from __future__ import annotations

from pathlib import Path

import pytest
from elasticir.cli.app import app
from typer.testing import CliRunner

from elasticir import api
from elasticir.data import read_run, sample_dataset
from elasticir.data.trec import write_run


@pytest.fixture()
def first_run(sample_first_stage) -> Path:
    """Every sample query x the first 6 sample passages (a hand-made first stage)."""
    return sample_first_stage(6)[0]


def invoke(*args: str):
    return CliRunner().invoke(app, ["rerank", *args])


def test_bi_encoder_cascade_writes_a_run(first_run: Path, tmp_path: Path) -> None:
    sample = sample_dataset()
    out = tmp_path / "out.trec"
    result = invoke(
        "--run",
        str(first_run),
        "--topics",
        str(sample.queries),
        "--corpus",
        str(sample.corpus),
        "--ranker",
        "biencoder%4",
        "--ranker",
        "biencoder%2",
        "-o",
        str(out),
        "-q",
    )
    assert result.exit_code == 0, result.output
    assert "pairs scored: 60" in result.output and "pairs scored: 40" in result.output
    run = read_run(out)
    assert len(run) == 10 and all(len(docs) == 2 for docs in run.values())
    first = read_run(first_run)
    assert all(set(run[q]) <= set(first[q]) for q in run)
    # the bi-encoder's own order, as the Python API gives it
    again = api.rerank(
        api.RerankConfig(
            run=first_run,
            topics=sample.queries,
            corpus=sample.corpus,
            stages=(api.parse_rerank_stage("biencoder%2"),),
            progress=False,
        )
    ).run
    assert {q: set(d) for q, d in again.items()} == {q: set(d) for q, d in run.items()}


def test_missing_documents_stop_or_are_counted(first_run: Path, tmp_path: Path) -> None:
    sample = sample_dataset()
    run = read_run(first_run)
    qid = next(iter(run))
    run[qid]["ghost-doc"] = 0.5
    bad = tmp_path / "bad.trec"
    write_run(bad, run)
    common = [
        "--run",
        str(bad),
        "--topics",
        str(sample.queries),
        "--corpus",
        str(sample.corpus),
        "--ranker",
        "biencoder",
        "-q",
    ]
    result = invoke(*common, "-o", str(tmp_path / "x.trec"))
    assert result.exit_code == 2
    assert "1 candidate document(s) are not in" in result.output and "ghost-doc" in result.output
    assert not (tmp_path / "x.trec").exists()
    result = invoke(*common, "--on-missing", "skip", "-o", str(tmp_path / "y.trec"))
    assert result.exit_code == 0, result.output
    assert "documents missing from corpus (kept below, unscored): 1" in result.output
    kept = read_run(tmp_path / "y.trec")[qid]
    assert min(kept, key=kept.get) == "ghost-doc"


def test_bad_stage_specs_are_refused(first_run: Path) -> None:
    sample = sample_dataset()
    for spec, message in (("cross%10", "unknown kind 'cross'"), ("biencoder%0", "%K")):
        result = invoke(
            "--run",
            str(first_run),
            "--topics",
            str(sample.queries),
            "--corpus",
            str(sample.corpus),
            "--ranker",
            spec,
        )
        assert result.exit_code == 2 and message in result.output, result.output


def test_a_directory_or_missing_file_is_one_clear_error(first_run: Path, tmp_path: Path) -> None:
    sample = sample_dataset()
    common = ["--topics", str(sample.queries), "--corpus", str(sample.corpus), "-q"]
    result = invoke("--run", str(tmp_path), *common, "-o", str(tmp_path / "out.trec"))
    assert result.exit_code == 2
    assert f"error: {tmp_path}: is a directory, expected a file" in result.output
    missing = tmp_path / "nope.trec"
    result = invoke("--run", str(missing), *common, "-o", str(tmp_path / "out.trec"))
    assert result.exit_code == 2
    assert f"error: {missing}: not found" in result.output
    assert not (tmp_path / "out.trec").exists()
