"""Export a trained model directory as a compact shipped model (see
:mod:`elasticir.models.shipped` for the folder it writes).

What is stored: every tensor of a ``model.safetensors`` that differs from the base model's
tensor of the same name (large floating tensors rounded to float16, which the card says), every
tensor of the model's other safetensors files (exit heads, DiPair's head and projections), and
the small text files the base has not; the frozen word embeddings and the tokenizer come from
the installed base. Manifests are made portable: a path to the base model becomes its name, a
path under the data folder becomes ``$ELASTICIR_DATA/...``, other absolute paths keep only
their last part. Fingerprints recorded in a manifest are recomputed for the rounded weights.
The export is then rebuilt from the folder alone (:func:`~elasticir.models.shipped.materialize`)
and every tensor file compared with the rounded model before the folder is renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from elasticir.data.manifest import MODEL_MANIFEST
from elasticir.models.shipped import (
    BASE_PACKAGE,
    CALIBRATIONS_DIR,
    CARD_JSON,
    CARD_MD,
    CHECKSUMS,
    FILES_DIR,
    LAYOUT,
    PACKAGE_FORMAT,
    TENSORS,
    base_model_dir,
    file_sha256,
    materialize,
    package_files,
    stored_key,
    tensor_digest,
)

__all__ = ["ROUND_MIN_ELEMENTS", "export_model", "portable", "round_model"]

ROUND_MIN_ELEMENTS = 1024  # floating tensors this large are stored as float16
_SKIP_DIRS = {"checkpoint", "checkpoints", "cache", "__pycache__"}
_BASE_WEIGHTS = "model.safetensors"


def _model_files(model_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in model_dir.rglob("*")
        if p.is_file()
        and not (_SKIP_DIRS & set(p.relative_to(model_dir).parts))
        and not any(part.startswith(".tmp-") for part in p.relative_to(model_dir).parts)
    )


def portable(value: Any, base: Path, data_root: Path | None, repo_root: Path | None) -> Any:
    """``value`` (a manifest's JSON) with machine paths replaced (see the module docstring)."""
    from elasticir.models.loading import DEFAULT_MODEL

    if isinstance(value, dict):
        return {k: portable(v, base, data_root, repo_root) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, base, data_root, repo_root) for v in value]
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    path = Path(value)
    for root, shown in ((data_root, "$ELASTICIR_DATA"), (repo_root, ".")):
        if root is not None and path.is_relative_to(root):
            relative = path.relative_to(root).as_posix()
            return f"{shown}/{relative}" if relative != "." else shown
    if path == base or path.resolve() == base.resolve():
        return DEFAULT_MODEL
    return path.name


