"""The GPU round trip of benchmarks/denser_gpu.py, run on the CPU: a trained model exported
compactly (fp16, frozen parts left out) and rebuilt here encodes like the model it came from."""

from __future__ import annotations

import dataclasses
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from elasticir.models.denser import ElasticDenser
from elasticir.train.denser import DenserTrainConfig, train_denser

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import denser_gpu  # noqa: E402

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_torch_thread")]


def test_exported_model_rebuilds_into_the_same_encoder(
    tiny: DenserTrainConfig, tmp_path: Path
) -> None:
    config = dataclasses.replace(tiny, output=tmp_path / "trained" / "tiny", steps=4, lr=1e-3)
    trained = train_denser(config, progress=False)
    base = denser_gpu.base_model_dir()
    out = tmp_path / "out"
    out.mkdir()
    parts = denser_gpu.export(trained, base, out)
    assert len(parts) == 2 and all(p.stat().st_size < 16_000_000 for p in parts)
    with tarfile.open(out / "manifests.tar.gz", "w:gz") as tar:
        denser_gpu.bundle(tar, trained, {"probe_seconds_per_step": None, "device": "CPU"})
    denser_gpu.unpack(out, tmp_path / "rebuilt")
    rebuilt = tmp_path / "rebuilt" / "tiny"
    with pytest.raises(FileExistsError):  # never overwrites a model
        denser_gpu.unpack(out, tmp_path / "rebuilt")

    original, copy = ElasticDenser(str(trained)), ElasticDenser(str(rebuilt))
    assert copy.levels == original.levels
    assert copy.fingerprint == ElasticDenser(str(base)).fingerprint  # the base passage space
    manifest = json.loads((rebuilt / "elasticir.json").read_text())
    assert manifest["gpu"]["trained_on"].startswith("CPU")
    assert manifest["training"]["steps"] == 4
    queries = ["who wrote hamlet", "symptoms of vitamin d deficiency", "define erosion"]
    untrained = ElasticDenser(str(base)).encode_queries(queries)
    trained_full = original.encode_queries(queries)
    assert np.abs(trained_full - untrained).max() > 1e-2  # training moved the weights
    for level in ("full", "L2-W50"):
        a = original.encode_queries(queries, level=level)
        b = copy.encode_queries(queries, level=level)
        assert np.abs(a - b).max() < 2e-3  # fp16 rounding of the trained tensors only
