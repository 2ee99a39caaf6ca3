"""Running a batch of queries at a serving choice: the models loaded once, every choice ready.

    >>> executor = PipelineExecutor("indexes/nq-open", rerank=("dipair", "ranker"))
    >>> result = executor.run(queries, Choice.parse("full>ranker%20@calibrated:rank"), k=10)

The dense first stage serves every query level of its index's encoder; a DiPair stage reads
passage tokens from a cache beside the index (built on first use, resumable); an ElasticRanker
stage shares one loaded model across its levels and policies (``calibrated:NAME`` names a
calibration shipped with the ranker, ``calibrated:FILE.json`` any other). The executor is safe
to call from one worker thread at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from elasticir.data.records import Query
from elasticir.pipeline import DenseRetrieval, PipelineResult, Rerank
from elasticir.schedule.choices import Choice

__all__ = ["PipelineExecutor", "default_choices"]


class PipelineExecutor:
    """``index``: a dense index directory; ``rerank``: the reranker kinds to load (``dipair``,
    ``ranker``); ``dipair_model`` / ``ranker_model``: shipped names or directories."""

    def __init__(
        self,
        index: str | Path,
        rerank: Iterable[str] = (),
        *,
        dipair_model: str | None = None,
        ranker_model: str | None = None,
        token_cache: str | Path | None = None,
        progress: bool = False,
    ) -> None:
        from elasticir.rerank.factory import DEFAULT_SHIPPED

        self.index = Path(index)
        self.first = DenseRetrieval(self.index)
        self.kinds = tuple(dict.fromkeys(rerank))
        unknown = [k for k in self.kinds if k not in ("dipair", "ranker")]
        if unknown:
            raise ValueError(f"unknown rerank stage(s) {', '.join(unknown)}: dipair or ranker")
        if self.kinds and self.first.corpus is None:
            raise ValueError(
                f"{self.index}: the index does not name its corpus, so passages cannot be "
                "read for reranking; rebuild it with `elasticir index`"
            )
        self.dipair_model = dipair_model or DEFAULT_SHIPPED["dipair"]
        self.ranker_model = ranker_model or DEFAULT_SHIPPED["elastic"]
        self._lock = threading.Lock()
        self._stages: dict[tuple[str, str | None], Rerank] = {}
        self._dipair = None
        self._ranker = None
        if "dipair" in self.kinds:
            from elasticir.rerank.dipair import DiPair

            self._dipair = DiPair.load(self.dipair_model)
            folder = Path(token_cache) if token_cache else self._default_token_cache()
            assert self.first.corpus is not None
            self._dipair.build_cache(self.first.corpus, folder, progress=progress)
            self.token_cache = folder
        if "ranker" in self.kinds:
            import warnings

            from elasticir.rerank.ranker import ElasticRanker, UntrainedExitsWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UntrainedExitsWarning)
                self._ranker = ElasticRanker(self.ranker_model)
            if not self._ranker.heads_trained:
                raise ValueError(f"{self.ranker_model}: not a trained ElasticRanker")

    def _default_token_cache(self) -> Path:
        assert self._dipair is not None
        return self.index.parent / f"{self.index.name}.dipair-{self._dipair.fingerprint[:12]}"

    @property
    def levels(self) -> list[str]:
        return [str(level) for level in self.first.levels]

    def _rerank_stage(self, choice: Choice) -> Rerank:
        key = (str(choice.rerank), choice.compute)
        stage = self._stages.get(key)
        if stage is not None:
            return stage
        if choice.rerank == "dipair":
            if self._dipair is None:
                raise ValueError(f"{choice}: this pipeline has no DiPair stage (--rerank dipair)")
            from elasticir.rerank.dipair import DiPairScorer

            scorer = DiPairScorer(self._dipair, self.token_cache)
        else:
            if self._ranker is None:
                raise ValueError(f"{choice}: this pipeline has no ranker stage (--rerank ranker)")
            from elasticir.rerank.factory import (
                check_calibrated_model,
                resolve_policy,
                shipped_calibration,
            )
            from elasticir.rerank.ranker import RankerScorer

            spec = choice.compute or "full"
            level, policy = "full", None
            if spec.startswith("calibrated:"):
                calibration = shipped_calibration(self.ranker_model, spec) or spec
                level, policy = resolve_policy("full", calibration)
                check_calibrated_model(calibration, self._ranker.fingerprint, self.ranker_model)
            elif ":" in spec:
                policy = spec
            else:
                level = spec
            scorer = RankerScorer(self._ranker, level, policy)
        stage = Rerank(scorer, self.first.corpus)
        self._stages[key] = stage
        return stage

    def check(self, choice: Choice) -> None:
        """Raise ``ValueError`` when this pipeline cannot serve ``choice`` (before any load)."""
        if choice.level not in self.levels:
            raise ValueError(
                f"{choice}: the index's encoder has no query level {choice.level} (it has: "
                f"{', '.join(self.levels)})"
            )
        if choice.reranks:
            self._rerank_stage(choice)

    def run(self, queries: Sequence[Query], choice: Choice, k: int = 10) -> PipelineResult:
        """The top ``k`` of every query at ``choice`` (a reranking choice returns at most its
        depth: the reranked candidates)."""
        if choice.reranks:
            pipeline = self.first % choice.depth >> self._rerank_stage(choice) % k
        else:
            pipeline = self.first % k
        compute = {"dense": choice.level}
        with self._lock:
            return pipeline(list(queries), compute=compute)


def default_choices(
    levels: Sequence[str],
    rerank: Sequence[str],
    depths: Sequence[int] = (20,),
    ranker_computes: Sequence[str] = ("full", "calibrated:rank"),
) -> list[Choice]:
    """What ``elasticir profile`` measures by default: every query level alone, and at the
    full query level each reranker at each depth (the ranker at each of ``ranker_computes``)."""
    choices = [Choice(level) for level in levels]
    top = "full" if "full" in levels else levels[-1]
    for depth in depths:
        if "dipair" in rerank:
            choices.append(Choice(top, "dipair", depth))
        if "ranker" in rerank:
            for compute in ranker_computes:
                choices.append(Choice(top, "ranker", depth, compute))
    return choices
