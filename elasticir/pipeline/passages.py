"""Passage texts for rerank stages, read from a corpus only for the ids a run needs."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from elasticir.data.corpus import load_passages
from elasticir.data.records import Passage

__all__ = ["ON_MISSING", "MissingInputError", "PassageLookup", "check_on_missing"]

ON_MISSING = ("error", "skip")


class MissingInputError(ValueError):
    """A run names a document the corpus lacks, or a query the topics lack."""


def check_on_missing(value: str) -> None:
    if value not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {ON_MISSING}, got {value!r}")


class PassageLookup:
    """Passage texts by doc id, read from a corpus only for the ids a run needs.

    Passages read once are kept for later calls (one corpus pass per new set of ids); the
    lookup may be shared by threads.
    """

    def __init__(self, corpus: str | Path | Mapping[str, Passage]) -> None:
        self.corpus = corpus
        self._cache: dict[str, Passage] = {} if not isinstance(corpus, Mapping) else dict(corpus)
        self._complete = isinstance(corpus, Mapping)
        self._lock = threading.Lock()

    def fetch(self, doc_ids: set[str]) -> dict[str, Passage]:
        """The passages of ``doc_ids`` that the corpus has (one corpus pass for the rest)."""
        with self._lock:
            missing = doc_ids - self._cache.keys()
            if missing and not self._complete:
                self._cache.update(load_passages(self.corpus, missing))  # type: ignore[arg-type]
            return {d: self._cache[d] for d in doc_ids if d in self._cache}

    @property
    def name(self) -> str:
        return "<passages>" if isinstance(self.corpus, Mapping) else str(self.corpus)
