"""Retrieval cascades: stages composed with ``>>`` (then) and ``%`` (keep the top k).

    >>> dense = DenseRetrieval("indexes/msmarco-flat")
    >>> pipeline = dense % 1000 >> dipair % 100 >> ranker
    >>> run = pipeline.run(queries)

A scorer on the right of ``>>`` (or under ``%``) becomes a :class:`Rerank` stage; its passage
texts come from the corpus the first stage was built from (an index's ``meta.json`` names
it), or from ``Rerank(scorer, corpus)`` when given explicitly (a :class:`RunFile` needs it).

A stage maps queries (and the previous stage's candidates) to a run, ``{qid: {doc: score}}``.
A first stage retrieves (:class:`DenseRetrieval`, :class:`BM25Retrieval`, or :class:`RunFile`,
any TREC run); a :class:`Rerank` stage rescores the candidates it is given with a scorer — any
object with ``score(query_text, passages) -> scores`` (a cross-encoder, the DiPair head, or a
bi-encoder's own dot product, :class:`BiEncoderScorer`) — and never adds or drops documents.

Bad input is never dropped silently. A candidate missing from the corpus, or a run query
missing from the topics, is an error (``on_missing="error"``, the default) or a counted skip
(``on_missing="skip"``): skipped documents keep their place below every rescored one, and
every skip is tallied in :attr:`Stage.report` (``Counter`` of what happened) so the CLI can
print it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from elasticir.data.corpus import load_passages
from elasticir.data.records import Passage, Query, Run
from elasticir.data.trec import read_run
from elasticir.progress import progress_bar

if TYPE_CHECKING:
    from elasticir.encoders.denser import ElasticDenser
    from elasticir.encoders.levels import Level

__all__ = [
    "BM25Retrieval",
    "BiEncoderScorer",
    "Cascade",
    "Cutoff",
    "DenseRetrieval",
    "FunctionScorer",
    "MissingInputError",
    "PassageLookup",
    "Rerank",
    "Reranker",
    "RunFile",
    "Scorer",
    "Stage",
]

ON_MISSING = ("error", "skip")


class MissingInputError(ValueError):
    """A run names a document the corpus lacks, or a query the topics lack."""


class Scorer(Protocol):
    """What a :class:`Rerank` stage needs: one score per passage, higher is better."""

    def score(self, query: str, passages: Sequence[Passage]) -> np.ndarray: ...


class Stage:
    """One step of a cascade. Subclasses implement :meth:`transform`."""

    corpus: Path | None = None  # the corpus a first stage retrieves from, when known

    def __init__(self) -> None:
        self.report: Counter[str] = Counter()

    def transform(self, queries: Sequence[Query], candidates: Run | None) -> Run:
        raise NotImplementedError

    def run(self, queries: Sequence[Query], candidates: Run | None = None) -> Run:
        """Apply the stage (and, for a cascade, every stage in turn)."""
        return self.transform(list(queries), candidates)

    def __rshift__(self, other: Stage | Scorer) -> Cascade:
        stage = as_stage(other)
        if stage is None:
            return NotImplemented
        return Cascade([self, stage])

    def __mod__(self, k: int) -> Cutoff:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"a cutoff keeps a positive number of documents, got {k!r}")
        return Cutoff(self, k)

    def reports(self) -> dict[str, Counter[str]]:
        """Each stage's tally by its name (a cascade lists all of its stages)."""
        return {repr(self): self.report}


