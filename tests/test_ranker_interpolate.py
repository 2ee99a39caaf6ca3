"""WiSE-FT interpolation of a trained ranker with its run's start net
(:func:`elasticir.train.ranker.interpolate_ranker`, ``elasticir train interpolate``), on the
tiny real training run of ``tests/test_train_ranker.py``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from elasticir.rerank.ranker import ElasticRanker
from elasticir.train.ranker import (
    RankerTrainConfig,
    initial_net,
    interpolate_ranker,
    load_groups,
    train_ranker,
)

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    root = tmp_path_factory.mktemp("interpolate")
    config = RankerTrainConfig(
        output=root / "trained",
        data_root=data_root,
        head="pooled",
        max_groups_per_source=4,
        steps=4,
        batch_size=2,
        group_size=4,
        max_length=64,
        lr=1e-3,  # far from the start, so the midpoint differs from both ends
        head_lr=3e-3,
        levels=("full", "L6-W50"),
        importance_pairs=16,
        exit_holdout=4,
        classifier_steps=30,
        checkpoint_every=4,
        threads=1,
    )
    return train_ranker(config, progress=False)


def trunk_and_heads(path: Path) -> dict[str, torch.Tensor]:
    exits = load_file(str(path / "exits.safetensors"))
    out = {f"encoder.{k}": v for k, v in load_file(str(path / "model.safetensors")).items()}
    out.update({k: v for k, v in exits.items() if not k.startswith("classifier.")})
    return out


def test_the_ends_are_the_trained_ranker_and_its_start(trained: Path, tmp_path: Path) -> None:
    one = interpolate_ranker(trained, 1.0, tmp_path / "one")
    assert ElasticRanker(one).fingerprint == ElasticRanker(trained).fingerprint  # bit for bit

    zero = interpolate_ranker(trained, 0.0, tmp_path / "zero")
    manifest = json.loads((trained / "elasticir.json").read_text())
    config = RankerTrainConfig.from_dict(manifest["training"]["config"])
    start, _, _ = initial_net(config, load_groups(config))
    expected = start.state_dict()
    got = trunk_and_heads(zero)
    assert got.keys() <= expected.keys() and len(got) > 100
    for name, tensor in got.items():
        assert torch.equal(tensor, expected[name]), name
    # the pooled start is the bi-encoder: closed gates, a scaled cosine head
    assert torch.all(got["gates"] == config.gate_init)


def test_the_midpoint_mixes_every_trained_weight_and_records_it(
    trained: Path, tmp_path: Path
) -> None:
    zero = trunk_and_heads(interpolate_ranker(trained, 0.0, tmp_path / "zero"))
    half_path = interpolate_ranker(trained, 0.5, tmp_path / "half")
    one = trunk_and_heads(trained)
    half = trunk_and_heads(half_path)
    moved = [name for name in one if not torch.equal(one[name], zero[name])]
    assert "gates" in moved and len(moved) > 50
    for name in moved:
        torch.testing.assert_close(half[name], (zero[name] + one[name]) / 2, rtol=0, atol=1e-6)
    record = json.loads((half_path / "elasticir.json").read_text())["training"]
    trained_record = json.loads((trained / "elasticir.json").read_text())["training"]
    assert record["key"] == trained_record["key"]  # the run's data record is kept
    mixed = record["interpolation"]
    assert mixed["alpha"] == 0.5 and mixed["trained"] == str(trained.resolve())
    assert mixed["trained_fingerprint"] == ElasticRanker(trained).fingerprint
    ranker = ElasticRanker(half_path)
    assert ranker.has_classifier and ranker.levels == ElasticRanker(trained).levels
    out = ranker.score_pairs(["who wrote hamlet"] * 2, ["Shakespeare wrote Hamlet.", "Rain."])
    assert out.scores.shape == (2,) and bool(torch.isfinite(torch.as_tensor(out.scores)).all())


def test_bad_requests_are_refused_before_anything_is_written(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        interpolate_ranker(trained, 1.5, tmp_path / "x")
    with pytest.raises(ValueError, match="is the model itself"):
        interpolate_ranker(trained, 0.5, trained)
    half = interpolate_ranker(trained, 0.5, tmp_path / "half")
    with pytest.raises(ValueError, match="already an interpolation"):
        interpolate_ranker(half, 0.5, tmp_path / "twice")
    bare = tmp_path / "bare"
    shutil.copytree(trained, bare)
    manifest = json.loads((bare / "elasticir.json").read_text())
    del manifest["training"]
    (bare / "elasticir.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="no training record"):
        interpolate_ranker(bare, 0.5, tmp_path / "y")
    stale = tmp_path / "stale"  # as if the data folder had changed since the run
    shutil.copytree(trained, stale)
    manifest = json.loads((stale / "elasticir.json").read_text())
    manifest["training"]["key"] = "0" * 16
    (stale / "elasticir.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="no longer hashes to its run's key"):
        interpolate_ranker(stale, 0.5, tmp_path / "z")
    assert not any((tmp_path / name).exists() for name in ("x", "twice", "y", "z"))
    written = (half / "model.safetensors").stat().st_mtime_ns
    assert interpolate_ranker(trained, 0.5, half) == half  # the same request: nothing redone
    assert (half / "model.safetensors").stat().st_mtime_ns == written
    with pytest.raises(ValueError, match="already holds another model"):
        interpolate_ranker(trained, 0.75, half)
    assert (
        json.loads((half / "elasticir.json").read_text())["training"]["interpolation"]["alpha"]
        == 0.5
    )


def test_cli_writes_the_interpolation(trained: Path, tmp_path: Path) -> None:
    from elasticir.cli.app import app
    from typer.testing import CliRunner

    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app, ["train", "interpolate", str(trained), "-o", str(out), "--alpha", "0.25", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert f"model: {out}" in result.output
    record = json.loads((out / "elasticir.json").read_text())["training"]["interpolation"]
    assert record["alpha"] == 0.25
    result = CliRunner().invoke(
        app, ["train", "interpolate", str(trained), "-o", str(out), "--alpha", "2", "-q"]
    )
    assert result.exit_code != 0 and "alpha must be in [0, 1]" in result.output
