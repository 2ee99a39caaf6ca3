"""DiPair model directories: names, the manifest, and where the encoder lives.

A DiPair model is one directory::

    elasticir.json       {"kind": "dipair", "k", "query_tokens", "dim", "head": {...},
                          "encoder": {"model", "fingerprint", ...}, "training": {...}}
    dipair.safetensors   the two projections and the head
    encoder/             the fine-tuned encoder (only when training changed it; otherwise
                         "encoder" names the base model and its weights' fingerprint)

``elasticir.json`` is written last (:meth:`DiPair.save
<elasticir.models.dipair.model.DiPair.save>`): a directory without it is not a finished model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.models.dipair.config import DiPairConfig

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser

__all__ = [
    "DIPAIR_KIND",
    "ENCODER_DIR",
    "MANIFEST_FILE",
    "WEIGHTS_FILE",
    "config_from_manifest",
    "describe_encoder",
    "encoder_location",
    "read_manifest",
]

DIPAIR_KIND = "dipair"
WEIGHTS_FILE = "dipair.safetensors"
MANIFEST_FILE = "elasticir.json"
ENCODER_DIR = "encoder"


def read_manifest(path: str | Path) -> dict[str, Any]:
    """``elasticir.json`` of a DiPair directory, checked to be one."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise MissingResourceError(
            f"{path}: not a DiPair model (no {MANIFEST_FILE}); train one with "
            "`elasticir train dipair`"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputFormatError(manifest_path, err.lineno, "a JSON object", err.msg) from err
    if not isinstance(manifest, dict) or manifest.get("kind") != DIPAIR_KIND:
        got = manifest.get("kind") if isinstance(manifest, dict) else type(manifest).__name__
        raise InputFormatError(manifest_path, None, f'"kind": "{DIPAIR_KIND}"', repr(got))
    encoder = manifest.get("encoder")
    if not isinstance(encoder, dict) or not all(
        isinstance(encoder.get(key), str) and encoder[key] for key in ("model", "fingerprint")
    ):
        raise InputFormatError(
            manifest_path, None, '"encoder": {"model": ..., "fingerprint": ...}', repr(encoder)
        )
    return manifest


def config_from_manifest(path: Path, manifest: Mapping[str, Any]) -> DiPairConfig:
    """The :class:`DiPairConfig` a manifest of the model at ``path`` describes."""
    head = manifest.get("head") or {}
    try:
        return DiPairConfig(
            k=manifest["k"],
            query_tokens=manifest["query_tokens"],
            dim=manifest["dim"],
            layers=head["layers"],
            heads=head["heads"],
            ffn=head["ffn"],
            dropout=head["dropout"],
            query_max_length=manifest["query_max_length"],
            passage_max_length=manifest["passage_max_length"],
            residual=manifest.get("residual", False),  # models written before it existed
        )
    except (KeyError, TypeError, ValueError) as err:
        raise InputFormatError(
            path / MANIFEST_FILE, None, "a DiPair shape (k, query_tokens, dim, head)", str(err)
        ) from err


def describe_encoder(encoder: ElasticDenser) -> dict[str, str]:
    """The manifest's ``"encoder"`` entry for ``encoder``: its model (a path made
    absolute) and its own fingerprint."""
    name = encoder.model_name
    path = Path(name).expanduser()
    if path.exists():
        name = str(path.resolve())
    return {"model": name, "fingerprint": encoder.own_fingerprint}


def encoder_location(path: Path, model: str) -> str:
    """Where to load the encoder a manifest at ``path`` names as ``model``."""
    beside = path / model
    if not Path(model).is_absolute() and (beside / "config.json").is_file():
        return str(beside)  # the fine-tuned encoder saved inside the model directory
    return model  # a name or an absolute path