class Cascade(Stage):
    """Stages in order: each one's run is the next one's candidates."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        super().__init__()
        flat: list[Stage] = []
        for stage in stages:
            flat.extend(stage.stages if isinstance(stage, Cascade) else [stage])
        self.stages = flat
        self.corpus = flat[0].corpus
        for stage in flat[1:]:
            inner = stage.stage if isinstance(stage, Cutoff) else stage
            if isinstance(inner, Rerank) and inner.passages is None and self.corpus is not None:
                inner.passages = PassageLookup(self.corpus)

    def transform(self, queries: Sequence[Query], candidates: Run | None) -> Run:
        for stage in self.stages:
            candidates = stage.transform(queries, candidates)
        assert candidates is not None
        return candidates

    def reports(self) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = {}
        for stage in self.stages:
            out.update(stage.reports())
        return out

    def __repr__(self) -> str:
        return " >> ".join(repr(s) for s in self.stages)


class Cutoff(Stage):
    """The top ``k`` of a stage's run per query (ties broken by doc id, as runs are written)."""

    def __init__(self, stage: Stage, k: int) -> None:
        super().__init__()
        self.stage, self.k = stage, k
        self.corpus = stage.corpus

    def transform(self, queries: Sequence[Query], candidates: Run | None) -> Run:
        run = self.stage.transform(queries, candidates)
        return {qid: top_k(docs, self.k) for qid, docs in run.items()}

    def reports(self) -> dict[str, Counter[str]]:
        return self.stage.reports()

    def __repr__(self) -> str:
        inner = repr(self.stage)
        return f"({inner}) % {self.k}" if isinstance(self.stage, Cascade) else f"{inner} % {self.k}"


def top_k(docs: Mapping[str, float], k: int) -> dict[str, float]:
    ranked = sorted(docs.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[:k])


def as_stage(thing: object) -> Stage | None:
    """A stage as is; a scorer (anything with ``score``) as a :class:`Rerank` stage."""
    if isinstance(thing, Stage):
        return thing
    if callable(getattr(thing, "score", None)):
        return Rerank(thing)  # type: ignore[arg-type]
    return None


class Reranker:
    """Mixin for scorers, so they compose directly: ``dense % 100 >> ranker % 10``."""

    def __mod__(self, k: int) -> Cutoff:
        return Rerank(self) % k  # type: ignore[arg-type]

    def __rrshift__(self, other: Stage) -> Cascade:
        if not isinstance(other, Stage):
            return NotImplemented
        return other >> Rerank(self)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- first stages


class RunFile(Stage):
    """A precomputed first stage: a TREC run file (or a run in memory).

    Queries of the run that the topics lack are an error, or (``on_missing="skip"``) left
    out and counted as ``queries missing from topics``; topics the run lacks get an empty
    ranking, counted as ``queries without candidates``.
    """

    def __init__(
        self, run: str | Path | Run, on_missing: str = "error", corpus: str | Path | None = None
    ) -> None:
        super().__init__()
        _check_on_missing(on_missing)
        self.corpus = None if corpus is None else Path(corpus)
        self.source = str(run) if isinstance(run, (str, Path)) else "<run>"
        self.loaded = read_run(run) if isinstance(run, (str, Path)) else run
        self.on_missing = on_missing

    def transform(self, queries: Sequence[Query], candidates: Run | None) -> Run:
        wanted = {q.query_id for q in queries}
        extra = sorted(set(self.loaded) - wanted)
        if extra:
            if self.on_missing == "error":
                raise MissingInputError(
                    f"{self.source}: {len(extra)} quer{'y' if len(extra) == 1 else 'ies'} of "
                    f"the run are not in the topics (e.g. {extra[:3]}); pass the topics the "
                    "run was made from, or skip them (--on-missing skip)"
                )
            self.report["queries missing from topics (skipped)"] += len(extra)
        out = {}
        for query in queries:
            docs = self.loaded.get(query.query_id)
            if not docs:
                self.report["queries without candidates"] += 1
            out[query.query_id] = dict(docs or {})
        return out

    def __repr__(self) -> str:
        return f"RunFile({Path(self.source).name})"


class DenseRetrieval(Stage):
    """Dense first stage over an index directory (see ``elasticir.retrieve.dense``)."""

    def __init__(
        self,
        index: str | Path,
        encoder: ElasticDenser | None = None,
        level: Level | str = "full",
        k: int = 1000,
    ) -> None:
        from elasticir.retrieve.dense import DenseSearcher

        super().__init__()
        self.searcher = DenseSearcher(index, encoder)
        self.index, self.level, self.k = Path(index), level, k
        self.corpus = _store_corpus(self.searcher.index.meta)

    def transform(self, queries: Sequence[Query], candidates: Run | None) -> Run:
        return self.searcher.search(queries, k=self.k, level=self.level)

    def __mod__(self, k: int) -> Cutoff:
        cut = super().__mod__(k)
        if k > self.k:
            self.k = k  # retrieve as deep as the cutoff asks
        return cut

    def __repr__(self) -> str:
        return f"DenseRetrieval({self.index.name}, level={self.level})"