def round_model(model_dir: Path, out: Path, base: Path) -> dict[str, Any]:
    """Copy ``model_dir`` into ``out`` with every stored floating tensor of at least
    :data:`ROUND_MIN_ELEMENTS` elements rounded to float16 and back; return the layout's
    ``files`` entries (tensor files: dtypes, stored names, digest, metadata)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(base / _BASE_WEIGHTS), "pt") as fh:
        base_tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    base_files = {p.relative_to(base).as_posix(): p for p in base.rglob("*") if p.is_file()}
    entries: dict[str, Any] = {}
    for source in _model_files(model_dir):
        name = source.relative_to(model_dir).as_posix()
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix != ".safetensors":
            shutil.copyfile(source, target)
            digest = file_sha256(source)
            for candidate in (name, source.name):  # the same path, else the same file name
                same = base_files.get(candidate)
                if same is not None and file_sha256(same) == digest:
                    entries[name] = {"from": "base", "path": candidate}
                    break
            else:
                entries[name] = {"from": "files"}
            continue
        with safe_open(str(source), "pt") as fh:
            tensors = {t: fh.get_tensor(t) for t in fh.keys()}
            metadata = fh.metadata() or {}
        against = base_tensors if source.name == _BASE_WEIGHTS else {}
        stored, rounded = [], {}
        for tensor, value in tensors.items():
            reference = against.get(tensor)
            if (
                reference is not None
                and reference.dtype == value.dtype
                and reference.shape == value.shape
                and torch.equal(reference, value)
            ):
                rounded[tensor] = value
                continue
            stored.append(tensor)
            if value.is_floating_point() and value.numel() >= ROUND_MIN_ELEMENTS:
                value = value.to(torch.float16).to(value.dtype)
            rounded[tensor] = value.contiguous()
        save_file(rounded, str(target), metadata=metadata or None)
        entries[name] = {
            "from": "tensors",
            "base": _BASE_WEIGHTS if against else None,
            "dtypes": {t: str(v.dtype).removeprefix("torch.") for t, v in rounded.items()},
            "stored": sorted(stored),
            "digest": tensor_digest(rounded),
            "metadata": metadata,
        }
    return entries


def _refresh_fingerprints(out: Path) -> None:
    """Recompute the fingerprints a DiPair manifest records for an encoder saved inside it."""
    from elasticir.models.loading import model_fingerprint, read_settings

    manifest_path = out / MODEL_MANIFEST
    if not manifest_path.is_file():
        return
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    encoder = manifest.get("encoder")
    if (
        isinstance(encoder, dict)
        and (out / str(encoder.get("model", "")) / "config.json").is_file()
    ):
        inside = str(out / encoder["model"])
        encoder["fingerprint"] = model_fingerprint(inside, read_settings(inside))
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def export_model(
    model_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    card: Mapping[str, Any],
    card_markdown: str,
    *,
    calibrations: Mapping[str, str | os.PathLike[str]] | None = None,
    data_root: Path | None = None,
    repo_root: Path | None = None,
) -> Path:
    """Write the shipped-model folder ``output`` (its name is the model's short name) from
    the trained ``model_dir``; ``card`` and ``card_markdown`` are written as the card, with
    the export's own facts (stored tensors, sizes, base checksum) added under ``"package"``.
    The folder is rebuilt and compared before it replaces an earlier export."""
    from importlib.metadata import version

    model_dir, output = Path(model_dir), Path(output)
    if not (model_dir / MODEL_MANIFEST).is_file():
        raise FileNotFoundError(f"{model_dir}: not a finished model (no {MODEL_MANIFEST})")
    if output.exists() and not (output / CHECKSUMS).is_file():
        raise ValueError(
            f"{output} exists and is not a shipped model (no {CHECKSUMS}); refusing to replace "
            "it: choose another --output or name (nothing was written)"
        )
    base = base_model_dir()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-export-", dir=output.parent) as work:
        work_dir = Path(work)
        rounded_dir, package = work_dir / "rounded", work_dir / output.name
        files = round_model(model_dir, rounded_dir, base)
        for name, entry in files.items():
            if name.endswith(".json") and entry["from"] == "files":
                path = rounded_dir / name
                value = json.loads(path.read_text(encoding="utf-8"))
                value = portable(value, base, data_root, repo_root)
                path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
        _refresh_fingerprints(rounded_dir)
        (package / FILES_DIR).mkdir(parents=True)
        stored: dict[str, Any] = {}
        from safetensors import safe_open
        from safetensors.torch import save_file

        for name, entry in files.items():
            if entry["from"] == "files":
                (package / FILES_DIR / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(rounded_dir / name, package / FILES_DIR / name)
                entry["sha256"] = file_sha256(rounded_dir / name)
            elif entry["from"] == "tensors":
                with safe_open(str(rounded_dir / name), "pt") as fh:
                    for tensor in entry["stored"]:
                        value = fh.get_tensor(tensor)
                        if value.is_floating_point() and value.numel() >= ROUND_MIN_ELEMENTS:
                            value = value.half()
                        stored[stored_key(name, tensor)] = value.contiguous()
        if stored:
            save_file(stored, str(package / TENSORS), metadata={"format": PACKAGE_FORMAT})
        layout = {
            "format": PACKAGE_FORMAT,
            "base": {
                "package": BASE_PACKAGE,
                "version": version(BASE_PACKAGE),
                "sha256": {_BASE_WEIGHTS: file_sha256(base / _BASE_WEIGHTS)},
            },
            "files": files,
        }
        (package / LAYOUT).write_text(json.dumps(layout, indent=2) + "\n", encoding="utf-8")
        for name, path in (calibrations or {}).items():
            (package / CALIBRATIONS_DIR).mkdir(exist_ok=True)
            value = json.loads(Path(path).read_text(encoding="utf-8"))
            value = portable(value, base, data_root, repo_root)
            text = json.dumps(value, indent=2) + "\n"
            (package / CALIBRATIONS_DIR / f"{name}.json").write_text(text, encoding="utf-8")
        full = portable(dict(card), base, data_root, repo_root)
        full["package"] = {
            "format": PACKAGE_FORMAT,
            "base": layout["base"],
            "stored_tensors": len(stored),
            "stored_parameters": int(sum(v.numel() for v in stored.values())),
            "rounding": f"floating tensors of >= {ROUND_MIN_ELEMENTS} elements stored as "
            "float16; the rest, and the exit/head files' small tensors, as trained",
            "tensors_bytes": (package / TENSORS).stat().st_size if stored else 0,
        }
        (package / CARD_JSON).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
        (package / CARD_MD).write_text(card_markdown.rstrip() + "\n", encoding="utf-8")
        lines = [
            f"{file_sha256(p)}  {p.relative_to(package).as_posix()}" for p in package_files(package)
        ]
        (package / CHECKSUMS).write_text("\n".join(lines) + "\n", encoding="utf-8")
        # Rebuild from the folder alone: every tensor file is checked against its digest.
        materialize(output.name, work_dir / "check", root=work_dir)
        old = output.parent / f".old-{output.name}"
        shutil.rmtree(old, ignore_errors=True)
        if output.exists():
            os.rename(output, old)
        os.rename(package, output)
        shutil.rmtree(old, ignore_errors=True)
    return output
