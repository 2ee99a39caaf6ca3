"""Corpora encoded by a teacher, for training: where the training cache lives, which file a
corpus name means, and the corpus's teacher vectors (an embedding store encoded once).

``elasticir train projection --corpus`` adds these vectors to its pool; the anchor groups
(:mod:`elasticir.train.anchor`) and the judged groups' dense negatives
(:mod:`elasticir.train.judged`) search them. Only passage texts are read, never a dataset's
queries or judgements.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Any

from elasticir.train.keys import digest

__all__ = ["corpus_file", "default_cache", "file_sha256", "teacher_corpus_store"]


def default_cache() -> Path:
    """The training cache when a config names none: ``$ELASTICIR_CACHE``, else
    ``~/.cache/elasticir``."""
    return Path(os.environ.get("ELASTICIR_CACHE", Path.home() / ".cache" / "elasticir"))


def corpus_file(name: str, data_root: Path | None = None) -> Path:
    """The corpus file of ``name``: a file as given, or the named dataset's corpus."""
    from elasticir.data.datasets import get_dataset

    path = Path(name)
    if path.is_file():
        return path
    if path.suffix or len(path.parts) > 1:  # meant as a file, not a dataset name
        raise FileNotFoundError(errno.ENOENT, "corpus file not found", name)
    dataset = get_dataset(name, root=data_root)
    if dataset.corpus is None:
        raise ValueError(f"dataset {name!r} has no corpus")
    return Path(dataset.corpus)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    hashed = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            hashed.update(block)
    return hashed.hexdigest()


def teacher_corpus_store(teacher: Any, path: Path, cache: Path, progress: bool) -> tuple[str, Path]:
    """``(key, store directory)`` of corpus file ``path`` encoded by ``teacher`` (an
    ElasticDenser at full compute) under ``cache/corpora`` (resumable, encoded once)."""
    from elasticir.index.store import encode_corpus

    key = digest(  # the store's meta names the file's path: a moved copy gets its own
        {
            "teacher": teacher.fingerprint,
            "max_length": teacher.passage_max_length,
            "path": str(Path(path).resolve()),
            "file": file_sha256(path),
        }
    )
    store = cache / "corpora" / key
    encode_corpus(path, store, teacher, shard_size=1024, progress=progress)
    return key, store
