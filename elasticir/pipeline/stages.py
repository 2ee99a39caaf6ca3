"""Stages and how they compose: ``>>`` (then) and ``%`` (keep the top k).

    >>> pipeline = dense % 1000 >> dipair % 100 >> ranker
    >>> result = pipeline(queries, compute="dense@L6-W50;ranker@margin:0.9")
    >>> result.run, result.reports, result.seconds

A stage maps queries (and the previous stage's candidates) to a run, ``{qid: {doc: score}}``.
Stages are values: ``>>`` and ``%`` build new stages and never change the ones they are
applied to, and a call keeps nothing on them. What a call spends is its argument
(:class:`~elasticir.compute.choice.Compute`); what it did (counts per stage, seconds per
stage, the level or policy each stage ran at) comes back with its run in a
:class:`PipelineResult`. So one pipeline may serve two threads at two compute choices.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from elasticir.compute.choice import Compute
from elasticir.data.records import Passage, Query, Run
from elasticir.pipeline.passages import MissingInputError, PassageLookup, check_on_missing
from elasticir.progress import progress_bar

if TYPE_CHECKING:
    from elasticir.compute.levels import Level

__all__ = [
    "Cascade",
    "Cutoff",
    "PipelineResult",
    "Rerank",
    "Reranker",
    "Scorer",
    "Stage",
    "as_stage",
    "top_k",
]


@dataclass
class PipelineResult:
    """What one call of a stage (or cascade) returns.

    ``reports``: per stage, what happened (``pairs scored``, skips, FLOPs...);
    ``seconds``: per stage, wall-clock time; ``compute``: per stage, the level or policy it
    ran at (``"-"`` for stages without compute levels). Keys are stage names, in order.
    """

    run: Run
    reports: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    compute: dict[str, str] = field(default_factory=dict)


class CallLog:
    """What a call did, stage by stage; one per call, never shared between calls."""

    def __init__(self) -> None:
        self._keys: dict[int, str] = {}
        self.reports: dict[str, Counter[str]] = {}
        self.seconds: dict[str, float] = {}
        self.compute: dict[str, str] = {}

    def key(self, stage: Stage) -> str:
        """The stage's name, made unique within the call (``ranker``, ``ranker#2``)."""
        found = self._keys.get(id(stage))
        if found is None:
            found, n = stage.name, 2
            while found in self.reports:
                found, n = f"{stage.name}#{n}", n + 1
            self._keys[id(stage)] = found
            self.reports[found] = Counter()
            self.seconds[found] = 0.0
        return found

    def result(self, run: Run) -> PipelineResult:
        return PipelineResult(
            run,
            {name: dict(counts) for name, counts in self.reports.items()},
            dict(self.seconds),
            dict(self.compute),
        )


