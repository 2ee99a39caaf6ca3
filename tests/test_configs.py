"""The committed training configs load, and ``"extends"`` says a variant in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elasticir.data.errors import InputFormatError
from elasticir.train.config import read_config_file
from elasticir.train.denser import DenserTrainConfig
from elasticir.train.dipair import DiPairTrainConfig
from elasticir.train.ranker import RankerTrainConfig

CONFIGS = sorted(
    p
    for p in (Path(__file__).resolve().parent.parent / "configs").rglob("*.json")
    if not p.name.endswith(".card.json")
)
KINDS = {"denser": DenserTrainConfig, "dipair": DiPairTrainConfig, "ranker": RankerTrainConfig}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_committed_config_loads(path: Path) -> None:
    kind = KINDS[path.stem.split("-")[0]]
    config = kind.from_json(path)
    assert str(config.output).startswith("models/")


def test_extends_overrides_its_base(tmp_path: Path) -> None:
    (tmp_path / "base.json").write_text(json.dumps({"output": "models/a", "steps": 10, "lr": 1e-4}))
    (tmp_path / "long.json").write_text(
        json.dumps({"extends": "base.json", "output": "models/b", "steps": 20})
    )
    assert read_config_file(tmp_path / "long.json") == {
        "output": "models/b",
        "steps": 20,
        "lr": 1e-4,
    }
    (tmp_path / "loop.json").write_text(json.dumps({"extends": "loop.json"}))
    with pytest.raises(InputFormatError, match="without a loop"):
        read_config_file(tmp_path / "loop.json")
    (tmp_path / "orphan.json").write_text(json.dumps({"extends": "nope.json"}))
    with pytest.raises(InputFormatError, match="an existing config"):
        read_config_file(tmp_path / "orphan.json")