class BM25Retrieval(Stage):
    """BM25 first stage over a Lucene index (see ``elasticir.retrieve.bm25``)."""

    def __init__(self, index: str | Path, k: int = 1000, threads: int = 2) -> None:
        from elasticir.retrieve.bm25 import read_bm25_meta

        super().__init__()
        self.index, self.k, self.threads = Path(index), k, threads
        corpus = read_bm25_meta(self.index).get("corpus")
        self.corpus = Path(corpus) if corpus else None

    def transform(self, queries: Sequence[Query], candidates: Run | None) -> Run:
        from elasticir.retrieve.bm25 import bm25_search

        return bm25_search(self.index, list(queries), k=self.k, threads=self.threads)

    def __mod__(self, k: int) -> Cutoff:
        cut = super().__mod__(k)
        self.k = max(self.k, k)
        return cut

    def __repr__(self) -> str:
        return f"BM25Retrieval({self.index.name})"


# --------------------------------------------------------------------------- reranking


class PassageLookup:
    """Passage texts by doc id, read from a corpus only for the ids a run needs."""

    def __init__(self, corpus: str | Path | Mapping[str, Passage]) -> None:
        self.corpus = corpus
        self._cache: dict[str, Passage] = {} if not isinstance(corpus, Mapping) else dict(corpus)
        self._complete = isinstance(corpus, Mapping)

    def fetch(self, doc_ids: set[str]) -> dict[str, Passage]:
        """The passages of ``doc_ids`` that the corpus has (one corpus pass for the rest)."""
        missing = doc_ids - self._cache.keys()
        if missing and not self._complete:
            self._cache.update(load_passages(self.corpus, missing))  # type: ignore[arg-type]
        return {d: self._cache[d] for d in doc_ids if d in self._cache}

    @property
    def name(self) -> str:
        return "<passages>" if isinstance(self.corpus, Mapping) else str(self.corpus)


