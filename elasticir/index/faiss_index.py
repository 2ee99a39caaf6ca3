"""FAISS indexes built from an embedding store, in a directory Pyserini can read.

An index directory holds ``index`` (``faiss.write_index``) and ``docid`` (one id per line,
row order) — what Pyserini's ``FaissSearcher`` loads — plus our ``meta.json``: the encoder
fingerprint and level the passages were encoded with, the dimension, the index type and its
parameters. Search-time parameters (HNSW ``efSearch``, IVF ``nprobe``) are set on the index
before it is written, so any FAISS reader, Pyserini included, searches it the same way.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.files import atomic_dir
from elasticir.data.manifest import META_FILE, read_json_object, write_json
from elasticir.index.output import DENSE, check_index_output
from elasticir.index.sharded import DirectoryBusyError, DirectoryLock
from elasticir.index.store import EmbeddingStore
from elasticir.progress import progress_bar

INDEX_FORMAT = "elasticir-faiss"
INDEX_TYPES = ("flat", "hnsw", "ivfpq")


@dataclass(frozen=True)
class IndexSpec:
    """Which FAISS index to build, with its parameters (inner product throughout)."""

    kind: str = "flat"
    hnsw_m: int = 32  # graph degree
    ef_construction: int = 200
    ef_search: int = 128
    nlist: int | None = None  # IVF cells; None: 4*sqrt(n), at most n/39 (FAISS's training rule)
    nprobe: int = 32
    pq_m: int | None = None  # PQ sub-quantizers, must divide dim; None: dim / 8 (384 -> 48)
    pq_bits: int = 8

    def __post_init__(self) -> None:
        if self.kind not in INDEX_TYPES:
            raise ValueError(f"index type must be one of {INDEX_TYPES}, got {self.kind!r}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nprobe", "pq_bits"):
            _positive(name, getattr(self, name))
        for name in ("nlist", "pq_m"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if not 1 <= self.pq_bits <= 16:
            raise ValueError(f"pq_bits must be between 1 and 16, got {self.pq_bits}")

    def check_feasible(self, num_passages: int, dim: int | None = None) -> None:
        """Raise ``ValueError`` when this index cannot be built over ``num_passages`` vectors
        of ``dim`` dimensions (``None``: not known yet, so not checked). Called before
        encoding, so a bad setting fails in seconds, not after hours of work."""
        if self.kind != "ivfpq":
            return
        if dim is not None:
            pq_m = self.pq_m or max(1, dim // 8)
            if dim % pq_m:
                divisors = [m for m in range(1, dim + 1) if dim % m == 0 and m <= 64]
                raise ValueError(
                    f"--pq-m {pq_m} must divide the dimension {dim} (e.g. one of "
                    f"{', '.join(map(str, divisors))})"
                )
        if num_passages < 2**self.pq_bits:
            raise ValueError(
                f"IVF-PQ with {self.pq_bits}-bit codes needs at least {2**self.pq_bits} passages "
                f"to train on; this corpus has {num_passages}: use a flat or HNSW index"
            )
        if self.nlist is not None and self.nlist > num_passages:
            raise ValueError(
                f"--nlist {self.nlist} IVF cells need at least as many passages to train on; "
                f"this corpus has {num_passages}: use a smaller --nlist (or leave it to the "
                "default, 4 * sqrt(n))"
            )


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class LoadedIndex:
    index: Any  # faiss.Index
    doc_ids: list[str]
    meta: dict[str, Any]
    path: Path

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(n, dim)`` float32 queries -> scores ``(n, k)``, row numbers ``(n, k)`` (-1: none)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = min(k, len(self.doc_ids))
        return self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)


def build_index(
    store_dir: str | Path,
    index_dir: str | Path,
    spec: IndexSpec = IndexSpec(),
    *,
    use_gpu: bool | None = None,
    progress: bool = True,
    overwrite: bool = False,
    content: str | None = None,
) -> Path:
    """Build ``spec`` over every vector of the store; a failed build leaves ``index_dir`` as it was.

    ``index_dir`` must be absent, an empty directory or (with ``overwrite``) a dense index,
    which is then replaced atomically; anything else raises ``ValueError`` before any work
    (see :func:`elasticir.index.output.check_index_output`). ``content`` is the content key
    of the corpus the caller encoded (:class:`~elasticir.data.corpus.CorpusDigest`
    ``sha256``): when the store holds another corpus by the time it is read (another process
    re-encoded it meanwhile), the build is refused rather than index the wrong passages.
    ``use_gpu=None`` uses a GPU when faiss-gpu sees one (HNSW always builds on the CPU).
    """
    import faiss

    check_index_output(index_dir, DENSE, overwrite=overwrite)
    store = EmbeddingStore(store_dir)
    with DirectoryLock(store_dir, reader=True):
        store = EmbeddingStore(store_dir)  # its meta as of now, under the lock
        held = (store.meta.get("content") or {}).get("sha256")
        if content is not None and held != content:
            raise DirectoryBusyError(
                f"{store_dir} was re-encoded from another corpus by another process while this "
                "one ran; refusing to build an index of it (run the command again)"
            )
        doc_ids, vectors = store.load()
    if not doc_ids:
        raise ValueError(f"{store_dir}: the embedding store is empty")
    spec.check_feasible(len(doc_ids), store.dim)
    start = time.perf_counter()
    index, params = _make_index(spec, vectors, store.dim)
    gpu = _gpu_wanted(use_gpu) and spec.kind != "hnsw"
    if gpu:
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
    if spec.kind == "ivfpq":
        sample = _training_sample(vectors, params["nlist"])
        index.train(sample)
    with progress_bar(progress, len(doc_ids), f"indexing ({spec.kind})") as advance:
        for begin in range(0, len(doc_ids), 65536):
            block = vectors[begin : begin + 65536]
            index.add(block)
            advance(len(block))
    if gpu:
        index = faiss.index_gpu_to_cpu(index)
    _set_search_params(index, spec)
    meta = {
        "format": INDEX_FORMAT,
        "version": 1,
        "index_type": spec.kind,
        "params": {**asdict(spec), **params},
        "encoder": store.meta["encoder"],
        "level": store.meta["level"],
        "side": store.meta.get("side", "passage"),
        "dim": store.dim,
        "num_passages": len(doc_ids),
        "bytes_per_passage": None,
        "store": str(Path(store_dir).resolve()),
        "content": held,  # the corpus's content key (see elasticir.data.corpus.CorpusDigest)
        "build_seconds": round(time.perf_counter() - start, 3),
        "built_on": "gpu" if gpu else "cpu",
    }
    with atomic_dir(index_dir) as tmp:
        faiss.write_index(index, str(tmp / "index"))
        (tmp / "docid").write_text("".join(f"{d}\n" for d in doc_ids), encoding="utf-8")
        meta["bytes_per_passage"] = round((tmp / "index").stat().st_size / len(doc_ids), 2)
        write_json(tmp / META_FILE, meta)
    return Path(index_dir)


_META_REQUIRED = {
    "format": str,
    "index_type": str,
    "encoder": dict,
    "dim": int,
    "num_passages": int,
}
_META_OPTIONAL = {"level": str, "params": dict}


def load_index(index_dir: str | Path) -> LoadedIndex:
    """Read an index directory written by :func:`build_index`.

    Everything is checked before it is trusted: a missing, truncated or foreign ``index``
    file, a ``meta.json`` that is not valid JSON or lacks a key, and counts or dimensions
    that disagree between the files each raise one :class:`InputFormatError` naming the file.
    """
    import faiss

    path = Path(index_dir)
    for name in ("index", "docid", META_FILE):
        if not (path / name).is_file():
            raise MissingResourceError(
                f"{path}: not a dense index (missing {name}); build one with `elasticir index`"
            )
    meta = read_json_object(
        path / META_FILE, _META_REQUIRED, optional=_META_OPTIONAL, what="a dense index's meta"
    )
    if meta.get("format") != INDEX_FORMAT:
        raise InputFormatError(path / META_FILE, None, f'"format": "{INDEX_FORMAT}"')
    if not isinstance(meta["encoder"].get("model_fingerprint"), str):
        raise InputFormatError(
            path / META_FILE, None, '"encoder": {"model_fingerprint": "<hash>", ...}'
        )
    try:
        doc_ids = (path / "docid").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputFormatError(path / "docid", None, "doc ids, one per line", str(err)) from None
    try:
        index = faiss.read_index(str(path / "index"))
    except (RuntimeError, OSError) as err:
        raise InputFormatError(
            path / "index",
            None,
            "a FAISS index written by faiss.write_index",
            _faiss_reason(err),
            hint="rebuild it with `elasticir index ... --overwrite`",
        ) from None
    if index.d != meta["dim"]:
        raise InputFormatError(
            path / "index", None, f"{meta['dim']}-d vectors (meta.json)", str(index.d)
        )
    if index.ntotal != len(doc_ids):
        raise InputFormatError(path / "docid", None, f"{index.ntotal} doc ids", str(len(doc_ids)))
    if meta["num_passages"] != len(doc_ids):
        raise InputFormatError(
            path / META_FILE, None, f'"num_passages": {len(doc_ids)}', str(meta["num_passages"])
        )
    return LoadedIndex(index, doc_ids, meta, path)


def _faiss_reason(err: BaseException) -> str:
    """FAISS's own message is a C++ trace; its 'Error: ...' part says what went wrong."""
    text = str(err)
    for line in text.splitlines():
        if "Error" in line or "error" in line:
            return line.strip()[:160]
    return (text.splitlines()[0] if text else type(err).__name__)[:160]


