"""Learned projections: an encoder's vectors mapped linearly to fewer dimensions.

A projection belongs to a *passage space* (the fingerprint of the full-compute passage
encoder), not to one query model: it is fitted on that space's vectors (see
``elasticir.train.projection``), so every query level of every model trained into the space
uses the same matrices. An index built at ``dim=128`` holds projected passage vectors and is
searched with projected query vectors; its ``meta.json`` records the projection's fingerprint,
and a searcher with other matrices is refused.

Where an encoder finds its projections, first match wins:

1. ``<model directory>/projections.safetensors``;
2. the files shipped with this package, ``elasticir/models/projections/<fingerprint>.safetensors``
   (the default all-MiniLM-L6-v2 space has one: 256, 128 and 64 dims).

A projection is *symmetric* (one matrix for queries and passages) or *asymmetric*: a second
matrix of the same shape for the query side, fitted jointly, since queries and passages are
not distributed alike; either way the index stores the passage side and search projects its
queries with the query side.

File format: a safetensors file with one float32 tensor ``dim_<d>`` of shape ``(d, in_dim)``
per dimension (the passage side, or both sides), optionally ``query_dim_<d>`` of the same
shape (the query side of an asymmetric projection), and string metadata ``format``,
``space_fingerprint``, ``normalize`` ("true" / "false": whether projected vectors are
L2-normalised, as the encoder's own are) and ``training`` (JSON: how the matrices were
fitted).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from elasticir.data.errors import InputFormatError
from elasticir.data.files import atomic_file

__all__ = [
    "PROJECTIONS_FILE",
    "Projection",
    "find_projections",
    "read_projections",
    "shipped_projections_path",
    "write_projections",
]

PROJECTIONS_FILE = "projections.safetensors"
FORMAT = "elasticir-projections"
_SHIPPED = Path(__file__).parent / "projections"


SIDES = ("query", "passage")


@dataclass(frozen=True)
class Projection:
    """``vectors @ matrix.T`` (then L2-normalised when ``normalize``): ``(n, in) -> (n, dim)``.

    ``matrix`` projects passages, and queries too unless ``query_matrix`` (same shape) is
    given: an asymmetric projection.
    """

    matrix: np.ndarray  # (dim, in_dim) float32
    normalize: bool
    source: str = ""  # the file it was read from
    query_matrix: np.ndarray | None = None  # (dim, in_dim) float32, or None: symmetric
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        matrix = _read_only_matrix(self.matrix)
        object.__setattr__(self, "matrix", matrix)
        digest = hashlib.sha256(f"{matrix.shape}|{self.normalize}|".encode())
        digest.update(matrix.tobytes())
        if self.query_matrix is not None:
            query = _read_only_matrix(self.query_matrix)
            if query.shape != matrix.shape:
                raise ValueError(
                    f"the query matrix {query.shape} and the passage matrix {matrix.shape} of "
                    "a projection must have the same shape"
                )
            object.__setattr__(self, "query_matrix", query)
            digest.update(b"|query|" + query.tobytes())
        object.__setattr__(self, "fingerprint", digest.hexdigest()[:16])

    @property
    def asymmetric(self) -> bool:
        return self.query_matrix is not None

    @functools.cached_property
    def _matrices_t(self):  # {side: (in_dim, dim) torch copy of the read-only matrix}
        import torch

        query = self.matrix if self.query_matrix is None else self.query_matrix
        return {
            "passage": torch.from_numpy(self.matrix.T.copy()),
            "query": torch.from_numpy(query.T.copy()),
        }

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def in_dim(self) -> int:
        return int(self.matrix.shape[1])

    def apply(self, vectors: np.ndarray, *, side: str) -> np.ndarray:
        """Project ``(n, in_dim)`` vectors of ``side`` ("query" or "passage")."""
        if side not in SIDES:
            raise ValueError(f"side is 'query' or 'passage', got {side!r}")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.in_dim:
            raise ValueError(
                f"projection to {self.dim} dims takes (n, {self.in_dim}) vectors, got "
                f"{vectors.shape}"
            )
        # torch, not numpy: numpy's BLAS threads spin after a call and would steal the CPU
        # from the encoder's next batch (measured: up to 35% slower query encoding)
        import torch

        with torch.inference_mode():
            out = torch.from_numpy(np.ascontiguousarray(vectors)) @ self._matrices_t[side]
            if self.normalize:
                out = torch.nn.functional.normalize(out, dim=-1, eps=1e-12)
            return out.numpy().copy()

    def describe(self) -> dict[str, Any]:
        described = {"dim": self.dim, "in_dim": self.in_dim, "fingerprint": self.fingerprint}
        if self.asymmetric:
            described["asymmetric"] = True
        return described


def _read_only_matrix(values: np.ndarray) -> np.ndarray:
    matrix = np.ascontiguousarray(values, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] > matrix.shape[1]:
        raise ValueError(
            f"a projection matrix is (dim, in_dim) with dim <= in_dim, got {matrix.shape}"
        )
    matrix.setflags(write=False)  # shared by threads: nothing may change it
    return matrix


def shipped_projections_path(space_fingerprint: str) -> Path:
    """Where the package keeps the projections of one passage space."""
    return _SHIPPED / f"{space_fingerprint}.safetensors"


def find_projections(model_path: str | Path, space_fingerprint: str) -> dict[int, Projection]:
    """The projections an encoder of ``model_path`` (whose space is ``space_fingerprint``)
    offers, by dimension; empty when there are none."""
    for candidate in (
        Path(model_path) / PROJECTIONS_FILE,
        shipped_projections_path(space_fingerprint),
    ):
        if candidate.is_file():
            return read_projections(candidate, space_fingerprint)
    return {}


def read_projections(
    path: str | Path, space_fingerprint: str | None = None
) -> dict[int, Projection]:
    """Read a projections file; with ``space_fingerprint``, refuse one fitted to another space."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as fh:
            metadata = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise InputFormatError(
            path, None, "a safetensors file of projections", got=str(err)
        ) from err
    if metadata.get("format") != FORMAT:
        raise InputFormatError(
            path, None, f'metadata "format": "{FORMAT}"', got=repr(metadata.get("format"))
        )
    space = metadata.get("space_fingerprint")
    if space_fingerprint is not None and space != space_fingerprint:
        raise ValueError(
            f"{path}: these projections were fitted to the passage space {space}, but the "
            f"encoder's space is {space_fingerprint}; refit them (elasticir train projection)"
        )
    normalize = metadata.get("normalize") == "true"
    projections = {}
    for key, matrix in tensors.items():
        if key.startswith("query_dim_") and key[6:] in tensors:
            continue  # read with its passage side
        if not key.startswith("dim_"):
            raise InputFormatError(
                path, None, "tensors named dim_<d> (and query_dim_<d>)", got=repr(key)
            )
        query = tensors.get(f"query_{key}")
        try:
            projection = Projection(matrix, normalize, source=str(path), query_matrix=query)
        except ValueError as err:
            raise InputFormatError(path, None, f"tensor {key}: {err}") from err
        if f"dim_{projection.dim}" != key:
            raise InputFormatError(
                path, None, f"tensor {key} of shape ({key[4:]}, in_dim)", got=str(matrix.shape)
            )
        projections[projection.dim] = projection
    return dict(sorted(projections.items(), reverse=True))


