"""EmbeddingStore: passage vectors cached on disk in shards, written so a kill loses nothing.

Layout of a store directory::

    meta.json            encoder fingerprint, level, dim, dtype, shard size, corpus
    shard-00000.ids      one doc id per line, in corpus order
    shard-00000.npy      (rows, dim) float32, the same rows in the same order
    ...

Shard ``s`` always holds passages ``[s * shard_size, (s + 1) * shard_size)`` of the corpus in
reading order, and each file is renamed into place only once complete (``.ids`` first, then
``.npy``, so an ``.npy`` proves its shard is whole). Rerunning the same command after a kill
therefore skips finished shards and encodes the rest: every passage lands exactly once, with
the vectors an uninterrupted run produces (batching inside a shard does not depend on what
came before). ``shard=(i, n)`` makes a process encode only shards ``s % n == i``, so ``n``
processes can share one corpus and one store.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from elasticir.data.corpus import count_passages, iter_corpus
from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.files import atomic_file
from elasticir.data.records import Passage
from elasticir.encoders.levels import FULL, Level
from elasticir.progress import progress_bar

if TYPE_CHECKING:
    from elasticir.encoders.denser import ElasticDenser

STORE_FORMAT = "elasticir-embeddings"
DEFAULT_SHARD_SIZE = 4096
# A temporary file untouched this long belongs to a killed run, not to a live writer (which
# renames its file into place within seconds); an hour also absorbs clock skew between hosts.
STALE_TMP_SECONDS = 3600


@dataclass(frozen=True)
class EncodeReport:
    num_passages: int
    encoded: int  # passages encoded by this call (the rest were already in finished shards)
    complete: bool  # every shard of the corpus is on disk
    seconds: float


class ShardedDirectory:
    """Read access to a directory of ``meta.json`` and ``shard-NNNNN.*`` files written shard
    by shard as :func:`encode_corpus` writes them (an :class:`EmbeddingStore`, or a DiPair
    :class:`~elasticir.rerank.token_cache.TokenCache`).

    A subclass names its ``meta.json`` format and what its errors say: ``_NOT_ONE`` when
    there is no ``meta.json``, ``_UNFINISHED`` when the corpus was not read to its end,
    ``_INCOMPLETE`` (with ``{count}`` and ``{shown}``) when shards are missing.
    """

    _FORMAT: ClassVar[str]
    _NOT_ONE: ClassVar[str]
    _UNFINISHED: ClassVar[str]
    _INCOMPLETE: ClassVar[str]

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise MissingResourceError(f"{self.path}: {self._NOT_ONE}")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        if self.meta.get("format") != self._FORMAT:
            raise InputFormatError(meta_path, None, f'"format": "{self._FORMAT}"')

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def shard_paths(self) -> list[Path]:
        return sorted(self.path.glob("shard-*.npy"))

    def missing_shards(self) -> list[int]:
        """Shards not yet on disk; empty once the directory is complete."""
        total = self.meta.get("num_shards")
        if total is None:
            raise MissingResourceError(f"{self.path}: {self._UNFINISHED}")
        present = {int(p.stem.split("-")[1]) for p in self.shard_paths()}
        return [s for s in range(total) if s not in present]

    def _check_complete(self) -> None:
        """Raise ``MissingResourceError`` naming the shards not on disk yet, if any."""
        missing = self.missing_shards()
        if missing:
            shown = ", ".join(str(s) for s in missing[:10]) + (" ..." if len(missing) > 10 else "")
            message = self._INCOMPLETE.format(count=len(missing), shown=shown)
            raise MissingResourceError(f"{self.path}: {message}")


class EmbeddingStore(ShardedDirectory):
    """Read access to a store directory written by :func:`encode_corpus`."""

    _FORMAT = STORE_FORMAT
    _NOT_ONE = (
        "not an embedding store (no meta.json); create it with "
        "`elasticir encode` or `elasticir index`"
    )
    _UNFINISHED = (
        "encoding has not finished reading the corpus yet; rerun the "
        "encoding command (it resumes where it stopped)"
    )
    _INCOMPLETE = (
        "{count} shard(s) not encoded yet ({shown}); rerun the "
        "encoding command (every --shard i/n part) to finish the store"
    )

    @property
    def level(self) -> Level:
        return Level(self.meta["level"])

    def iter_shards(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """``(doc_ids, vectors)`` per shard in corpus order; vectors are ``(rows, dim)``."""
        self._check_complete()
        for npy in self.shard_paths():
            ids = npy.with_suffix(".ids").read_text(encoding="utf-8").splitlines()
            vectors = np.load(npy)
            if vectors.shape != (len(ids), self.dim):
                raise InputFormatError(
                    npy, None, f"{len(ids)} rows of {self.dim} dims", str(vectors.shape)
                )
            yield ids, vectors

    def load(self) -> tuple[list[str], np.ndarray]:
        """All doc ids and one ``(num_passages, dim)`` matrix."""
        ids: list[str] = []
        blocks: list[np.ndarray] = []
        for shard_ids, vectors in self.iter_shards():
            ids.extend(shard_ids)
            blocks.append(vectors)
        matrix = np.concatenate(blocks) if blocks else np.empty((0, self.dim), np.float32)
        return ids, matrix


def encode_corpus(
    corpus: str | Path,
    store_dir: str | Path,
    encoder: ElasticDenser,
    *,
    level: Level | str = FULL,
    shard_size: int = DEFAULT_SHARD_SIZE,
    shard: tuple[int, int] = (0, 1),
    batch_size: int | None = None,
    progress: bool = True,
    dim: int | None = None,
) -> EncodeReport:
    """Encode every passage of ``corpus`` into the store at ``store_dir``; resumable.

    ``dim`` stores the vectors through the encoder's learned projection to that many
    dimensions (the store, and any index built from it, shrink by the same factor); a
    ``level`` below full is the cheap-indexing mode, recorded in ``meta.json``.
    Raises ``ValueError`` when the directory already holds a store made with another
    encoder, level, dimension, shard size or corpus (use a new directory for those).
    """
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
    level = encoder.check_level(level)
    encoder.projection(dim)  # an unknown dimension fails before anything is written
    store_dir = Path(store_dir)
    created = not store_dir.exists()
    store_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _encode_into(
            corpus, store_dir, encoder, level, dim, shard_size, (index, count), batch_size, progress
        )
    except BaseException:
        # A run that fails before finishing any shard (a corpus that does not parse, a level
        # the passage side lacks) leaves no half-made store behind; finished shards are kept.
        if created and not any(store_dir.glob("shard-*.npy")):
            shutil.rmtree(store_dir, ignore_errors=True)
        raise


def _encode_into(
    corpus: str | Path,
    store_dir: Path,
    encoder: ElasticDenser,
    level: Level,
    dim: int | None,
    shard_size: int,
    shard: tuple[int, int],
    batch_size: int | None,
    progress: bool,
) -> EncodeReport:
    index, count = shard
    _remove_stale_leftovers(store_dir)
    described = encoder.describe(dim=dim, level=level)
    meta = {
        "format": STORE_FORMAT,
        "version": 1,
        "side": "passage",
        "encoder": described,
        "level": str(level),
        "dim": described["dim"],
        "dtype": "float32",
        "shard_size": shard_size,
        "corpus": str(Path(corpus).resolve()),
    }
    meta = _open_meta(store_dir, meta)
    total = count_passages(corpus)
    start = time.perf_counter()
    encoded = 0
    num_shards = 0
    with progress_bar(progress, total, f"encoding {Path(corpus).name}") as advance:
        for number, passages in enumerate(_chunks(iter_corpus(corpus), shard_size)):
            num_shards = number + 1
            target = store_dir / f"shard-{number:05d}.npy"
            if number % count != index or target.exists():
                advance(len(passages))
                continue
            vectors = encoder.encode_passages(
                [p.encoder_text() for p in passages],
                level=level,
                batch_size=batch_size,
                progress=advance,
                dim=dim,
            )
            _write_shard(target, [p.doc_id for p in passages], vectors)
            encoded += len(passages)
    if meta.get("num_shards") != num_shards:
        meta = {**meta, "num_shards": num_shards, "num_passages": total}
        _write_json(store_dir / "meta.json", meta)
    complete = not EmbeddingStore(store_dir).missing_shards()
    return EncodeReport(total, encoded, complete, time.perf_counter() - start)


def _remove_stale_leftovers(store_dir: Path) -> None:
    """Delete ``.tmp-*`` files left by killed runs; they are never read, only take space.

    Only old ones: another process encoding other shards of this store (``shard=(i, n)``)
    may be writing its own temporary file right now, and deleting that would crash it.
    """
    cutoff = time.time() - STALE_TMP_SECONDS
    for leftover in store_dir.glob(".tmp-*"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except FileNotFoundError:
            pass  # renamed into place or removed by its writer meanwhile


def _open_meta(store_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    path = store_dir / "meta.json"
    if not path.exists():
        _write_json(path, meta)
        return meta
    existing = json.loads(path.read_text(encoding="utf-8"))
    keys = ("format", "side", "encoder", "level", "dim", "dtype", "shard_size", "corpus")
    differ = [k for k in keys if existing.get(k) != meta.get(k)]
    if differ:
        details = "; ".join(
            f"{k}: store has {existing.get(k)!r}, asked {meta.get(k)!r}" for k in differ
        )
        raise ValueError(
            f"{store_dir} holds embeddings made differently ({details}); "
            "use another directory or delete this one"
        )
    return existing


def _write_shard(target: Path, doc_ids: list[str], vectors: np.ndarray) -> None:
    with atomic_file(target.with_suffix(".ids")) as tmp:
        tmp.write_text("".join(f"{d}\n" for d in doc_ids), encoding="utf-8")
    with atomic_file(target) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32))


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _chunks(passages: Iterator[Passage], size: int) -> Iterator[list[Passage]]:
    while chunk := list(islice(passages, size)):
        yield chunk
