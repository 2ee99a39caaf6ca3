"""Ranker directories: reading a ranker's manifest, and writing a ranker.

A ranker directory holds the encoder (``save_pretrained``), the tokenizer,
``exits.safetensors`` (``heads.*``: the exit heads; ``gates``: the pooled head's attention
gates; ``classifier.*``: the learned CALM exit classifier, when trained) and
``elasticir.json``, written last::

    {"kind": "elastic-ranker", "levels": [...], "max_length": 256,
     "exits": {"kind": "cls"|"pooled", "head": ..., "classifier": true|false},
     "training": {...}}
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from elasticir.compute.levels import Level
from elasticir.data.errors import InputFormatError
from elasticir.data.files import apply_umask
from elasticir.data.manifest import MODEL_MANIFEST, write_json
from elasticir.models.elastic import default_levels, level_menu
from elasticir.models.ranker.net import (
    CLASSIFIER_DESCRIPTION,
    EXITS_FILE,
    HEAD_DESCRIPTIONS,
    RankerNet,
)

__all__ = ["KIND", "manifest_levels", "read_manifest", "write_ranker"]

KIND = "elastic-ranker"


def read_manifest(model_path: str) -> dict[str, Any]:
    """A ranker directory's ``elasticir.json``; ``{}`` when there is none or it describes
    another kind of model (an ElasticDenser checkpoint, say)."""
    path = Path(model_path) / MODEL_MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputFormatError(path, err.lineno, "a JSON object", err.msg) from err
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        return {}
    return manifest


def manifest_levels(manifest: dict[str, Any], path: str, config: Any) -> tuple[Level, ...]:
    """The level menu a manifest names (``"levels"``), checked against the encoder's
    ``config``; without one, the encoder's default levels."""
    raw = manifest.get("levels")
    if raw is None:
        return default_levels(config)
    where = Path(path) / MODEL_MANIFEST
    if not isinstance(raw, list) or not all(isinstance(spec, str) for spec in raw):
        raise InputFormatError(where, None, '"levels": a list of level strings', got=repr(raw))
    try:
        return level_menu(config, raw)
    except ValueError as err:
        raise InputFormatError(where, None, '"levels": compute levels', got=str(err)) from err


def write_ranker(
    output: str | Path,
    net: RankerNet,
    tokenizer: Any,
    *,
    levels: Sequence[Level | str],
    max_length: int,
    classifier: bool,
    training: dict[str, Any] | None = None,
    source_model: str | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write a ranker directory: encoder, tokenizer, ``exits.safetensors`` and
    ``extra_files`` (name -> text) first, each renamed into place; ``elasticir.json`` (the
    mark of a complete ranker, removed first when overwriting) last."""
    from safetensors.torch import save_file

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_MANIFEST).unlink(missing_ok=True)
    staging = out / f".tmp-ranker.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    was_training = net.training
    net.eval()
    try:
        net.encoder.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        save_file(
            net.exit_state(classifier),
            str(staging / EXITS_FILE),
            metadata={"format": "elasticir-exits", "layers": str(net.num_layers)},
        )
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
        for item in staging.iterdir():
            apply_umask(item)  # some writers leave 0600 temporary files
            os.replace(item, out / item.name)
    finally:
        net.train(was_training)
        shutil.rmtree(staging, ignore_errors=True)
    manifest: dict[str, Any] = {
        "kind": KIND,
        "levels": [str(Level(level)) for level in levels],
        "max_length": int(max_length),
        "exits": {
            "kind": net.head,
            "head": HEAD_DESCRIPTIONS[net.head],
            "classifier": bool(classifier),
        },
    }
    if classifier:
        manifest["exits"]["classifier_features"] = CLASSIFIER_DESCRIPTION
    if source_model is not None:
        manifest["source_model"] = source_model
    if training is not None:
        manifest["training"] = training
    write_json(out / MODEL_MANIFEST, manifest)
    return out
