"""Mining candidates: each training query's top-k passages of a pool by the teacher's vectors.

Exact inner-product search (FAISS flat, or the same search in torch where FAISS is missing),
cached as one ``.npy`` per key. ``elasticir train denser`` mines its pool with it, and
``elasticir train projection --corpus`` mines again over the pool and the corpora.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from elasticir.data.files import atomic_file

__all__ = ["mine_candidates", "torch_top_k"]


def mine_candidates(
    queries: np.ndarray, passages: np.ndarray, k: int, path: Path, threads: int | None
) -> np.ndarray:
    """Each query's top-``k`` pool rows by teacher inner product (exact FAISS search), read
    from ``path`` when it holds them, else computed and saved there."""
    if path.is_file():
        candidates = np.load(path)
        if candidates.shape == (len(queries), k):
            return candidates
    try:
        import faiss
    except ImportError:  # e.g. a GPU machine with torch but no FAISS: the same exact search
        candidates = torch_top_k(queries, passages, k)
    else:
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        index = faiss.IndexFlatIP(passages.shape[1])
        index.add(np.ascontiguousarray(passages, dtype=np.float32))
        _, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        candidates = rows.astype(np.int64)
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, candidates)
    return candidates


def torch_top_k(queries: np.ndarray, passages: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
    """Each query's top-``k`` passage rows by inner product, exact, best first (in torch,
    on the GPU when there is one)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    table = torch.from_numpy(np.ascontiguousarray(passages, dtype=np.float32)).to(device)
    out = []
    for start in range(0, len(queries), chunk):
        block = torch.from_numpy(np.ascontiguousarray(queries[start : start + chunk])).to(device)
        out.append((block.float() @ table.T).topk(k, dim=1).indices.cpu())
    return torch.cat(out).numpy().astype(np.int64)
