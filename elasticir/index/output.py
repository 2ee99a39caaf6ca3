"""Where an index may be written: never over something that is not an index of its kind.

An index is built beside its path and swapped in whole (see
:func:`elasticir.data.files.atomic_dir`), so whatever was at the path is gone afterwards. The
path must therefore be absent, an empty directory, or an index of the same kind that the user
asked to replace (``overwrite``): a mistyped ``-o indexes/`` or ``-o corpus.jsonl`` is refused
before any work.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from elasticir.data.files import check_writable
from elasticir.data.manifest import META_FILE

__all__ = ["DENSE", "BM25", "check_index_output", "what_is_at"]

DENSE = "dense"
BM25 = "bm25"
_DENSE_FORMAT = "elasticir-faiss"
_BM25_KIND = "bm25-lucene"


def what_is_at(path: str | os.PathLike[str]) -> str:
    """``"absent"``, ``"empty"`` (directory), ``"file"``, ``"dense"``, ``"bm25"`` or ``"other"``.

    An index is recognised by its ``meta.json`` (or, for a Lucene index built by Pyserini or
    Anserini directly, by its ``segments_N`` file); an unreadable ``meta.json`` that names one
    of our formats still counts as that index, so it can be replaced.
    """
    path = Path(path)
    if not path.exists():
        return "absent"
    if not path.is_dir():
        return "file"
    if not any(path.iterdir()):
        return "empty"
    meta = path / META_FILE
    if meta.is_file():
        text = meta.read_text(encoding="utf-8", errors="replace")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            if value.get("format") == _DENSE_FORMAT:
                return DENSE
            if value.get("kind") == _BM25_KIND:
                return BM25
        elif f'"{_DENSE_FORMAT}"' in text:
            return DENSE
        elif f'"{_BM25_KIND}"' in text:
            return BM25
    if any(path.glob("segments_*")):
        return BM25
    return "other"


def check_index_output(path: str | os.PathLike[str], kind: str, *, overwrite: bool) -> None:
    """Raise ``ValueError`` unless a ``kind`` index may be written at ``path``.

    Allowed: nothing there, an empty directory, or (with ``overwrite``) an index of the same
    kind. The location must also be writable. Call it before any expensive work.
    """
    path = Path(path)
    found = what_is_at(path)
    if found == "file":
        raise ValueError(
            f"{path} is a file; an index is a directory: choose another output path "
            "(nothing was written)"
        )
    if found == "other":
        raise ValueError(
            f"{path} exists and is not an elasticir index; refusing to build an index there, "
            "which would replace everything in it: choose a new output path (nothing was "
            "written)"
        )
    if found in (DENSE, BM25) and found != kind:
        raise ValueError(
            f"{path} holds a {found} index; refusing to replace it with a {kind} index: "
            "choose another output path"
        )
    if found == kind and not overwrite:
        raise ValueError(
            f"{path} already holds a {kind} index; pass --overwrite (overwrite=True) to "
            "replace it (the old one stays until the new one is complete)"
        )
    check_writable(path, "index", directory=True)
