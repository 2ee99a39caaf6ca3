"""ElasticRanker in a cascade: its scorer, and reranking a run in one call.

The model (:mod:`elasticir.models.ranker`) scores pairs at a level under an exit policy; here
:class:`RankerScorer` makes it a ``Rerank`` stage's scorer whose level or policy is chosen
per call, and :func:`rerank_run` reranks a whole run. Old imports of
``elasticir.rerank.ranker`` keep working: the model's names are re-exported here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from elasticir.compute.exits import FixedLevel, Policy, parse_policy
from elasticir.compute.levels import FULL, Level
from elasticir.data.records import Passage, Run
from elasticir.models.ranker import (
    DEFAULT_GATE_INIT,
    DEFAULT_MAX_LENGTH,
    EXITS_FILE,
    HEADS,
    KIND,
    POOLED_OFFSET,
    POOLED_SCALE,
    ElasticRanker,
    ExitClassifier,
    ExitHeads,
    LayerRecords,
    PairMasks,
    RankerNet,
    RankerOutput,
    UntrainedExitsWarning,
    encode_pairs,
    pad_batch,
    read_manifest,
    write_ranker,
)
from elasticir.pipeline import Reranker

__all__ = [
    "DEFAULT_GATE_INIT",
    "DEFAULT_MAX_LENGTH",
    "EXITS_FILE",
    "HEADS",
    "KIND",
    "POOLED_OFFSET",
    "POOLED_SCALE",
    "ElasticRanker",
    "ExitClassifier",
    "ExitHeads",
    "LayerRecords",
    "PairMasks",
    "RankerNet",
    "RankerOutput",
    "RankerScorer",
    "UntrainedExitsWarning",
    "encode_pairs",
    "pad_batch",
    "read_manifest",
    "rerank_run",
    "write_ranker",
]


def rerank_run(
    ranker: ElasticRanker,
    run: Run,
    queries: Mapping[str, str],
    passages: Mapping[str, str] | Callable[[str], str],
    *,
    depth: int = 100,
    level: Level | str = FULL,
    policy: Policy | str | None = None,
    batch_size: int | None = None,
) -> tuple[Run, RankerOutput]:
    """Rerank each query's top ``depth`` candidates of ``run`` (ties by doc id).

    ``queries``: query id -> text (queries without text are left out); ``passages``: doc id
    -> text, or a function of the doc id. Returns the reranked run (query id -> {doc id:
    score}, the ``depth`` reranked candidates only) and the scoring output (pairs in the
    order of the run's queries, then of their first-stage ranks).
    """
    if depth < 1:
        raise ValueError(f"depth must be positive, got {depth}")
    lookup = passages if callable(passages) else passages.__getitem__
    pairs: list[tuple[str, str]] = []
    texts_q: list[str] = []
    texts_p: list[str] = []
    ranks: list[int] = []
    for qid, docs in run.items():
        if qid not in queries:
            continue
        ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]
        for rank, (doc, _) in enumerate(ranked, start=1):
            pairs.append((qid, doc))
            texts_q.append(queries[qid])
            texts_p.append(lookup(doc))
            ranks.append(rank)
    output = ranker.score_pairs(
        texts_q, texts_p, level=level, policy=policy, batch_size=batch_size, ranks=ranks
    )
    reranked: dict[str, dict[str, float]] = {}
    for (qid, doc), score in zip(pairs, output.scores.tolist()):
        reranked.setdefault(qid, {})[doc] = float(score)
    return reranked, output


class RankerScorer(Reranker):
    """An :class:`ElasticRanker` as a cascade stage's scorer (:mod:`elasticir.pipeline`):
    ``score(query, passages) -> float32 scores``, so ``dense % 100 >> RankerScorer(ranker,
    policy=calibration.policy)`` reranks.

    ``level`` and ``policy`` are the defaults; a call may choose another level or exit policy
    (``compute="L4"`` or ``"margin:0.9"``, the stage's entry of a pipeline's compute choice).
    What a call spends (``flops``, the full model's ``full_flops``, ``exit_layers``) is added
    to the call's ``report``; the scorer keeps nothing between calls, so threads may share it.
    Passages may be ``Passage`` records (their ``encoder_text()``) or strings.
    """

    stage_name = "ranker"

    def __init__(
        self,
        ranker: ElasticRanker,
        level: Level | str = FULL,
        policy: Policy | str | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.ranker = ranker
        self.level = ranker.check_level(level)
        self.policy = None if policy is None else parse_policy(policy)
        ranker.resolve(self.level, self.policy)  # fail now, not at the first query
        self.batch_size = batch_size

    @property
    def levels(self) -> tuple[Level, ...]:
        """The levels a call may choose (any exit policy over them, too)."""
        return tuple(self.ranker.levels)

    @property
    def default_compute(self) -> str:
        return str(self.level) if self.policy is None else self.policy.spec

    @property
    def fingerprint(self) -> str:
        """The ranker's fingerprint with the level and exit policy: what lets a distillation
        run (``elasticir train dipair --teacher``) cache this scorer's scores on disk."""
        policy = "none" if self.policy is None else self.policy.spec
        return f"ranker-{self.ranker.fingerprint}-{self.level}-{policy}"

    @property
    def reads_ranks(self) -> bool:
        """Whether the default policy reads first-stage ranks (a cascade passes ``first_rank``
        to every call anyway)."""
        return self.policy is not None and getattr(self.policy, "uses_ranks", False)

    def choice(self, compute: Policy | Level | str | None) -> tuple[Level, Policy | None]:
        """The level and exit policy a call at ``compute`` runs (None: the defaults)."""
        if compute is None:
            return self.level, self.policy
        chosen = parse_policy(compute)
        if isinstance(chosen, FixedLevel):
            return self.ranker.check_level(chosen.level), None
        return self.level, chosen

    def score(
        self,
        query: str,
        passages: Sequence[Passage | str],
        first_rank: int = 1,
        *,
        compute: Policy | Level | str | None = None,
        report: Counter[str] | None = None,
    ) -> np.ndarray:
        """Scores of ``passages`` (in first-stage order; a rank policy reads passage ``i``'s
        rank as ``first_rank + i``)."""
        level, policy = self.choice(compute)
        texts = [p if isinstance(p, str) else p.encoder_text() for p in passages]
        output = self.ranker.score(
            query, texts, level, policy, self.batch_size, first_rank=first_rank
        )
        if report is not None:
            report["flops"] += output.total_flops
            report["full_flops"] += int(output.full_flops.sum())
            report["exit_layers"] += int(output.exit_layers.sum())
        return output.scores

    def __repr__(self) -> str:
        policy = "" if self.policy is None else f", policy={self.policy.spec!r}"
        precision = "" if self.ranker.precision == "fp32" else f", {self.ranker.precision}"
        return (
            f"RankerScorer({self.ranker.model_name!r}, level={str(self.level)!r}{policy}"
            f"{precision})"
        )


def cost_summary(report: Mapping[str, float]) -> dict[str, float]:
    """Speedup over the full ranker and mean exit layer, from a stage's report counts."""
    pairs, spent = report.get("pairs scored", 0), report.get("flops", 0)
    return {
        "speedup": report.get("full_flops", 0) / spent if spent else 1.0,
        "mean_exit_layer": report.get("exit_layers", 0) / pairs if pairs else 0.0,
    }