def write_projections(
    path: str | Path,
    matrices: dict[int, np.ndarray],
    *,
    space_fingerprint: str,
    normalize: bool,
    training: dict[str, Any],
    query_matrices: dict[int, np.ndarray] | None = None,
) -> Path:
    """Write ``{dim: (dim, in_dim) matrix}`` as a projections file, atomically;
    ``query_matrices`` (same keys and shapes) makes the projections asymmetric."""
    from safetensors.numpy import save_file

    path = Path(path)
    query_matrices = query_matrices or {}
    if set(query_matrices) - set(matrices):
        raise ValueError("every query matrix needs the passage matrix of its dimension")
    tensors = {}
    for d, m in matrices.items():
        matrix = np.ascontiguousarray(m, dtype=np.float32)
        query = query_matrices.get(d)
        Projection(matrix, normalize, query_matrix=query)  # validates the shapes
        if matrix.shape[0] != int(d):
            raise ValueError(f"matrix for dim_{d} has shape {matrix.shape}")
        tensors[f"dim_{int(d)}"] = matrix
        if query is not None:
            tensors[f"query_dim_{int(d)}"] = np.ascontiguousarray(query, dtype=np.float32)
    metadata = {
        "format": FORMAT,
        "space_fingerprint": space_fingerprint,
        "normalize": "true" if normalize else "false",
        "training": json.dumps(training, sort_keys=True),
    }
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path
