"""First stages: a TREC run file, dense retrieval over a FAISS index, BM25 over Lucene."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from elasticir.compute.levels import FULL, Level
from elasticir.data.manifest import META_FILE, read_json_object
from elasticir.data.records import Query, Run
from elasticir.data.trec import read_run
from elasticir.pipeline.passages import MissingInputError, check_on_missing
from elasticir.pipeline.stages import Stage

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser

__all__ = ["BM25Retrieval", "DenseRetrieval", "RunFile"]


class RunFile(Stage):
    """A precomputed first stage: a TREC run file (or a run in memory).

    Queries of the run that the topics lack are an error, or (``on_missing="skip"``) left
    out and counted as ``queries missing from topics``; topics the run lacks get an empty
    ranking, counted as ``queries without candidates``.
    """

    name = "run"

    def __init__(
        self,
        run: str | Path | Run,
        on_missing: str = "error",
        corpus: str | Path | None = None,
        *,
        name: str | None = None,
    ) -> None:
        check_on_missing(on_missing)
        self.corpus = None if corpus is None else Path(corpus)
        self.source = str(run) if isinstance(run, (str, Path)) else "<run>"
        self.loaded = read_run(run) if isinstance(run, (str, Path)) else run
        self.on_missing = on_missing
        self.name = name or self.name

    def _work(
        self, queries: list[Query], candidates: Run | None, spec: str | None, report: Counter[str]
    ) -> Run:
        wanted = {q.query_id for q in queries}
        extra = sorted(set(self.loaded) - wanted)
        if extra:
            if self.on_missing == "error":
                raise MissingInputError(
                    f"{self.source}: {len(extra)} quer{'y' if len(extra) == 1 else 'ies'} of "
                    f"the run are not in the topics (e.g. {extra[:3]}); pass the topics the "
                    "run was made from, or skip them (--on-missing skip)"
                )
            report["queries missing from topics (skipped)"] += len(extra)
        out = {}
        for query in queries:
            docs = self.loaded.get(query.query_id)
            if not docs:
                report["queries without candidates"] += 1
            out[query.query_id] = dict(docs or {})
        return out

    def __repr__(self) -> str:
        return f"RunFile({Path(self.source).name})"


class DenseRetrieval(Stage):
    """Dense first stage over an index directory (see ``elasticir.retrieve.dense``).

    ``level`` is the query level when a call names none; a call's compute choice may name
    any level the encoder offers (the index serves them all).
    """

    name = "dense"
    elastic = True

    def __init__(
        self,
        index: str | Path,
        encoder: ElasticDenser | None = None,
        level: Level | str = FULL,
        k: int = 1000,
        *,
        name: str | None = None,
    ) -> None:
        from elasticir.retrieve.dense import DenseSearcher

        self.searcher = DenseSearcher(index, encoder)
        self.index, self.k = Path(index), k
        self.level = self.searcher.encoder.check_level(level)
        self.corpus = _store_corpus(self.searcher.index.meta)
        self.name = name or self.name

    @property
    def levels(self) -> tuple[Level, ...]:
        return tuple(self.searcher.encoder.levels)

    def _work(
        self, queries: list[Query], candidates: Run | None, spec: str | None, report: Counter[str]
    ) -> Run:
        report["queries"] += len(queries)
        return self.searcher.search(queries, k=self.k, level=spec or self.level)

    def _ran_at(self, spec: str | None) -> str:
        return spec or str(self.level)

    def _deepened(self, k: int) -> Stage:
        if k <= self.k:
            return self
        deeper = copy.copy(self)
        deeper.k = k  # retrieve as deep as the cutoff asks
        return deeper

    def __repr__(self) -> str:
        return f"DenseRetrieval({self.index.name}, level={self.level})"


class BM25Retrieval(Stage):
    """BM25 first stage over a Lucene index (see ``elasticir.retrieve.bm25``)."""

    name = "bm25"

    def __init__(
        self, index: str | Path, k: int = 1000, threads: int = 2, *, name: str | None = None
    ) -> None:
        from elasticir.retrieve.bm25 import read_bm25_meta

        self.index, self.k, self.threads = Path(index), k, threads
        corpus = read_bm25_meta(self.index).get("corpus")
        self.corpus = Path(corpus) if corpus else None
        self.name = name or self.name

    def _work(
        self, queries: list[Query], candidates: Run | None, spec: str | None, report: Counter[str]
    ) -> Run:
        from elasticir.retrieve.bm25 import bm25_search

        report["queries"] += len(queries)
        return bm25_search(self.index, queries, k=self.k, threads=self.threads)

    def _deepened(self, k: int) -> Stage:
        if k <= self.k:
            return self
        deeper = copy.copy(self)
        deeper.k = k
        return deeper

    def __repr__(self) -> str:
        return f"BM25Retrieval({self.index.name})"


def _store_corpus(meta: dict[str, object]) -> Path | None:
    """The corpus a dense index was encoded from: its embedding store's ``meta.json``."""
    store = meta.get("store")
    path = Path(str(store)) / META_FILE if store else None
    if path is None or not path.is_file():
        return None
    corpus = read_json_object(path).get("corpus")
    return Path(corpus) if isinstance(corpus, str) and corpus else None
