"""DiPair token cache: each passage's first ``k`` projected token vectors, on disk in shards.

Layout of a cache directory (by convention ``<index>.dipair/`` beside a dense index)::

    meta.json            DiPair model fingerprint, k, dim, vector_dim, dtype, shard size,
                         corpus
    shard-00000.ids      one doc id per line, in corpus order
    shard-00000.len      (rows,) int32: tokens kept per passage (< k for short passages)
    shard-00000.vec      (rows, vector_dim) float16 sentence embeddings, only when the
                         cache has them (``vector_dim`` > 0: residual DiPair models)
    shard-00000.npy      (rows, k, dim) float16, the same rows in the same order
    ...

It is written like an :class:`~elasticir.index.store.EmbeddingStore`: shard ``s`` holds
passages ``[s * shard_size, (s + 1) * shard_size)`` of the corpus in reading order, each file
is renamed into place only once complete (``.ids``, then ``.len``, then ``.vec``, then
``.npy``, so an ``.npy`` proves its shard is whole), and rerunning after a kill keeps finished
shards and encodes the rest. ``meta.json`` is checked on every rerun: a cache made by another
DiPair model (fingerprint), with another ``k``, ``dim``, ``vector_dim`` or shard size is
refused; a corpus whose content changed has its changed shards encoded again (see
:mod:`elasticir.index.sharded`).

Rows beyond a passage's length are zeros; the DiPair head masks them out.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from elasticir.data.corpus import chunks, digest_corpus, iter_corpus
from elasticir.data.errors import InputFormatError
from elasticir.data.files import atomic_file, remove_dead_leftovers
from elasticir.index.sharded import (
    DirectoryLock,
    ShardedDirectory,
    check_unchanged,
    load_array,
    needs_encoding,
    open_sharded_meta,
)
from elasticir.index.store import EncodeReport
from elasticir.models.dipair import EncodedTexts
from elasticir.progress import progress_bar

if TYPE_CHECKING:
    from elasticir.models.dipair import DiPair

__all__ = [
    "CACHE_FORMAT",
    "DEFAULT_SHARD_SIZE",
    "MissingTokensError",
    "TokenCache",
    "TokenEncoder",
    "build_token_cache",
    "default_cache_dir",
    "write_token_cache",
]

CACHE_FORMAT = "elasticir-dipair-tokens"
DEFAULT_SHARD_SIZE = 4096
DTYPE = "float16"
# meta.json fields that must agree for a rerun to add to an existing cache
_CHECKED = (
    "format",
    "model_fingerprint",
    "k",
    "dim",
    "vector_dim",
    "dtype",
    "shard_size",
)
# what a cache written before a field existed holds for it
_DEFAULTS = {"vector_dim": 0}

# texts, progress -> tokens (n, k, dim), lengths (n,), sentence vectors (n, vector_dim) or None
TokenEncoder = Callable[[Sequence[str], Callable[[int], None]], EncodedTexts]


class MissingTokensError(ValueError):
    """Doc ids asked of a token cache that it does not hold."""

    def __init__(self, path: Path, doc_ids: Sequence[str]) -> None:
        self.doc_ids = list(doc_ids)
        shown = ", ".join(self.doc_ids[:10]) + (" ..." if len(self.doc_ids) > 10 else "")
        super().__init__(
            f"{path}: {len(self.doc_ids)} doc id(s) not in the DiPair token cache: {shown}; "
            "build the cache from the corpus the candidates come from"
        )


def default_cache_dir(index: str | Path) -> Path:
    """Where the token cache of an index directory goes by convention: ``<index>.dipair``."""
    index = Path(index)
    return index.with_name(index.name + ".dipair")


class TokenCache(ShardedDirectory):
    """Read access to a cache directory written by :func:`build_token_cache`.

    ``lookup`` reads only the rows it needs from memory-mapped shards; the id -> row map is
    built on first use (one pass over the ``.ids`` files).
    """

    _FORMAT = CACHE_FORMAT
    NOUN, HOLDS = "cache", "DiPair tokens"
    _NOT_ONE = (
        "not a DiPair token cache (no meta.json); build it with "
        "DiPair.build_cache (or `elasticir index` with a DiPair model)"
    )
    _UNFINISHED = (
        "building the token cache has not finished reading the corpus "
        "yet; rerun it (it resumes where it stopped)"
    )
    _INCOMPLETE = (
        "{count} shard(s) not built yet ({shown}); rerun the "
        "cache build (every shard i/n part) to finish it"
    )
    _REBUILD = "rerun the cache build on the same corpus: it encodes this shard again"
    SHARD_SUFFIXES = (".ids", ".len", ".vec", ".npy")
    _REQUIRED = {"format": str, "dim": int, "k": int, "model_fingerprint": str}

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._rows: dict[str, int] | None = None
        self._ids: list[str] = []
        self._offsets: np.ndarray | None = None
        self._tokens: list[np.ndarray] = []
        self._vectors: list[np.ndarray] = []
        self._lengths: np.ndarray | None = None

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    @property
    def vector_dim(self) -> int:
        """Size of the stored sentence embeddings (0: the cache has none)."""
        return int(self.meta.get("vector_dim", _DEFAULTS["vector_dim"]))

    @property
    def model_fingerprint(self) -> str:
        return str(self.meta["model_fingerprint"])

    def _open(self) -> None:
        if self._rows is not None:
            return
        self._check_complete()
        ids: list[str] = []
        offsets = [0]
        tokens: list[np.ndarray] = []
        vectors: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        for npy in self.shard_paths():
            shard_ids = self._read_shard_ids(npy)
            array = self._load(npy, f"float16 of shape ({len(shard_ids)}, {self.k}, {self.dim})")
            shard_lengths = np.asarray(self._load(npy.with_suffix(".len"), "int32 lengths"))
            if array.shape != (len(shard_ids), self.k, self.dim) or array.dtype != np.float16:
                raise self._corrupt(
                    npy,
                    f"float16 of shape ({len(shard_ids)}, {self.k}, {self.dim})",
                    f"{array.dtype} {array.shape}",
                )
            if shard_lengths.shape != (len(shard_ids),):
                raise self._corrupt(
                    npy.with_suffix(".len"), f"{len(shard_ids)} lengths", str(shard_lengths.shape)
                )
            if self.vector_dim:
                shard_vectors = self._load(npy.with_suffix(".vec"), "float16 sentence vectors")
                expected = (len(shard_ids), self.vector_dim)
                if shard_vectors.shape != expected or shard_vectors.dtype != np.float16:
                    raise self._corrupt(
                        npy.with_suffix(".vec"),
                        f"float16 of shape ({len(shard_ids)}, {self.vector_dim})",
                        f"{shard_vectors.dtype} {shard_vectors.shape}",
                    )
                vectors.append(shard_vectors)
            ids.extend(shard_ids)
            offsets.append(len(ids))
            tokens.append(array)
            lengths.append(shard_lengths.astype(np.int32))
        rows = {doc_id: row for row, doc_id in enumerate(ids)}
        if len(rows) != len(ids):
            raise InputFormatError(self.path, None, "unique doc ids across shards")
        self._ids, self._tokens, self._vectors = ids, tokens, vectors
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._lengths = np.concatenate(lengths) if lengths else np.empty(0, np.int32)
        self._rows = rows

    def _read_shard_ids(self, npy: Path) -> list[str]:
        try:
            return npy.with_suffix(".ids").read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise self._corrupt(npy.with_suffix(".ids"), "doc ids", str(err)) from None

    def _load(self, path: Path, expected: str) -> np.ndarray:
        try:
            return load_array(path)
        except ValueError as err:
            raise self._corrupt(path, expected, str(err)) from None

    @property
    def doc_ids(self) -> list[str]:
        """Every doc id, in corpus order."""
        self._open()
        return list(self._ids)

    def __len__(self) -> int:
        self._open()
        return len(self._ids)

    def __contains__(self, doc_id: object) -> bool:
        self._open()
        assert self._rows is not None
        return doc_id in self._rows

    def lookup(self, doc_ids: Sequence[str]) -> EncodedTexts:
        """Tokens ``(n, k, dim)`` float16, lengths ``(n,)`` int32 and, when the cache has
        them, sentence vectors ``(n, vector_dim)`` float16 of ``doc_ids``, in order.

        Raises :class:`MissingTokensError` listing the ids the cache lacks.
        """
        self._open()
        assert self._rows is not None and self._offsets is not None
        assert self._lengths is not None
        rows_map = self._rows
        missing = [d for d in doc_ids if d not in rows_map]
        if missing:
            raise MissingTokensError(self.path, list(dict.fromkeys(missing)))
        rows = np.fromiter((rows_map[d] for d in doc_ids), dtype=np.int64, count=len(doc_ids))
        out = np.empty((len(rows), self.k, self.dim), dtype=np.float16)
        vectors = None
        if self.vector_dim:
            vectors = np.empty((len(rows), self.vector_dim), dtype=np.float16)
        shards = np.searchsorted(self._offsets, rows, side="right") - 1
        for shard in np.unique(shards):
            where = np.nonzero(shards == shard)[0]
            local = rows[where] - self._offsets[shard]
            order = np.argsort(local, kind="stable")  # ascending reads from the memory map
            out[where[order]] = self._tokens[int(shard)][local[order]]
            if vectors is not None:
                vectors[where[order]] = self._vectors[int(shard)][local[order]]
        return EncodedTexts(out, self._lengths[rows].copy(), vectors)

    def load(self) -> tuple[list[str], EncodedTexts]:
        """Every doc id and everything stored of them (tokens ``(n, k, dim)`` float16,
        lengths ``(n,)``, vectors or None), in memory."""
        self._open()
        assert self._lengths is not None
        if self._tokens:
            tokens = np.concatenate([np.asarray(t) for t in self._tokens])
        else:
            tokens = np.empty((0, self.k, self.dim), np.float16)
        vectors = None
        if self.vector_dim:
            vectors = (
                np.concatenate([np.asarray(v) for v in self._vectors])
                if self._vectors
                else np.empty((0, self.vector_dim), np.float16)
            )
        return list(self._ids), EncodedTexts(tokens, self._lengths.copy(), vectors)


def build_token_cache(
    corpus: str | Path,
    cache_dir: str | Path,
    dipair: DiPair,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    shard: tuple[int, int] = (0, 1),
    batch_size: int | None = None,
    progress: bool = True,
) -> EncodeReport:
    """Encode every passage of ``corpus`` with ``dipair`` into the cache at ``cache_dir``.

    Resumable (see the module docstring); ``shard=(i, n)`` builds only shards ``s % n == i``
    so ``n`` processes can share one corpus and one cache. Raises ``ValueError`` when the
    directory holds a cache made by another model or with other settings.
    """

    def encode(texts: Sequence[str], advance: Callable[[int], None]) -> EncodedTexts:
        return dipair.encode_passages(texts, batch_size=batch_size, progress=advance)

    return write_token_cache(
        corpus,
        cache_dir,
        encode,
        model=dipair.describe(),
        k=dipair.k,
        dim=dipair.dim,
        vector_dim=dipair.encoder.dim if dipair.config.residual else 0,
        shard_size=shard_size,
        shard=shard,
        progress=progress,
    )


def write_token_cache(
    corpus: str | Path,
    cache_dir: str | Path,
    encode: TokenEncoder,
    *,
    model: dict[str, Any],
    k: int,
    dim: int,
    vector_dim: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    label: str | None = None,
) -> EncodeReport:
    """The writer behind :func:`build_token_cache`, for any ``encode(texts, advance)``;
    with ``vector_dim`` it must also return sentence vectors of that size.

    ``model`` describes the encoding and must hold a ``"model_fingerprint"``: the cache is
    refused to any other. (Training uses it for the frozen encoder's unprojected outputs.)
    """
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    if not model.get("model_fingerprint"):
        raise ValueError("a token cache needs the encoding's model_fingerprint")
    cache_dir = Path(cache_dir)
    TokenCache.check_usable(cache_dir)
    with progress_bar(progress, None, f"checking {Path(corpus).name}") as advance:
        digest = digest_corpus(corpus, shard_size, advance)
    if digest.num_passages == 0:
        raise ValueError(f"{corpus}: the corpus holds no passages; nothing to encode")
    created = not cache_dir.exists()
    meta = {
        "format": CACHE_FORMAT,
        "version": 1,
        "model": model,
        "model_fingerprint": model["model_fingerprint"],
        "k": int(k),
        "dim": int(dim),
        "vector_dim": int(vector_dim),
        "dtype": DTYPE,
        "shard_size": shard_size,
        "corpus": str(Path(corpus).resolve()),
        "content": digest.to_meta(),
        "num_shards": len(digest.shards),
        "num_passages": digest.num_passages,
    }
    try:
        with DirectoryLock(cache_dir) as lock:
            return _write_into(corpus, cache_dir, encode, meta, shard, progress, label, lock)
    except BaseException:
        # Nothing half-made is left by a run that fails before its first shard.
        if created and not any(cache_dir.glob("shard-*.npy")):
            shutil.rmtree(cache_dir, ignore_errors=True)
        raise


def _write_into(
    corpus: str | Path,
    cache_dir: Path,
    encode: TokenEncoder,
    meta: dict[str, Any],
    shard: tuple[int, int],
    progress: bool,
    label: str | None,
    lock: DirectoryLock,
) -> EncodeReport:
    index, count = shard
    k, dim, shard_size = meta["k"], meta["dim"], meta["shard_size"]
    vector_dim = meta["vector_dim"]
    content = meta["content"]
    remove_dead_leftovers(cache_dir)
    meta, notes = open_sharded_meta(cache_dir, meta, _CHECKED, lock, TokenCache, _DEFAULTS)
    cache = TokenCache(cache_dir)
    total = content["num_passages"]
    start = time.perf_counter()
    encoded = 0
    number = -1
    with progress_bar(progress, total, label or f"DiPair tokens {Path(corpus).name}") as advance:
        for number, passages in enumerate(chunks(iter_corpus(corpus), shard_size)):
            check_unchanged(corpus, content["shards"], shard_size, number, passages)
            doc_ids = [p.doc_id for p in passages]
            shapes = {".npy": (len(doc_ids), k, dim), ".len": (len(doc_ids),)}
            if vector_dim:
                shapes[".vec"] = (len(doc_ids), vector_dim)
            if not needs_encoding(cache, number, doc_ids, shapes, number % count == index, notes):
                advance(len(passages))
                continue
            tokens, lengths, vectors = encode([p.encoder_text() for p in passages], advance)
            if tokens.shape != (len(passages), k, dim) or lengths.shape != (len(passages),):
                raise ValueError(
                    f"the token encoder returned {tokens.shape} tokens and {lengths.shape} "
                    f"lengths for {len(passages)} passages (k={k}, dim={dim})"
                )
            expected = (len(passages), vector_dim) if vector_dim else None
            if (None if vectors is None else vectors.shape) != expected:
                got = None if vectors is None else vectors.shape
                raise ValueError(
                    f"the token encoder returned sentence vectors {got} for {len(passages)} "
                    f"passages; the cache stores {expected}"
                )
            for array in (tokens, vectors):
                if array is not None and not np.all(np.abs(array) <= np.finfo(np.float16).max):
                    raise ValueError("token vectors overflow float16 (or are not finite)")
            _write_shard(cache.shard_path(number), doc_ids, tokens, lengths, vectors)
            encoded += len(passages)
    if number + 1 != len(content["shards"]):
        raise ValueError(f"{corpus} changed while it was being encoded; run the command again")
    complete = not cache.missing_shards()
    return EncodeReport(total, encoded, complete, time.perf_counter() - start, tuple(notes))


def _write_shard(
    target: Path,
    doc_ids: list[str],
    tokens: np.ndarray,
    lengths: np.ndarray,
    vectors: np.ndarray | None,
) -> None:
    with atomic_file(target.with_suffix(".ids")) as tmp:
        tmp.write_text("".join(f"{d}\n" for d in doc_ids), encoding="utf-8")
    with atomic_file(target.with_suffix(".len")) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(lengths, dtype=np.int32))
    if vectors is not None:
        with atomic_file(target.with_suffix(".vec")) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(vectors, dtype=np.float16))
    with atomic_file(target) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(tokens, dtype=np.float16))