class Stage:
    """One step of a cascade. A stage that does work implements :meth:`_work`.

    ``name`` identifies the stage in a compute choice and in reports (``dense``, ``bm25``,
    ``run``, ``ranker``, ``dipair``...); ``elastic`` says whether it has compute levels;
    ``corpus`` is the corpus a first stage retrieves from, when known (rerank stages read
    passage texts from it).
    """

    name: str = "stage"
    elastic: bool = False
    corpus: Path | None = None

    def __call__(
        self,
        queries: Sequence[Query],
        candidates: Run | None = None,
        *,
        compute: Compute | str | Level | Mapping[str, object] | None = None,
    ) -> PipelineResult:
        """Run the stage (a cascade: every stage in turn) at ``compute``."""
        choice = Compute.of(compute)
        names = {leaf.name for leaf in self.leaves()}
        unknown = [name for name in choice.names() if name not in names]
        if unknown:
            raise ValueError(
                f"compute names stage(s) {', '.join(unknown)} that this pipeline does not have "
                f"(its stages: {', '.join(leaf.name for leaf in self.leaves())})"
            )
        log = CallLog()
        run = self._apply(list(queries), candidates, choice, log)
        return log.result(run)

    def run(
        self,
        queries: Sequence[Query],
        candidates: Run | None = None,
        *,
        compute: Compute | str | Level | Mapping[str, object] | None = None,
    ) -> Run:
        """The run of :meth:`__call__` alone."""
        return self(queries, candidates, compute=compute).run

    def leaves(self) -> list[Stage]:
        """The stages that do work, in the order they run."""
        return [self]

    def _apply(
        self, queries: list[Query], candidates: Run | None, compute: Compute, log: CallLog
    ) -> Run:
        key = log.key(self)
        spec = compute.for_stage(self.name, self.elastic)
        start = time.perf_counter()
        run = self._work(queries, candidates, spec, log.reports[key])
        log.seconds[key] += time.perf_counter() - start
        log.compute[key] = self._ran_at(spec)
        return run

    def _work(
        self, queries: list[Query], candidates: Run | None, spec: str | None, report: Counter[str]
    ) -> Run:
        """The stage's own work at ``spec`` (None: its default); counts go to ``report``."""
        raise NotImplementedError

    def _ran_at(self, spec: str | None) -> str:
        return "-" if not self.elastic else (spec or "default")

    def _deepened(self, k: int) -> Stage:
        """This stage, retrieving at least ``k`` documents (a first stage returns a copy)."""
        return self

    def _with_passages(self, corpus: Path) -> Stage:
        """This stage with a corpus to read passages from where it has none (a copy)."""
        return self

    def __rshift__(self, other: object) -> Cascade:
        stage = as_stage(other)
        if stage is None:
            return NotImplemented
        return Cascade([self, stage])

    def __mod__(self, k: int) -> Cutoff:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"a cutoff keeps a positive number of documents, got {k!r}")
        return Cutoff(self._deepened(k), k)


class Cascade(Stage):
    """Stages in order: each one's run is the next one's candidates."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        flat: list[Stage] = []
        for stage in stages:
            flat.extend(stage.stages if isinstance(stage, Cascade) else [stage])
        self.corpus = flat[0].corpus
        if self.corpus is not None:
            flat = [flat[0], *(stage._with_passages(self.corpus) for stage in flat[1:])]
        self.stages = flat
        self.name = " >> ".join(stage.name for stage in flat)

    def leaves(self) -> list[Stage]:
        return [leaf for stage in self.stages for leaf in stage.leaves()]

    def _apply(
        self, queries: list[Query], candidates: Run | None, compute: Compute, log: CallLog
    ) -> Run:
        for stage in self.stages:
            candidates = stage._apply(queries, candidates, compute, log)
        assert candidates is not None
        return candidates

    def _with_passages(self, corpus: Path) -> Stage:
        return Cascade([self.stages[0], *(s._with_passages(corpus) for s in self.stages[1:])])

    def __repr__(self) -> str:
        return " >> ".join(repr(s) for s in self.stages)


class Cutoff(Stage):
    """The top ``k`` of a stage's run per query (ties broken by doc id, as runs are written)."""

    def __init__(self, stage: Stage, k: int) -> None:
        self.stage, self.k = stage, k
        self.corpus = stage.corpus
        self.name = stage.name

    def leaves(self) -> list[Stage]:
        return self.stage.leaves()

    def _apply(
        self, queries: list[Query], candidates: Run | None, compute: Compute, log: CallLog
    ) -> Run:
        run = self.stage._apply(queries, candidates, compute, log)
        return {qid: top_k(docs, self.k) for qid, docs in run.items()}

    def _deepened(self, k: int) -> Stage:
        return self  # never loosens: (s % 100) % 1000 keeps 100

    def _with_passages(self, corpus: Path) -> Stage:
        return Cutoff(self.stage._with_passages(corpus), self.k)

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


