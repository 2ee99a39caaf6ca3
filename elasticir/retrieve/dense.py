"""Dense retrieval: encode queries at a compute level, search a FAISS index, return a run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from elasticir.compute.levels import FULL, Level
from elasticir.data.records import Query, Run
from elasticir.data.topics import require_query_texts
from elasticir.progress import progress_bar

if TYPE_CHECKING:
    from elasticir.index.faiss_index import LoadedIndex
    from elasticir.models.denser import ElasticDenser


class EncoderMismatchError(ValueError):
    """The query encoder does not produce vectors in the space the index was built in."""


class DenseSearcher:
    """Searches one index directory with a query encoder that matches its ``meta.json``.

    ``encoder=None`` loads the model named in the index meta (and then checks it too).
    """

    def __init__(self, index_dir: str | Path, encoder: ElasticDenser | None = None) -> None:
        from elasticir.index.faiss_index import load_index
        from elasticir.models.denser import ElasticDenser

        self.index: LoadedIndex = load_index(index_dir)
        built_with = self.index.meta["encoder"]
        self.encoder = encoder or ElasticDenser(built_with["model"])
        check_compatible(self.encoder, self.index)

    @property
    def dim(self) -> int:
        """The index's dimension: queries are projected to it when it is a projection's."""
        return int(self.index.meta["dim"])

    @property
    def passage_level(self) -> str:
        """The level the passages were encoded at: ``full``, or a cheap-indexing level."""
        return str(self.index.meta.get("level", "full"))

    def search(
        self,
        queries: Sequence[Query],
        k: int = 1000,
        level: Level | str = FULL,
        batch_size: int = 64,
        progress: bool = False,
    ) -> Run:
        """Top-``k`` passages per query; every query appears in the run.

        Raises ``ValueError`` for ``k < 1`` and for queries without text, before encoding.
        """
        require_query_texts(queries)
        _check_k(k)
        # A bar only when there is more than one batch to wait for.
        shown = progress and len(queries) > batch_size
        with progress_bar(shown, len(queries), "encoding queries") as advance:
            vectors = self.encoder.encode_queries(
                [q.text for q in queries],
                level=level,
                batch_size=batch_size,
                dim=self.dim,
                progress=advance,
            )
        return self.search_vectors([q.query_id for q in queries], vectors, k)

    def search_vectors(self, query_ids: Sequence[str], vectors: np.ndarray, k: int) -> Run:
        """Search with ``(len(query_ids), dim)`` vectors already encoded."""
        _check_k(k)
        scores, rows = self.index.search(vectors, k)
        doc_ids = self.index.doc_ids
        run: Run = {}
        for qid, q_scores, q_rows in zip(query_ids, scores, rows):
            run[qid] = {doc_ids[r]: float(s) for s, r in zip(q_scores, q_rows) if r >= 0}
        return run


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def check_compatible(encoder: ElasticDenser, index: LoadedIndex) -> None:
    """Raise :class:`EncoderMismatchError` unless ``encoder`` queries the index's space."""
    built_with = index.meta["encoder"]
    if built_with.get("model_fingerprint") != encoder.fingerprint:
        raise EncoderMismatchError(
            f"{index.path}: the index was built with model {built_with.get('model')!r} "
            f"(fingerprint {built_with.get('model_fingerprint')}), but the query encoder is "
            f"{encoder.model_name!r} (fingerprint {encoder.fingerprint}); search with the same "
            "model, or rebuild the index with this one"
        )
    dim = int(index.meta["dim"])
    if dim not in encoder.dims:
        raise EncoderMismatchError(
            f"{index.path}: index vectors have {dim} dims; {encoder.model_name} gives "
            f"{', '.join(str(d) for d in encoder.dims)} (its own dimension and its projections)"
        )
    built = (built_with.get("projection") or {}).get("fingerprint")
    projection = encoder.projection(dim)
    ours = None if projection is None else projection.fingerprint
    if built != ours:
        raise EncoderMismatchError(
            f"{index.path}: the index was built with projection {built} to {dim} dims, the "
            f"query encoder has {ours}; search with the projections the index was built "
            "with, or rebuild it"
        )
