"""JSON manifests (``meta.json``, ``elasticir.json``, calibration files): read strictly, write
atomically.

Every artifact directory the toolkit writes carries one small JSON object that says what it
holds. Reading one checks it whole before anything trusts it: a truncated file, invalid JSON,
a missing key or a value of the wrong type is one :class:`InputFormatError` naming the file
and the key, never a ``KeyError`` traceback later on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.files import atomic_file

__all__ = ["META_FILE", "MODEL_MANIFEST", "read_json_object", "write_json"]

META_FILE = "meta.json"  # what an artifact directory holds: store, cache, index
MODEL_MANIFEST = "elasticir.json"  # what a model directory holds, beside Hugging Face's files

# A type, or a tuple of accepted types; ``int`` never accepts ``bool``.
Shape = type | tuple[type, ...]

_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "an object",
    list: "a list",
    type(None): "null",
}


def _describe(shape: Shape) -> str:
    kinds = shape if isinstance(shape, tuple) else (shape,)
    return " or ".join(_NAMES.get(kind, kind.__name__) for kind in kinds)


def _matches(value: Any, shape: Shape) -> bool:
    kinds = shape if isinstance(shape, tuple) else (shape,)
    if isinstance(value, bool) and bool not in kinds:
        return False  # JSON true is not a count
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, kinds)


def read_json_object(
    path: str | os.PathLike[str],
    required: Mapping[str, Shape] | None = None,
    *,
    optional: Mapping[str, Shape] | None = None,
    what: str = "a JSON object",
) -> dict[str, Any]:
    """The JSON object in ``path``, with ``required`` keys of the given types.

    ``optional`` keys are type-checked when present. Raises :class:`MissingResourceError`
    when the file is missing, and :class:`InputFormatError` (``path[:line]: expected ...;
    got ...``) when it cannot be read, is not JSON, not an object, or breaks the schema.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingResourceError(f"{path}: not found (expected {what})")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise InputFormatError(path, None, f"a readable file ({what})", err.strerror) from None
    except UnicodeDecodeError:
        raise InputFormatError(path, None, f"UTF-8 JSON ({what})", "undecodable bytes") from None
    if not text.strip():
        raise InputFormatError(path, None, what, "an empty file")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputFormatError(path, err.lineno, f"valid JSON ({what})", err.msg) from None
    if not isinstance(value, dict):
        raise InputFormatError(path, None, what, f"a JSON {type(value).__name__}")
    for key, shape in (required or {}).items():
        if key not in value:
            raise InputFormatError(path, None, f'a "{key}" entry ({what})', "none")
        if not _matches(value[key], shape):
            raise InputFormatError(path, None, f'"{key}": {_describe(shape)}', repr(value[key]))
    for key, shape in (optional or {}).items():
        if key in value and not _matches(value[key], shape):
            raise InputFormatError(path, None, f'"{key}": {_describe(shape)}', repr(value[key]))
    return value


def write_json(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as indented JSON, atomically (a kill leaves the old file or none)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