class Scorer(Protocol):
    """What a :class:`Rerank` stage needs: one score per passage, higher is better.

    A scorer may also take, as keywords, ``compute`` (the level or exit policy of this call;
    it then has ``levels``, the ones it offers), ``report`` (a ``Counter`` of the call, to add
    its costs to) and ``first_rank`` (the first-stage rank of its first passage, for rank-aware
    exit policies). It holds no state of its own between calls.
    """

    def score(self, query: str, passages: Sequence[Passage]) -> np.ndarray: ...


class Rerank(Stage):
    """Rescore each query's candidates with ``scorer``; the documents stay the same.

    ``batch`` bounds how many passages one scorer call gets (a query's candidates are split
    into calls of at most that many). Candidates the corpus lacks are an error, or with
    ``on_missing="skip"`` keep their order below the rescored ones and are counted as
    ``documents missing from corpus``. The stage's name is ``name``, else the scorer's
    ``stage_name`` (``ranker``, ``dipair``, ``biencoder``), else ``rerank``.
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
        check_on_missing(on_missing)
        self.scorer = scorer
        self.passages: PassageLookup | None = (
            corpus if isinstance(corpus, PassageLookup | None) else PassageLookup(corpus)
        )
        self.on_missing, self.batch, self.progress = on_missing, batch, progress
        self.name = name or getattr(scorer, "stage_name", None) or "rerank"
        self.label = type(scorer).__name__
        self.elastic = getattr(scorer, "levels", None) is not None
        taken = inspect.signature(scorer.score).parameters
        self._takes = {key for key in ("compute", "report", "first_rank") if key in taken}

    def _with_passages(self, corpus: Path) -> Stage:
        if self.passages is not None:
            return self
        stage = copy.copy(self)
        stage.passages = PassageLookup(corpus)
        return stage

    def _work(
        self, queries: list[Query], candidates: Run | None, spec: str | None, report: Counter[str]
    ) -> Run:
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
            report["queries missing from topics (skipped)"] += len(unknown)
        out: Run = {}
        total = sum(len(candidates.get(q.query_id, {})) for q in queries)
        with progress_bar(self.progress, total, f"reranking ({self.name})") as advance:
            for query in queries:
                docs = candidates.get(query.query_id, {})
                out[query.query_id] = self._rescore(query.text, docs, found, spec, report)
                advance(len(docs))
        return out

    def _rescore(
        self,
        text: str,
        docs: Mapping[str, float],
        found: Mapping[str, Passage],
        spec: str | None,
        report: Counter[str],
    ) -> dict[str, float]:
        ranked = sorted(docs.items(), key=lambda item: (-item[1], item[0]))
        present = [d for d, _ in ranked if d in found]
        scores: dict[str, float] = {}
        for start in range(0, len(present), self.batch):
            chunk = present[start : start + self.batch]
            extra: dict[str, object] = {}
            if "compute" in self._takes and spec is not None:
                extra["compute"] = spec
            if "report" in self._takes:
                extra["report"] = report
            if "first_rank" in self._takes:  # ranks among the present candidates
                extra["first_rank"] = start + 1
            values = self.scorer.score(text, [found[d] for d in chunk], **extra)
            values = np.asarray(values, dtype=float)
            if values.shape != (len(chunk),):
                raise ValueError(
                    f"{self.label} returned {values.shape} scores for {len(chunk)} passages"
                )
            scores.update(zip(chunk, values.tolist()))
        report["pairs scored"] += len(present)
        skipped = [d for d, _ in ranked if d not in found]
        if skipped:
            report["documents missing from corpus (kept below, unscored)"] += len(skipped)
            floor = min(scores.values(), default=0.0)
            for rank, doc in enumerate(skipped, start=1):
                scores[doc] = floor - rank  # below every rescored document, in input order
        return scores

    def _ran_at(self, spec: str | None) -> str:
        if not self.elastic:
            return "-"
        return spec or str(getattr(self.scorer, "default_compute", "default"))

    def __repr__(self) -> str:
        return f"Rerank({self.label})"
