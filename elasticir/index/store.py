"""EmbeddingStore: passage vectors cached on disk in shards, written so a kill loses nothing.

Layout of a store directory (see :mod:`elasticir.index.sharded` for what all shard
directories share: content keys, locks, corrupt-shard repair)::

    meta.json            encoder fingerprint, level, dim, dtype, shard size, the corpus's
                         path and content key (a hash per shard of passages)
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

The whole corpus is read and checked before the first passage is encoded: a malformed line
anywhere stops the run before any shard is written, and an empty corpus leaves nothing.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from elasticir.compute.levels import FULL, Level
from elasticir.data.corpus import CorpusDigest, chunks, digest_corpus, iter_corpus
from elasticir.data.errors import InputFormatError
from elasticir.data.files import atomic_file, remove_dead_leftovers
from elasticir.data.manifest import META_FILE
from elasticir.index.sharded import (
    DirectoryLock,
    ShardedDirectory,
    check_unchanged,
    load_array,
    needs_encoding,
    open_sharded_meta,
)
from elasticir.progress import progress_bar

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser

STORE_FORMAT = "elasticir-embeddings"
DEFAULT_SHARD_SIZE = 4096
# meta.json fields that must agree for a rerun to add to an existing store
_CHECKED = ("format", "side", "encoder", "level", "dim", "dtype", "shard_size")


@dataclass(frozen=True)
class EncodeReport:
    num_passages: int
    encoded: int  # passages encoded by this call (the rest were already in finished shards)
    complete: bool  # every shard of the corpus is on disk
    seconds: float
    notes: tuple[str, ...] = field(default=())  # shards re-encoded, and why


class EmbeddingStore(ShardedDirectory):
    """Read access to a store directory written by :func:`encode_corpus`."""

    _FORMAT = STORE_FORMAT
    NOUN, HOLDS = "store", "embeddings"
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
    _REBUILD = "rerun `elasticir index` on the same corpus: it re-encodes this shard"
    _REQUIRED = {"format": str, "dim": int, "level": str, "encoder": dict}

    @property
    def level(self) -> Level:
        return Level(self.meta["level"])

    def iter_shards(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """``(doc_ids, vectors)`` per shard in corpus order; vectors are ``(rows, dim)``.

        A shard that does not read back as written raises :class:`InputFormatError` naming
        its file and how to re-make it.
        """
        self._check_complete()
        rows = 0
        for npy in self.shard_paths():
            try:
                ids = npy.with_suffix(".ids").read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise self._corrupt(
                    npy.with_suffix(".ids"), "doc ids, one per line", str(err)
                ) from None
            try:
                vectors = load_array(npy, mmap=False)
            except ValueError as err:
                raise self._corrupt(
                    npy, f"a NumPy array of {self.dim}-d vectors", str(err)
                ) from None
            if vectors.shape != (len(ids), self.dim) or vectors.dtype != np.float32:
                raise self._corrupt(
                    npy,
                    f"{len(ids)} rows of {self.dim} float32 dims",
                    f"{vectors.dtype} {vectors.shape}",
                )
            rows += len(ids)
            yield ids, vectors
        expected = self.meta.get("num_passages")
        if expected is not None and rows != expected:
            raise InputFormatError(
                self.path / META_FILE, None, f"{expected} passages in the shards", str(rows)
            )

    def load(self) -> tuple[list[str], np.ndarray]:
        """All doc ids and one ``(num_passages, dim)`` matrix."""
        ids: list[str] = []
        blocks: list[np.ndarray] = []
        with DirectoryLock(self.path, reader=True):  # no writer resets shards being read
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
    digest: CorpusDigest | None = None,
) -> EncodeReport:
    """Encode every passage of ``corpus`` into the store at ``store_dir``; resumable.

    ``dim`` stores the vectors through the encoder's learned projection to that many
    dimensions (the store, and any index built from it, shrink by the same factor); a
    ``level`` below full is the cheap-indexing mode, recorded in ``meta.json``. ``digest``
    is the corpus's :func:`~elasticir.data.corpus.digest_corpus` when the caller already has
    it (with this ``shard_size``); otherwise the corpus is read and checked here first.

    Raises ``ValueError`` when the directory already holds a store made with another encoder,
    level, dimension or shard size (use a new directory for those), when it is not a store,
    or when another process is writing it from a different corpus. A corpus whose content
    changed since the store was written has its changed shards encoded again, and the
    report's ``notes`` say so.
    """
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
    level = encoder.check_level(level)
    encoder.projection(dim)  # an unknown dimension fails before anything is written
    store_dir = Path(store_dir)
    EmbeddingStore.check_usable(store_dir)
    if digest is None:
        with progress_bar(progress, None, f"checking {Path(corpus).name}") as advance:
            digest = digest_corpus(corpus, shard_size, advance)
    if digest.shard_size != shard_size:
        raise ValueError(f"the digest is for shards of {digest.shard_size}, not {shard_size}")
    if digest.num_passages == 0:
        raise ValueError(f"{corpus}: the corpus holds no passages; nothing to encode")
    created = not store_dir.exists()
    try:
        with DirectoryLock(store_dir) as lock:
            return _encode_into(
                corpus, store_dir, encoder, level, dim, digest, (index, count), batch_size,
                progress, lock,
            )  # fmt: skip
    except BaseException:
        # A run that fails before finishing any shard (a level the passage side lacks, a
        # refused store) leaves no half-made store behind; finished shards are kept.
        if created and not any(store_dir.glob("shard-*.npy")):
            shutil.rmtree(store_dir, ignore_errors=True)
        raise


def _encode_into(
    corpus: str | Path,
    store_dir: Path,
    encoder: ElasticDenser,
    level: Level,
    dim: int | None,
    digest: CorpusDigest,
    shard: tuple[int, int],
    batch_size: int | None,
    progress: bool,
    lock: DirectoryLock,
) -> EncodeReport:
    index, count = shard
    remove_dead_leftovers(store_dir)
    described = encoder.describe(dim=dim, level=level)
    meta: dict[str, Any] = {
        "format": STORE_FORMAT,
        "version": 2,
        "side": "passage",
        "encoder": described,
        "level": str(level),
        "dim": described["dim"],
        "dtype": "float32",
        "shard_size": digest.shard_size,
        "corpus": str(Path(corpus).resolve()),
        "content": digest.to_meta(),
        "num_shards": len(digest.shards),
        "num_passages": digest.num_passages,
    }
    meta, notes = open_sharded_meta(store_dir, meta, _CHECKED, lock, EmbeddingStore)
    store = EmbeddingStore(store_dir)
    start = time.perf_counter()
    encoded = 0
    number = -1
    with progress_bar(progress, digest.num_passages, f"encoding {Path(corpus).name}") as advance:
        for number, passages in enumerate(chunks(iter_corpus(corpus), digest.shard_size)):
            check_unchanged(corpus, digest.shards, digest.shard_size, number, passages)
            doc_ids = [p.doc_id for p in passages]
            shapes = {".npy": (len(doc_ids), store.dim)}
            if not needs_encoding(store, number, doc_ids, shapes, number % count == index, notes):
                advance(len(passages))
                continue
            vectors = encoder.encode_passages(
                [p.encoder_text() for p in passages],
                level=level,
                batch_size=batch_size,
                progress=advance,
                dim=dim,
            )
            _write_shard(store.shard_path(number), doc_ids, vectors)
            encoded += len(passages)
    if number + 1 != len(digest.shards):
        raise ValueError(f"{corpus} changed while it was being encoded; run the command again")
    complete = not store.missing_shards()
    return EncodeReport(
        digest.num_passages, encoded, complete, time.perf_counter() - start, tuple(notes)
    )


def _write_shard(target: Path, doc_ids: list[str], vectors: np.ndarray) -> None:
    with atomic_file(target.with_suffix(".ids")) as tmp:
        tmp.write_text("".join(f"{d}\n" for d in doc_ids), encoding="utf-8")
    with atomic_file(target) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32))