def _make_index(spec: IndexSpec, vectors: np.ndarray, dim: int) -> tuple[Any, dict[str, Any]]:
    import faiss

    if spec.kind == "flat":
        return faiss.IndexFlatIP(dim), {}
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
        return index, {}
    spec.check_feasible(len(vectors), dim)
    pq_m = spec.pq_m or max(1, dim // 8)
    n = len(vectors)
    nlist = spec.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
    # "np": no polysemous training. index_factory turns it on for 8-bit PQ, and it costs minutes
    # per build (annealing a code permutation per sub-quantizer) for Hamming-filtered search,
    # which is never used here; it only relabels codes, so search results are the same.
    factory = f"IVF{nlist},PQ{pq_m}x{spec.pq_bits}np"
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    return index, {"nlist": nlist, "pq_m": pq_m}


def _training_sample(vectors: np.ndarray, nlist: int) -> np.ndarray:
    # FAISS wants ~39-256 points per centroid; more only slows training down.
    size = min(len(vectors), max(256 * nlist, 256 * 256))
    if size == len(vectors):
        return vectors
    rows = np.random.default_rng(0).choice(len(vectors), size=size, replace=False)
    return vectors[np.sort(rows)]


def _set_search_params(index: Any, spec: IndexSpec) -> None:
    import faiss

    if spec.kind == "hnsw":
        index.hnsw.efSearch = spec.ef_search
    elif spec.kind == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = spec.nprobe


def _gpu_wanted(use_gpu: bool | None) -> bool:
    import faiss

    available = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if use_gpu and not available:
        raise RuntimeError(
            "a GPU index was asked for, but FAISS sees no GPU: pip install 'elasticir[gpu]' on a "
            "machine with CUDA"
        )
    return available if use_gpu is None else use_gpu