class Rerank(Stage):
    """Rescore each query's candidates with ``scorer``; the documents stay the same.

    ``batch`` bounds how many passages one scorer call gets (a query's candidates are split
    into calls of at most that many). Candidates the corpus lacks are an error, or with
    ``on_missing="skip"`` keep their order below the rescored ones and are counted as
    ``documents missing from corpus``.
    """

    def __init__(
        self,
        scorer: Scorer,
        corpus: str | Path | Mapping[str, Passage] | PassageLookup | None = None,
        *,
        on_missing: str = "error",
        batch: int = 256,
        progress: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__()
        _check_on_missing(on_missing)
        self.scorer = scorer
        self.passages: PassageLookup | None = (
            corpus if isinstance(corpus, PassageLookup | None) else PassageLookup(corpus)
        )
        self.on_missing, self.batch, self.progress = on_missing, batch, progress
        self.name = name or type(scorer).__name__

    def transform(self, queries: Sequence[Query], candidates: Run | None) -> Run:
        if candidates is None:
            raise ValueError(f"{self!r} reranks candidates: put a first stage before it (>>)")
        if self.passages is None:
            raise ValueError(
                f"{self!r} has no corpus to read passages from: the first stage does not name "
                "one (a run file); give it, e.g. Rerank(scorer, corpus) or RunFile(run, "
                "corpus=...)"
            )
        texts = {q.query_id: q.text for q in queries}
        wanted = {d for qid in candidates if qid in texts for d in candidates[qid]}
        found = self.passages.fetch(wanted)
        absent = wanted - found.keys()
        if absent and self.on_missing == "error":
            raise MissingInputError(
                f"{len(absent)} candidate document(s) are not in {self.passages.name} "
                f"(e.g. {sorted(absent)[:3]}): rerank with the corpus the run was made from, "
                "or skip them (--on-missing skip)"
            )
        unknown = sorted(set(candidates) - texts.keys())
        if unknown:
            if self.on_missing == "error":
                raise MissingInputError(
                    f"{len(unknown)} quer{'y' if len(unknown) == 1 else 'ies'} of the "
                    f"candidates are not in the topics (e.g. {unknown[:3]})"
                )
            self.report["queries missing from topics (skipped)"] += len(unknown)
        out: Run = {}
        total = sum(len(candidates.get(q.query_id, {})) for q in queries)
        with progress_bar(self.progress, total, f"reranking ({self.name})") as advance:
            for query in queries:
                docs = candidates.get(query.query_id, {})
                out[query.query_id] = self._rescore(query.text, docs, found)
                advance(len(docs))
        return out

    def _rescore(
        self, text: str, docs: Mapping[str, float], found: Mapping[str, Passage]
    ) -> dict[str, float]:
        ranked = sorted(docs.items(), key=lambda item: (-item[1], item[0]))
        present = [d for d, _ in ranked if d in found]
        scores: dict[str, float] = {}
        ranked_scorer = getattr(self.scorer, "reads_ranks", False)
        for start in range(0, len(present), self.batch):
            chunk = present[start : start + self.batch]
            passages = [found[d] for d in chunk]
            if ranked_scorer:  # a rank-aware exit policy: ranks among the present candidates
                values = self.scorer.score(text, passages, first_rank=start + 1)
            else:
                values = self.scorer.score(text, passages)
            values = np.asarray(values, dtype=float)
            if values.shape != (len(chunk),):
                raise ValueError(
                    f"{self.name} returned {values.shape} scores for {len(chunk)} passages"
                )
            scores.update(zip(chunk, values.tolist()))
        self.report["pairs scored"] += len(present)
        skipped = [d for d, _ in ranked if d not in found]
        if skipped:
            self.report["documents missing from corpus (kept below, unscored)"] += len(skipped)
            floor = min(scores.values(), default=0.0)
            for rank, doc in enumerate(skipped, start=1):
                scores[doc] = floor - rank  # below every rescored document, in input order
        return scores

    def __repr__(self) -> str:
        return f"Rerank({self.name})"


class BiEncoderScorer(Reranker):
    """A bi-encoder's own dot product as a reranker: the query and passages encoded afresh.

    The reference point the issue names: all-MiniLM-L6-v2's scores over BM25 candidates.
    """

    def __init__(self, encoder: ElasticDenser | None = None, level: Level | str = "full") -> None:
        if encoder is None:
            from elasticir.encoders.denser import ElasticDenser

            encoder = ElasticDenser()
        self.encoder, self.level = encoder, level

    def score(self, query: str, passages: Sequence[Passage]) -> np.ndarray:
        q = self.encoder.encode_queries([query], level=self.level)
        p = self.encoder.encode_passages([x.encoder_text() for x in passages])
        return (p @ q[0]).astype(np.float32)


class FunctionScorer(Reranker):
    """Wrap ``fn(query, passage_texts) -> scores`` as a :class:`Scorer`."""

    def __init__(self, fn: Callable[[str, list[str]], Sequence[float]]) -> None:
        self.fn = fn

    def score(self, query: str, passages: Sequence[Passage]) -> np.ndarray:
        return np.asarray(self.fn(query, [p.encoder_text() for p in passages]), dtype=np.float32)


def _store_corpus(meta: Mapping[str, object]) -> Path | None:
    """The corpus a dense index was encoded from: its embedding store's ``meta.json``."""
    import json

    store = meta.get("store")
    path = Path(str(store)) / "meta.json" if store else None
    if path is None or not path.is_file():
        return None
    corpus = json.loads(path.read_text(encoding="utf-8")).get("corpus")
    return Path(corpus) if corpus else None


def _check_on_missing(value: str) -> None:
    if value not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {ON_MISSING}, got {value!r}")
