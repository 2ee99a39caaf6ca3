"""Exit policies for ElasticRanker, and their Learn-then-Test calibration.

A policy decides, after each layer, which candidates of a batch stop there. It reads one
confidence signal per candidate and compares it with a threshold (one number, or one per
layer); checks start at ``min_layer`` (1-based) and every candidate still running stops at the
depth of the level it is scored at. Policies are small immutable values whose ``repr``
evaluates back to an equal policy, and each has a one-word ``spec`` (:func:`parse_policy`)::

    FixedLevel(Level('L4'))                   "L4"           no adaptive exit: run a level
    EntropyPolicy(0.3)                        "entropy:0.3"  COST-EFF: exit when the binary
                                                             entropy (bits) of sigmoid(score)
                                                             is below the threshold
    ConfidencePolicy('margin', 0.9)           "margin:0.9"   CALM softmax response, for one
                                                             logit: |2 sigmoid(score) - 1|
    ConfidencePolicy('saturation', 0.99)      "saturation:0.99"  CALM state saturation: cosine
                                                             of this layer's and the previous
                                                             layer's exit state (layer 1 is
                                                             compared with the embeddings)
    ConfidencePolicy('classifier', 0.8)       "classifier:0.8"  CALM learned exit classifier:
                                                             its probability that this layer
                                                             already agrees with the deepest
    RankPolicy(0.05, weights)                 "rank:0.05,w=b:s:r/..."  CALM exit classifier
                                                             that also reads the candidate's
                                                             first-stage rank; exited
                                                             candidates are pruned (below)
    CutoffPolicy(30)                          "cutoff:30"    no early exit, a shorter list:
                                                             only first-stage ranks <= 30
                                                             are scored (below)

A confidence policy exits when the signal is strictly *above* its threshold, the entropy
policy when the entropy is strictly *below* it: ``entropy:0`` and ``margin:1`` never exit
early. ``sigmoid(score)`` is a relevance probability because ``elasticir train ranker`` adds a
pointwise term to each exit's loss (a listwise loss alone leaves the scores' offset free).

**Rank-aware exit** (:class:`RankPolicy`). In a cascade the candidates arrive in first-stage
order, and that order predicts the deepest exit's top 10 far better than the lower exits'
scores do (``benchmarks/exit_headroom.py``). After layer ``i`` a logistic exit classifier
gives ``p_i = sigmoid(b_i + s_i * score_i + r_i * ln(rank))``, the probability that the
candidate will be in the deepest exit's top ``k``; the candidate stops when ``p_i`` is
*below* the threshold, and is **pruned**: it ranks below every candidate that went deeper
(its score is its exit's logit minus ``PRUNE_GAP`` per layer it skipped). The weights are
fitted without labels (:func:`fit_rank_exits`) on queries kept apart from the Learn-then-Test
ones. The ranks are 1-based positions in the first stage's order: :meth:`ElasticRanker.score`
reads its passages' order, ``score_pairs`` takes ``ranks=``, and calibration data list each
query's candidates in first-stage order (:func:`calibration_queries` does).

**Calibrated list cutoff** (:class:`CutoffPolicy`). The peer of early exit that needs no exit
at all: score only the candidates of first-stage rank ``<= cutoff`` (at the level's depth)
and leave the others in first-stage order below them, never encoded (exit layer 0, no
FLOPs). Its family, ``"cutoff"``, calibrates the cutoff like a threshold, from long lists to
short, with the same loss and test: the calibrated depth of a cascade's reranking stage.

**Calibration** (:func:`calibrate`, Learn-then-Test as in CALM). A *family* (a measure and a
``min_layer``) has thresholds ordered from most conservative to most aggressive. The loss of
one query is how much the policy's ranking of its candidates loses against the ranker at the
same level without early exit, in [0, 1]:

* ``"consistency"`` (no labels): the reference ranking is graded -- its top ``k`` get grades
  ``k, k-1, ..., 1``, the rest 0 -- and the loss is ``1 - nDCG@k`` of the policy's ranking;
* ``"qrels"``: ``max(0, nDCG@k(reference) - nDCG@k(policy))`` on the query's judgements.

For each threshold, the empirical risk (mean loss over the calibration queries) gives a
p-value for ``H0: risk > delta`` (Hoeffding-Bentkus by default, or Hoeffding); fixed-sequence
testing at level ``epsilon`` walks the thresholds in order and keeps the most aggressive one
before the first p-value above ``epsilon``. Then, with probability at least ``1 - epsilon``
over the draw of calibration queries, the chosen policy's risk on new queries from the same
distribution is at most ``delta``. Nothing is rejected: the policy is the level itself (no
early exit). The ranker runs *once* per calibration pair, recording every layer's score and
signals; each threshold is then simulated from those records (the decision at layer ``i``
depends only on layers ``<= i``), with the FLOPs each candidate would have spent.
:func:`evaluate_policy` measures a policy on held-out queries by really running it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from elasticir.encoders.levels import FULL, Level

if TYPE_CHECKING:
    from elasticir.rerank.ranker import ElasticRanker, LayerRecords

__all__ = [
    "CUTOFFS",
    "FAMILIES",
    "MEASURES",
    "Calibration",
    "CalibrationQuery",
    "ConfidencePolicy",
    "CutoffPolicy",
    "EntropyPolicy",
    "ExitPolicy",
    "FixedLevel",
    "Policy",
    "PolicyEvaluation",
    "PolicyFamily",
    "PRUNE_GAP",
    "RankPolicy",
    "calibrate",
    "calibrate_families",
    "calibrate_records",
    "calibration_queries",
    "consistency_grades",
    "evaluate_policy",
    "first_stage_ranks",
    "fit_rank_exits",
    "hoeffding_bentkus_pvalue",
    "hoeffding_pvalue",
    "learn_then_test",
    "ndcg_at_k",
    "parse_policy",
    "query_losses",
    "simulate",
    "skipped_scores",
]

MEASURES = ("margin", "saturation", "classifier")
FAMILIES = ("entropy", *MEASURES, "rank", "cutoff")
CUTOFFS = (1000, 500, 300, 200, 150, 100, 90, 80, 70, 60, 50, 40, 30, 25, 20, 15, 10)
PRUNE_GAP = 1000.0  # score gap per skipped layer below which a pruned candidate ranks
BOUNDS = ("hb", "hoeffding")
LOSSES = ("consistency", "qrels")
Thresholds = float | tuple[float, ...]


# --------------------------------------------------------------------------- policies


def _thresholds(value: object, low: float, high: float, what: str) -> Thresholds:
    if isinstance(value, bool):
        raise TypeError(f"{what} threshold is a number, got {value!r}")
    if isinstance(value, (int, float, np.floating, np.integer)):
        values: tuple[float, ...] = (float(value),)
        out: Thresholds = float(value)
    elif isinstance(value, (list, tuple)) and value:
        values = tuple(float(v) for v in value)
        out = values
    else:
        raise TypeError(f"{what} thresholds: a number or a non-empty list per layer, got {value!r}")
    for v in values:
        if not low <= v <= high or math.isnan(v):
            raise ValueError(f"{what} thresholds lie in [{low}, {high}], got {v!r}")
    return out


def _min_layer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"min_layer is a layer number >= 1, got {value!r}")
    return int(value)


class ExitPolicy:
    """An adaptive per-candidate exit rule (see the module docstring)."""

    min_layer: int
    thresholds: Thresholds
    uses_saturation: bool = False
    uses_classifier: bool = False
    uses_ranks: bool = False  # reads each candidate's first-stage rank
    prunes: bool = False  # exited candidates rank below every one that went deeper
    exits_early: bool = True  # decides after layers (a cutoff decides before the first)

    def skips(self, ranks: np.ndarray) -> np.ndarray | None:
        """Which candidates (of these 1-based first-stage ranks) are never scored: None
        when every one runs (all but :class:`CutoffPolicy`)."""
        return None

    def threshold_at(self, layer: int) -> float:
        """The threshold applied after ``layer`` (1-based)."""
        if isinstance(self.thresholds, tuple):
            if layer > len(self.thresholds):
                raise ValueError(
                    f"{self!r} has {len(self.thresholds)} per-layer thresholds; layer {layer} "
                    "has none"
                )
            return self.thresholds[layer - 1]
        return self.thresholds

    def check(self, depth: int) -> None:
        """Raise ``ValueError`` unless the policy can run a model up to ``depth`` layers."""
        if isinstance(self.thresholds, tuple) and len(self.thresholds) < depth - 1:
            raise ValueError(
                f"{self!r} gives {len(self.thresholds)} per-layer thresholds; a depth of "
                f"{depth} needs {depth - 1} (the last layer always exits)"
            )

    def signal(
        self,
        scores: torch.Tensor,
        saturation: torch.Tensor | None = None,
        classifier: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The per-candidate value compared with the threshold."""
        raise NotImplementedError

    def exits(
        self,
        layer: int,
        scores: torch.Tensor,
        saturation: torch.Tensor | None = None,
        classifier: torch.Tensor | None = None,
        ranks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Boolean ``(rows,)``: which candidates stop after ``layer`` (1-based)."""
        if layer < self.min_layer:
            return torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
        return self._decide(layer, scores, saturation, classifier, ranks)

    def _decide(
        self,
        layer: int,
        scores: torch.Tensor,
        saturation: torch.Tensor | None,
        classifier: torch.Tensor | None,
        ranks: torch.Tensor | None,
    ) -> torch.Tensor:
        return self._compare(self.signal(scores, saturation, classifier), self.threshold_at(layer))

    def _compare(self, value: torch.Tensor, threshold: float) -> torch.Tensor:
        return value > threshold

    @property
    def spec(self) -> str:
        raise NotImplementedError


def _spec_thresholds(thresholds: Thresholds) -> str:
    if isinstance(thresholds, tuple):
        return "/".join(f"{t:g}" for t in thresholds)
    return f"{thresholds:g}"


def binary_entropy(scores: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of ``Bernoulli(sigmoid(scores))``, in [0, 1]; stable for large logits."""
    log_p, log_q = F.logsigmoid(scores), F.logsigmoid(-scores)
    p = torch.exp(log_p)
    return -(p * log_p + (1 - p) * log_q) / math.log(2.0)


@dataclass(frozen=True)
class FixedLevel:
    """No adaptive exit: every candidate runs ``level`` (a static level as a policy)."""

    level: Level

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", Level(self.level))

    @property
    def min_layer(self) -> int:
        return 1

    @property
    def spec(self) -> str:
        return str(self.level)


@dataclass(frozen=True)
class EntropyPolicy(ExitPolicy):
    """COST-EFF: exit when the binary entropy (bits) of ``sigmoid(score)`` is below the
    threshold of the layer (``thresholds``: one number in [0, 1], or one per layer)."""

    thresholds: Thresholds
    min_layer: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", _thresholds(self.thresholds, 0.0, 1.0, "entropy"))
        object.__setattr__(self, "min_layer", _min_layer(self.min_layer))

    def signal(
        self,
        scores: torch.Tensor,
        saturation: torch.Tensor | None = None,
        classifier: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return binary_entropy(scores.float())

    def _compare(self, value: torch.Tensor, threshold: float) -> torch.Tensor:
        return value < threshold

    @property
    def spec(self) -> str:
        out = f"entropy:{_spec_thresholds(self.thresholds)}"
        return out if self.min_layer == 1 else f"{out},min={self.min_layer}"


@dataclass(frozen=True)
class ConfidencePolicy(ExitPolicy):
    """CALM: exit when the confidence ``measure`` is above ``threshold`` (one number, or one
    per layer).

    ``measure``: ``"margin"`` (``|2 sigmoid(score) - 1|``, in [0, 1]), ``"saturation"``
    (cosine of consecutive exit states, in [-1, 1]) or ``"classifier"`` (the ranker's learned
    exit classifier's probability, in [0, 1]; needs a ranker trained with one).
    """

    measure: str
    threshold: Thresholds
    min_layer: int = 1

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ValueError(f"confidence measure is one of {MEASURES}, got {self.measure!r}")
        low = -1.0 if self.measure == "saturation" else 0.0
        object.__setattr__(self, "threshold", _thresholds(self.threshold, low, 1.0, self.measure))
        object.__setattr__(self, "min_layer", _min_layer(self.min_layer))

    @property
    def thresholds(self) -> Thresholds:  # type: ignore[override]
        return self.threshold

    @property
    def uses_saturation(self) -> bool:  # type: ignore[override]
        return self.measure == "saturation"

    @property
    def uses_classifier(self) -> bool:  # type: ignore[override]
        return self.measure == "classifier"

    def signal(
        self,
        scores: torch.Tensor,
        saturation: torch.Tensor | None = None,
        classifier: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.measure == "margin":
            return (2 * torch.sigmoid(scores.float()) - 1).abs()
        value = saturation if self.measure == "saturation" else classifier
        if value is None:
            raise ValueError(f"policy {self.spec} needs the {self.measure} signal")
        return value

    @property
    def spec(self) -> str:
        out = f"{self.measure}:{_spec_thresholds(self.thresholds)}"
        return out if self.min_layer == 1 else f"{out},min={self.min_layer}"


RankWeights = tuple[tuple[float, float, float], ...]


def _rank_weights(value: object) -> RankWeights:
    try:
        rows = tuple(tuple(float(w) for w in row) for row in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        rows = ()
    if not rows or any(len(row) != 3 or not all(map(math.isfinite, row)) for row in rows):
        raise ValueError(
            "rank exit weights are one finite (bias, score weight, log-rank weight) triple per "
            f"layer, got {value!r}"
        )
    return rows


@dataclass(frozen=True)
class RankPolicy(ExitPolicy):
    """CALM's learned exit classifier, reading the candidate's first-stage rank as well: after
    layer ``i``, ``p = sigmoid(b + s * score + r * ln(rank))`` with ``(b, s, r) = weights[i - 1]``
    estimates whether the candidate will be in the deepest exit's top ``k``; it stops when
    ``p`` is below ``threshold`` (one number in [0, 1], or one per layer) and is pruned: it
    ranks below every candidate that went deeper. ``threshold=0`` never exits early.
    Weights come from :func:`fit_rank_exits`; ``ranks`` are 1-based first-stage positions.
    """

    threshold: Thresholds
    weights: RankWeights
    min_layer: int = 1
    uses_ranks = True
    prunes = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", _thresholds(self.threshold, 0.0, 1.0, "rank"))
        object.__setattr__(self, "weights", _rank_weights(self.weights))
        object.__setattr__(self, "min_layer", _min_layer(self.min_layer))

    @property
    def thresholds(self) -> Thresholds:  # type: ignore[override]
        return self.threshold

    def check(self, depth: int) -> None:
        super().check(depth)
        if len(self.weights) < depth - 1:
            raise ValueError(
                f"rank policy has exit weights for {len(self.weights)} layers; a depth of "
                f"{depth} needs {depth - 1} (fit them at that level: fit_rank_exits)"
            )

    def probability(self, layer: int, scores: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        """``p`` after ``layer`` (1-based) for candidates with these exit scores and ranks."""
        if layer > len(self.weights):
            raise ValueError(f"rank policy has no exit weights for layer {layer}")
        bias, slope, rank_slope = self.weights[layer - 1]
        logits = bias + slope * scores.double() + rank_slope * torch.log(ranks.double())
        return torch.sigmoid(logits)

    def _decide(
        self,
        layer: int,
        scores: torch.Tensor,
        saturation: torch.Tensor | None,
        classifier: torch.Tensor | None,
        ranks: torch.Tensor | None,
    ) -> torch.Tensor:
        if ranks is None:
            raise ValueError(
                f"policy {self.spec[:40]}... reads each candidate's first-stage rank: pass "
                "ranks (1-based positions in the first stage's order)"
            )
        return self.probability(layer, scores, ranks) < self.threshold_at(layer)

    @property
    def spec(self) -> str:
        weights = "/".join(":".join(repr(float(w)) for w in row) for row in self.weights)
        out = f"rank:{_spec_thresholds(self.threshold)},w={weights}"
        return out if self.min_layer == 1 else f"{out},min={self.min_layer}"


def _cutoff(value: object) -> int:
    number = value if isinstance(value, (int, float, np.integer, np.floating)) else None
    if isinstance(value, bool) or number is None or not math.isfinite(number):
        raise ValueError(f"a list cutoff is a whole number of candidates >= 1, got {value!r}")
    if number != int(number) or number < 1:
        raise ValueError(f"a list cutoff is a whole number of candidates >= 1, got {value!r}")
    return int(number)


def skipped_scores(ranks: np.ndarray, depth: int) -> np.ndarray:
    """The scores of candidates a cutoff leaves out, at a level of ``depth`` layers: below
    every scored candidate (pruned ones included), in first-stage order."""
    return (-(PRUNE_GAP * (depth + 1)) - np.asarray(ranks, dtype=np.float64)).astype(np.float32)


@dataclass(frozen=True)
class CutoffPolicy(ExitPolicy):
    """Score only the candidates of first-stage rank ``<= cutoff``, at the level's depth with
    no early exit; the others are never encoded (exit layer 0) and keep the first-stage order
    below every scored one (:func:`skipped_scores`). Reads ranks as :class:`RankPolicy` does.
    """

    cutoff: int
    uses_ranks = True
    prunes = True
    exits_early = False
    min_layer = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "cutoff", _cutoff(self.cutoff))

    @property
    def thresholds(self) -> Thresholds:  # type: ignore[override]
        return float(self.cutoff)

    def skips(self, ranks: np.ndarray) -> np.ndarray | None:
        return np.asarray(ranks) > self.cutoff

    def signal(self, scores: torch.Tensor, *_: torch.Tensor | None) -> torch.Tensor:
        """No exit after a layer: a signal of 0 never exceeds the cutoff (at least 1)."""
        return torch.zeros_like(scores)

    @property
    def spec(self) -> str:
        return f"cutoff:{self.cutoff}"


Policy = FixedLevel | EntropyPolicy | ConfidencePolicy | RankPolicy | CutoffPolicy

_SPEC = re.compile(
    r"^(?P<name>[a-z]+):(?P<values>[^,]+)(?:,w=(?P<weights>[^,]+))?(?:,min=(?P<min>\d+))?$"
)


def parse_policy(spec: str | Policy) -> Policy:
    """A policy from its ``spec``: ``"L4-W75"``, ``"entropy:0.3"``, ``"margin:0.9,min=2"``,
    ``"entropy:0.1/0.2/0.3/0.4/0.5"`` (per layer)... A policy value passes through."""
    if isinstance(spec, (FixedLevel, ExitPolicy)):
        return spec  # type: ignore[return-value]
    text = str(spec).strip()
    match = _SPEC.match(text)
    if match is None:
        try:
            return FixedLevel(Level(text))
        except ValueError:
            raise ValueError(
                f"not an exit policy: {spec!r}; expected a level ('L4-W75', 'full') or "
                "'<entropy|margin|saturation|classifier>:<threshold>[,min=<layer>]' or "
                "'rank:<threshold>,w=<weights>' or 'cutoff:<candidates>'"
            ) from None
    name, values = match.group("name"), match.group("values").split("/")
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise ValueError(f"not an exit policy: {spec!r}; thresholds are numbers") from None
    thresholds: Thresholds = numbers[0] if len(numbers) == 1 else tuple(numbers)
    min_layer = int(match.group("min") or 1)
    if name == "rank":
        if match.group("weights") is None:
            raise ValueError(
                f"not an exit policy: {spec!r}; a rank policy carries its fitted weights "
                "('rank:<threshold>,w=<b>:<s>:<r>/...'): calibrate one (family rank)"
            )
        try:
            weights = [
                [float(w) for w in row.split(":")] for row in match.group("weights").split("/")
            ]
        except ValueError:
            raise ValueError(f"not an exit policy: {spec!r}; weights are numbers") from None
        return RankPolicy(thresholds, tuple(tuple(row) for row in weights), min_layer)  # type: ignore[arg-type]
    if match.group("weights") is not None:
        raise ValueError(f"not an exit policy: {spec!r}; only rank policies carry weights")
    if name == "cutoff":
        if len(numbers) != 1 or match.group("min") is not None:
            raise ValueError(f"not an exit policy: {spec!r}; a cutoff is one number: 'cutoff:30'")
        return CutoffPolicy(_cutoff(numbers[0]))
    if name == "entropy":
        return EntropyPolicy(thresholds, min_layer)
    if name in MEASURES:
        return ConfidencePolicy(name, thresholds, min_layer)
    raise ValueError(f"not an exit policy: {spec!r}; unknown measure {name!r}")


# --------------------------------------------------------------------------- families


@dataclass(frozen=True)
class PolicyFamily:
    """A policy family for calibration: a measure (``"entropy"``, ``"margin"``,
    ``"saturation"``, ``"classifier"``, ``"rank"``, ``"cutoff"``) and a ``min_layer``; one
    policy per threshold (for ``"cutoff"``, the threshold is the list cutoff). The rank family
    also needs its exit ``weights`` (:func:`fit_rank_exits`); left out, calibration fits them
    on a share of the calibration queries."""

    measure: str
    min_layer: int = 1
    weights: RankWeights | None = None

    def __post_init__(self) -> None:
        if self.measure not in FAMILIES:
            raise ValueError(f"policy family is one of {FAMILIES}, got {self.measure!r}")
        object.__setattr__(self, "min_layer", _min_layer(self.min_layer))
        if self.measure == "cutoff" and self.min_layer != 1:
            raise ValueError("the cutoff family has no exit layers: leave min_layer at 1")
        if self.weights is not None:
            if self.measure != "rank":
                raise ValueError(f"only the rank family has exit weights, not {self.measure!r}")
            object.__setattr__(self, "weights", _rank_weights(self.weights))

    def policy(
        self, threshold: float
    ) -> EntropyPolicy | ConfidencePolicy | RankPolicy | CutoffPolicy:
        if self.measure == "cutoff":
            return CutoffPolicy(_cutoff(threshold))
        if self.measure == "entropy":
            return EntropyPolicy(float(threshold), self.min_layer)
        if self.measure == "rank":
            if self.weights is None:
                raise ValueError(
                    "the rank family's policies need fitted exit weights (fit_rank_exits; "
                    "calibrate fits them on part of the calibration queries)"
                )
            return RankPolicy(float(threshold), self.weights, self.min_layer)
        return ConfidencePolicy(self.measure, float(threshold), self.min_layer)

    @property
    def increasing(self) -> bool:
        """Whether larger thresholds exit more (entropy, rank) rather than fewer."""
        return self.measure in ("entropy", "rank")

    def default_thresholds(self) -> tuple[float, ...]:
        """41 thresholds, most conservative (never exits early) first, denser where the
        decisions are cautious: ``u in {0} + logspace(-4, 0, 40)``, as the entropy itself or
        as ``1 - u`` for a confidence. Cutoffs: ``CUTOFFS``, 1000 candidates down to 10."""
        if self.measure == "cutoff":
            return tuple(float(c) for c in CUTOFFS)
        u = np.concatenate([[0.0], np.logspace(-4, 0, 40)])
        values = u if self.increasing else 1.0 - u
        return tuple(float(round(v, 10)) for v in values)

    def is_ordered(self, thresholds: Sequence[float]) -> bool:
        """Whether ``thresholds`` go from conservative to aggressive for this family."""
        diffs = np.diff(np.asarray(thresholds, dtype=np.float64))
        return bool(np.all(diffs > 0) if self.increasing else np.all(diffs < 0))


def _family(family: str | PolicyFamily) -> PolicyFamily:
    return family if isinstance(family, PolicyFamily) else PolicyFamily(str(family))


# --------------------------------------------------------------------------- simulation


def simulate(
    policy: Policy, records: LayerRecords, ranks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(exit_layers, scores)`` the policy gives each recorded pair (1-based layers).

    Uses the same :meth:`ExitPolicy.exits` as the ranker's real early exit, on the recorded
    per-layer scores and signals: the decision after layer ``i`` needs nothing deeper. A
    pruning policy's scores are what the ranker returns (exit logit minus ``PRUNE_GAP`` per
    skipped layer). ``ranks``: each pair's 1-based first-stage rank, for rank and cutoff
    policies; a cutoff's skipped pairs get exit layer 0 and :func:`skipped_scores`.
    """
    n, depth = records.scores.shape
    if isinstance(policy, FixedLevel):
        stop = policy.level.resolve(records.num_layers).depth
        assert stop is not None
        if stop > depth:
            raise ValueError(f"policy {policy.spec} is deeper than the records ({depth} layers)")
        exit_layers = np.full(n, stop, dtype=np.int64)
    elif isinstance(policy, CutoffPolicy):
        if ranks is None or len(ranks) != n:
            raise ValueError(f"policy {policy.spec} needs one first-stage rank per record")
        skipped = policy.skips(np.asarray(ranks))
        exit_layers = np.where(skipped, 0, depth).astype(np.int64)
        chosen = records.scores[:, depth - 1].astype(np.float32)
        chosen[skipped] = skipped_scores(np.asarray(ranks)[skipped], depth)
        return exit_layers, chosen
    else:
        policy.check(depth)
        if policy.uses_classifier and records.classifier is None:
            raise ValueError("these records have no exit-classifier signal (untrained classifier)")
        scores = torch.from_numpy(records.scores)
        saturation = torch.from_numpy(records.saturation)
        classifier = None if records.classifier is None else torch.from_numpy(records.classifier)
        if policy.uses_ranks and (ranks is None or len(ranks) != n):
            raise ValueError(f"policy {policy.spec[:40]}... needs one first-stage rank per record")
        rank_tensor = None if ranks is None else torch.as_tensor(np.asarray(ranks, np.float64))
        exit_layers = np.full(n, depth, dtype=np.int64)
        running = np.ones(n, dtype=bool)
        for i in range(depth - 1):
            done = policy.exits(
                i + 1,
                scores[:, i],
                saturation[:, i],
                None if classifier is None else classifier[:, i],
                rank_tensor,
            ).numpy()
            now = done & running
            exit_layers[now] = i + 1
            running &= ~done
    chosen = records.scores[np.arange(n), exit_layers - 1].astype(np.float32)
    if getattr(policy, "prunes", False):
        chosen = chosen - np.float32(PRUNE_GAP) * (depth - exit_layers).astype(np.float32)
    return exit_layers, chosen


def first_stage_ranks(offsets: Sequence[int] | np.ndarray) -> np.ndarray:
    """1-based position of every pair within its query (queries own ``offsets[q]:offsets[q+1]``
    and list their candidates in first-stage order)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    return np.concatenate(
        [np.arange(1, b - a + 1, dtype=np.int64) for a, b in zip(offsets[:-1], offsets[1:])]
        or [np.zeros(0, dtype=np.int64)]
    )


def _logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 100) -> np.ndarray:
    """``(bias, *weights)`` of an L2-regularised logistic regression of ``y`` on the columns
    of ``x``, by Newton steps on standardised columns, returned for the raw columns."""
    mean, scale = x.mean(0), x.std(0) + 1e-9
    design = np.column_stack([np.ones(len(x)), (x - mean) / scale])
    w = np.zeros(design.shape[1])
    penalty = l2 * np.eye(len(w))
    penalty[0, 0] = 0.0  # the bias is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -50, 50)))
        gradient = design.T @ (p - y) / len(y) + penalty @ w
        hessian = (design * (p * (1 - p))[:, None]).T @ design / len(y) + penalty
        step = np.linalg.solve(hessian + 1e-12 * np.eye(len(w)), gradient)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    slopes = w[1:] / scale
    return np.concatenate([[w[0] - float(slopes @ mean)], slopes])


def fit_rank_exits(
    records: LayerRecords,
    offsets: Sequence[int] | np.ndarray,
    *,
    k: int = 10,
    ranks: np.ndarray | None = None,
    l2: float = 1e-3,
) -> RankWeights:
    """Exit weights for :class:`RankPolicy`, fitted without labels: for each exit but the
    deepest, a logistic regression of "in the deepest exit's top ``k`` of its query" on that
    exit's score and ``ln(rank)`` (``ranks`` default: positions within each query)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    ranks = first_stage_ranks(offsets) if ranks is None else np.asarray(ranks)
    depth = records.depth
    if depth < 2:
        raise ValueError("a one-layer level has no exit to fit")
    last = records.scores[:, depth - 1]
    target = np.zeros(len(last), dtype=np.float64)
    for a, b in zip(offsets[:-1], offsets[1:]):
        target[a + np.argsort(-last[a:b], kind="stable")[:k]] = 1.0
    if target.min() == target.max():
        raise ValueError(f"every candidate is in its query's top {k}: nothing to fit")
    log_ranks = np.log(ranks.astype(np.float64))
    weights = []
    for i in range(depth - 1):
        x = np.column_stack([records.scores[:, i].astype(np.float64), log_ranks])
        weights.append(tuple(float(w) for w in _logistic(x, target, l2)))
    return tuple(weights)  # type: ignore[return-value]


# --------------------------------------------------------------------------- ranking losses


def ndcg_at_k(scores: np.ndarray, gains: np.ndarray, k: int = 10) -> float:
    """nDCG@k of ranking by ``scores`` (descending; ties by position) with linear ``gains``
    and ``1 / log2(rank + 1)`` discounts; 0 when no gain is positive."""
    gains = np.asarray(gains, dtype=np.float64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    discounts = 1.0 / np.log2(np.arange(2, len(order) + 2))
    ideal = np.sort(gains)[::-1][:k]
    best = float((ideal * discounts[: len(ideal)]).sum())
    if best <= 0:
        return 0.0
    return float((gains[order] * discounts).sum()) / best


def consistency_grades(reference: np.ndarray, k: int = 10) -> np.ndarray:
    """Graded relevance from a reference ranking: its top ``k`` get ``k, ..., 1``, others 0."""
    order = np.argsort(-np.asarray(reference, dtype=np.float64), kind="stable")
    grades = np.zeros(len(order), dtype=np.float64)
    top = order[:k]
    grades[top] = k - np.arange(len(top))
    return grades


def query_losses(
    policy_scores: np.ndarray,
    reference_scores: np.ndarray,
    offsets: np.ndarray,
    *,
    k: int = 10,
    loss: str = "consistency",
    relevance: Sequence[np.ndarray | None] | None = None,
) -> np.ndarray:
    """Per-query loss in [0, 1] (see the module docstring); ``offsets`` delimit the queries'
    candidates in the score arrays (``offsets[q]:offsets[q + 1]``)."""
    if loss not in LOSSES:
        raise ValueError(f"loss is one of {LOSSES}, got {loss!r}")
    out = np.empty(len(offsets) - 1, dtype=np.float64)
    for q in range(len(out)):
        a, b = int(offsets[q]), int(offsets[q + 1])
        if loss == "consistency":
            grades = consistency_grades(reference_scores[a:b], k)
            out[q] = 1.0 - ndcg_at_k(policy_scores[a:b], grades, k)
        else:
            grades = None if relevance is None else relevance[q]
            if grades is None:
                raise ValueError(f"loss='qrels' needs the relevance of every query (query {q})")
            drop = ndcg_at_k(reference_scores[a:b], grades, k) - ndcg_at_k(
                policy_scores[a:b], grades, k
            )
            out[q] = max(0.0, drop)
    return np.clip(out, 0.0, 1.0)


# --------------------------------------------------------------------------- Learn-then-Test


def hoeffding_pvalue(risk: float, n: int, delta: float) -> float:
    """p-value of ``H0: true risk > delta`` from the mean of ``n`` losses in [0, 1]
    (Hoeffding: ``exp(-2 n (delta - risk)_+^2)``)."""
    gap = max(0.0, delta - risk)
    return float(min(1.0, math.exp(-2.0 * n * gap * gap)))


def _binom_cdf(x: int, n: int, p: float) -> float:
    """``P(Binomial(n, p) <= x)``, summed in log space."""
    if x < 0:
        return 0.0
    if x >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    ks = np.arange(0, x + 1, dtype=np.float64)
    log_pmf = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(k + 1) + math.lgamma(n - k + 1) for k in ks])
        + ks * math.log(p)
        + (n - ks) * math.log1p(-p)
    )
    top = float(log_pmf.max())
    return float(min(1.0, math.exp(top) * np.exp(log_pmf - top).sum()))


def hoeffding_bentkus_pvalue(risk: float, n: int, delta: float) -> float:
    """The Hoeffding-Bentkus p-value of Learn-then-Test (Angelopoulos et al. 2021, eq. 7) for
    ``H0: true risk > delta`` from the mean ``risk`` of ``n`` losses in [0, 1]::

        min( exp(-n h1(min(risk, delta), delta)),  e * P(Binomial(n, delta) <= ceil(n risk)) )

    with ``h1(a, b) = a log(a / b) + (1 - a) log((1 - a) / (1 - b))``.
    """
    if n < 1:
        return 1.0
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta lies in (0, 1), got {delta!r}")
    a = min(max(risk, 0.0), delta)

    def xlogy(x: float, y: float) -> float:
        return 0.0 if x == 0.0 else x * math.log(x / y)

    h1 = xlogy(a, delta) + xlogy(1.0 - a, 1.0 - delta)
    hoeffding = math.exp(-n * h1)
    bentkus = math.e * _binom_cdf(math.ceil(n * risk - 1e-9), n, delta)
    return float(min(1.0, hoeffding, bentkus))


def learn_then_test(
    losses: np.ndarray, delta: float, epsilon: float, bound: str = "hb"
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Fixed-sequence Learn-then-Test over ``losses`` ``(queries, thresholds)`` in [0, 1],
    columns ordered from most conservative to most aggressive.

    Returns ``(risks, pvalues, chosen)``: each column's mean loss, its p-value for
    ``H0: risk > delta``, and the index of the last column before the first p-value above
    ``epsilon`` (None when the first is not rejected).
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 2 or losses.shape[0] < 1:
        raise ValueError("losses is a (queries, thresholds) array with at least one query")
    if np.any(losses < 0) or np.any(losses > 1) or np.any(np.isnan(losses)):
        raise ValueError("losses must lie in [0, 1]")
    if not 0.0 < delta < 1.0 or not 0.0 < epsilon < 1.0:
        raise ValueError(f"delta and epsilon lie in (0, 1), got {delta!r} and {epsilon!r}")
    if bound not in BOUNDS:
        raise ValueError(f"bound is one of {BOUNDS}, got {bound!r}")
    n = losses.shape[0]
    risks = losses.mean(axis=0)
    pvalue = hoeffding_bentkus_pvalue if bound == "hb" else hoeffding_pvalue
    pvalues = np.array([pvalue(float(r), n, delta) for r in risks])
    chosen = None
    for j, p in enumerate(pvalues):
        if p > epsilon:
            break
        chosen = j
    return risks, pvalues, chosen


# --------------------------------------------------------------------------- calibration data


@dataclass(frozen=True)
class CalibrationQuery:
    """One query of calibration (or evaluation) data: its text, its candidates' texts and,
    optionally, each candidate's graded relevance (for ``loss="qrels"``)."""

    query: str
    passages: tuple[str, ...]
    relevance: tuple[int, ...] | None = None

    @classmethod
    def of(cls, item: CalibrationQuery | Sequence[Any]) -> CalibrationQuery:
        """From ``(query, passages)`` or ``(query, passages, relevance)``; relevance is a list
        aligned with the passages or a dict ``{passage text: grade}`` (missing: 0)."""
        if isinstance(item, CalibrationQuery):
            return item
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError(
                "calibration data are (query, passages) or (query, passages, relevance) "
                f"items, got {type(item).__name__}"
            )
        query, passages = str(item[0]), tuple(str(p) for p in item[1])
        if not passages:
            raise ValueError(f"query {query!r} has no candidate passages")
        relevance = item[2] if len(item) == 3 else None
        grades: tuple[int, ...] | None = None
        if isinstance(relevance, dict):
            grades = tuple(int(relevance.get(p, 0)) for p in passages)
        elif relevance is not None:
            grades = tuple(int(g) for g in relevance)
            if len(grades) != len(passages):
                raise ValueError(
                    f"query {query!r}: {len(grades)} grades for {len(passages)} passages"
                )
        return cls(query, passages, grades)


def calibration_queries(
    run: dict[str, dict[str, float]],
    queries: dict[str, str],
    passages: dict[str, str] | Any,
    qrels: dict[str, dict[str, int]] | None = None,
    depth: int = 100,
) -> list[CalibrationQuery]:
    """Calibration data from a first-stage TREC run: each query's top ``depth`` candidates
    (by score, ties by doc id), their texts (``passages[doc_id]``) and, with ``qrels``, their
    grades. Queries without text are skipped; query order follows ``run``."""
    out = []
    for qid, docs in run.items():
        if qid not in queries or not docs:
            continue
        ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]
        ids = [doc for doc, _ in ranked]
        grades = None
        if qrels is not None:
            judged = qrels.get(qid, {})
            grades = tuple(int(judged.get(doc, 0)) for doc in ids)
        out.append(CalibrationQuery(queries[qid], tuple(passages[d] for d in ids), grades))
    return out


def _flatten(
    items: Iterable[Any],
) -> tuple[list[CalibrationQuery], list[str], list[str], np.ndarray]:
    data = [CalibrationQuery.of(item) for item in items]
    if not data:
        raise ValueError("no calibration queries")
    queries = [d.query for d in data for _ in d.passages]
    passages = [p for d in data for p in d.passages]
    offsets = np.cumsum([0, *(len(d.passages) for d in data)])
    return data, queries, passages, offsets


# --------------------------------------------------------------------------- calibrate


@dataclass(frozen=True)
class Calibration:
    """What Learn-then-Test chose, and the evidence (one entry per threshold tried).

    ``policy`` is the chosen policy, or ``FixedLevel(level)`` (no early exit) when not even
    the most conservative threshold was shown safe. ``speedups[j]`` is the reference's FLOPs
    (``level`` without exit) over threshold ``j``'s on the calibration pairs;
    ``full_speedup`` compares the chosen policy with the full model (every layer, full width).
    ``fit_queries``: calibration queries used to fit a rank family's exit weights (kept out of
    ``n_queries``, the queries Learn-then-Test ran on). The guarantee holds for the policy run
    at ``level``: score with ``ranker.score_pairs(..., level=calibration.level,
    policy=calibration.policy)`` (and ``ranks=`` for a rank policy).
    """

    family: PolicyFamily
    level: Level
    delta: float
    epsilon: float
    bound: str
    loss: str
    k: int
    thresholds: tuple[float, ...]
    risks: tuple[float, ...]
    pvalues: tuple[float, ...]
    speedups: tuple[float, ...]
    mean_exit_layers: tuple[float, ...]
    chosen: int | None
    n_queries: int
    n_pairs: int
    full_speedup: float
    policy: Policy = field(compare=False)
    fit_queries: int = 0

    @property
    def threshold(self) -> float | None:
        return None if self.chosen is None else self.thresholds[self.chosen]

    @property
    def risk(self) -> float:
        """Empirical risk of the chosen policy on the calibration queries (0 without exit)."""
        return 0.0 if self.chosen is None else self.risks[self.chosen]

    @property
    def speedup(self) -> float:
        return 1.0 if self.chosen is None else self.speedups[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (the policy as its ``spec``)."""
        return {
            "family": self.family.measure,
            "min_layer": self.family.min_layer,
            "level": str(self.level),
            "delta": self.delta,
            "epsilon": self.epsilon,
            "bound": self.bound,
            "loss": self.loss,
            "k": self.k,
            "policy": self.policy.spec,
            "threshold": self.threshold,
            "risk": self.risk,
            "speedup": self.speedup,
            "full_speedup": self.full_speedup,
            "n_queries": self.n_queries,
            "n_pairs": self.n_pairs,
            "fit_queries": self.fit_queries,
            "thresholds": list(self.thresholds),
            "risks": list(self.risks),
            "pvalues": list(self.pvalues),
            "speedups": list(self.speedups),
            "mean_exit_layers": list(self.mean_exit_layers),
        }


def calibrate(
    ranker: ElasticRanker,
    calibration_queries: Iterable[CalibrationQuery | Sequence[Any]],
    family: str | PolicyFamily,
    delta: float,
    epsilon: float,
    thresholds: Sequence[float] | None = None,
    *,
    level: Level | str = FULL,
    loss: str = "consistency",
    k: int = 10,
    bound: str = "hb",
    batch_size: int | None = None,
    progress: bool = False,
) -> Calibration:
    """Learn-then-Test: the most aggressive threshold of ``family`` whose risk is shown to be at
    most ``delta`` with probability ``1 - epsilon`` (see the module docstring).

    ``calibration_queries``: ``(query, passages[, relevance])`` items (or
    :class:`CalibrationQuery`), e.g. the top-100 of a first-stage run
    (:func:`calibration_queries`). ``thresholds`` go from most conservative to most
    aggressive (default :meth:`PolicyFamily.default_thresholds`). ``level`` sets the width and
    the deepest layer; the loss compares with that level without early exit. The ranker runs
    once per pair (:meth:`ElasticRanker.layer_records`); :func:`calibrate_records` does the rest.
    """
    family = _family(family)
    records, offsets, relevance = _recorded(
        ranker, calibration_queries, level, batch_size, family.measure == "classifier", progress
    )
    return calibrate_records(
        records,
        offsets,
        family,
        delta,
        epsilon,
        thresholds,
        loss=loss,
        k=k,
        bound=bound,
        relevance=relevance,
    )


def calibrate_families(
    ranker: ElasticRanker,
    calibration_queries: Iterable[CalibrationQuery | Sequence[Any]],
    families: Sequence[str | PolicyFamily],
    delta: float,
    epsilon: float,
    *,
    level: Level | str = FULL,
    loss: str = "consistency",
    k: int = 10,
    bound: str = "hb",
    batch_size: int | None = None,
    progress: bool = False,
) -> dict[str, Calibration]:
    """:func:`calibrate` for several policy families at once, with their default thresholds:
    the ranker runs once per pair for all of them (one :meth:`ElasticRanker.layer_records`
    pass), keyed by each family's ``measure``. A family that cannot be calibrated (the
    classifier of a ranker without one, a ``min_layer`` deeper than ``level``) raises."""
    chosen = [_family(f) for f in families]
    if not chosen:
        raise ValueError("no policy families to calibrate")
    if any(f.measure == "classifier" for f in chosen) and not ranker.has_classifier:
        raise ValueError("this ranker has no exit classifier: leave out the classifier family")
    records, offsets, relevance = _recorded(
        ranker,
        calibration_queries,
        level,
        batch_size,
        any(f.measure == "classifier" for f in chosen),
        progress,
    )
    return {
        family.measure: calibrate_records(
            records,
            offsets,
            family,
            delta,
            epsilon,
            loss=loss,
            k=k,
            bound=bound,
            relevance=relevance,
        )
        for family in chosen
    }


def _recorded(
    ranker: ElasticRanker,
    calibration_queries: Iterable[CalibrationQuery | Sequence[Any]],
    level: Level | str,
    batch_size: int | None,
    classifier: bool,
    progress: bool = False,
) -> tuple[LayerRecords, np.ndarray, list[np.ndarray | None]]:
    """The layer records of every calibration pair, the queries' offsets and relevance."""
    data, queries, passages, offsets = _flatten(calibration_queries)
    records = ranker.layer_records(
        queries,
        passages,
        ranker.check_level(level),
        batch_size=batch_size,
        classifier=classifier,
        progress=progress,
    )
    relevance = [None if d.relevance is None else np.asarray(d.relevance) for d in data]
    return records, offsets, relevance


def calibrate_records(
    records: LayerRecords,
    offsets: Sequence[int] | np.ndarray,
    family: str | PolicyFamily,
    delta: float,
    epsilon: float,
    thresholds: Sequence[float] | None = None,
    *,
    loss: str = "consistency",
    k: int = 10,
    bound: str = "hb",
    relevance: Sequence[np.ndarray | None] | None = None,
    ranks: np.ndarray | None = None,
    fit_every: int = 3,
) -> Calibration:
    """Learn-then-Test on recorded exits: ``records`` hold the calibration pairs, query ``q``
    owning rows ``offsets[q]:offsets[q + 1]``; each threshold is simulated (:func:`simulate`)
    and scored with :func:`query_losses` against the deepest recorded exit.

    The rank and cutoff families read ``ranks`` (default: positions within each query, i.e.
    candidates in first-stage order). Without weights, the rank family's are fitted
    (:func:`fit_rank_exits`) on every ``fit_every``-th query (0, 3, 6, ...), and Learn-then-Test
    runs on the others only, so the test does not see the queries that shaped the thresholds'
    meaning."""
    family = _family(family)
    offsets = np.asarray(offsets, dtype=np.int64)
    fit_queries = 0
    if family.measure in ("rank", "cutoff"):
        if offsets[0] != 0 or offsets[-1] != records.scores.shape[0]:
            raise ValueError("offsets must run from 0 to the number of records")
        ranks = first_stage_ranks(offsets) if ranks is None else np.asarray(ranks)
        if family.measure == "rank" and family.weights is None:
            if fit_every < 2 or len(offsets) - 1 < fit_every:
                raise ValueError(
                    f"fitting the rank exits needs fit_every >= 2 and at least {fit_every} "
                    f"calibration queries, got fit_every={fit_every} and {len(offsets) - 1}"
                )
            queries = np.arange(len(offsets) - 1)
            fit, test = queries[queries % fit_every == 0], queries[queries % fit_every != 0]
            fit_records, fit_offsets, fit_ranks, _ = _take(records, offsets, fit, ranks)
            weights = fit_rank_exits(fit_records, fit_offsets, k=k, ranks=fit_ranks)
            family = PolicyFamily("rank", family.min_layer, weights)
            records, offsets, ranks, relevance = _take(records, offsets, test, ranks, relevance)
            fit_queries = len(fit)
    grid = tuple(float(t) for t in (thresholds or family.default_thresholds()))
    if not grid:
        raise ValueError("no thresholds to test")
    if not family.is_ordered(grid):
        direction = "increasing" if family.increasing else "decreasing"
        raise ValueError(
            f"{family.measure} thresholds go from conservative to aggressive: strictly {direction}"
        )
    for t in grid:
        family.policy(t)  # validates the range
    if loss not in LOSSES:
        raise ValueError(f"loss is one of {LOSSES}, got {loss!r}")
    if offsets[0] != 0 or offsets[-1] != records.scores.shape[0] or np.any(np.diff(offsets) < 1):
        raise ValueError("offsets must run from 0 to the number of records, each query non-empty")
    depth = records.depth
    if family.min_layer > depth:
        raise ValueError(f"min_layer {family.min_layer} is deeper than level {records.level}")
    reference = records.scores[:, depth - 1]
    reference_flops = float(records.layer_cost.sum()) * depth
    columns, speedups, mean_layers = [], [], []
    for t in grid:
        exit_layers, scores = simulate(family.policy(t), records, ranks)
        columns.append(
            query_losses(scores, reference, offsets, k=k, loss=loss, relevance=relevance)
        )
        spent = float((exit_layers * records.layer_cost).sum())
        speedups.append(reference_flops / spent if spent else math.inf)
        mean_layers.append(float(exit_layers.mean()))
    risks, pvalues, chosen = learn_then_test(np.stack(columns, axis=1), delta, epsilon, bound)
    level = records.level
    policy: Policy = FixedLevel(level) if chosen is None else family.policy(grid[chosen])
    spent = reference_flops if chosen is None else reference_flops / speedups[chosen]
    return Calibration(
        family=family,
        level=level,
        delta=float(delta),
        epsilon=float(epsilon),
        bound=bound,
        loss=loss,
        k=int(k),
        thresholds=grid,
        risks=tuple(float(r) for r in risks),
        pvalues=tuple(float(p) for p in pvalues),
        speedups=tuple(speedups),
        mean_exit_layers=tuple(mean_layers),
        chosen=chosen,
        n_queries=len(offsets) - 1,
        n_pairs=int(offsets[-1]),
        full_speedup=float(records.full_cost.sum()) / spent,
        policy=policy,
        fit_queries=fit_queries,
    )


def _take(
    records: LayerRecords,
    offsets: np.ndarray,
    queries: np.ndarray,
    ranks: np.ndarray,
    relevance: Sequence[np.ndarray | None] | None = None,
) -> tuple[LayerRecords, np.ndarray, np.ndarray, list[np.ndarray | None] | None]:
    """The records, offsets, ranks and relevance of some queries only."""
    rows = np.concatenate([np.arange(offsets[q], offsets[q + 1]) for q in queries])
    sizes = [int(offsets[q + 1] - offsets[q]) for q in queries]

    def pick(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else array[rows]

    taken = dataclasses.replace(
        records,
        scores=records.scores[rows],
        saturation=records.saturation[rows],
        classifier=pick(records.classifier),
        layer_cost=records.layer_cost[rows],
        full_cost=records.full_cost[rows],
        states=pick(records.states),
    )
    kept = None if relevance is None else [relevance[q] for q in queries]
    return taken, np.cumsum([0, *sizes]), ranks[rows], kept


# --------------------------------------------------------------------------- held-out evaluation


@dataclass(frozen=True)
class PolicyEvaluation:
    """A policy measured on queries by really running it (early exit and all).

    ``risk`` is the mean of ``losses`` (one per query, as in calibration); ``speedup`` the
    FLOPs of ``level`` without exit over the policy's; ``full_speedup`` against the full model.
    """

    policy: Policy
    level: Level
    loss: str
    k: int
    losses: np.ndarray
    speedup: float
    full_speedup: float
    mean_exit_layer: float
    n_pairs: int

    @property
    def risk(self) -> float:
        return float(self.losses.mean())

    @property
    def n_queries(self) -> int:
        return len(self.losses)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.spec,
            "level": str(self.level),
            "loss": self.loss,
            "k": self.k,
            "risk": self.risk,
            "speedup": self.speedup,
            "full_speedup": self.full_speedup,
            "mean_exit_layer": self.mean_exit_layer,
            "n_queries": self.n_queries,
            "n_pairs": self.n_pairs,
        }


def evaluate_policy(
    ranker: ElasticRanker,
    policy: Policy | str,
    queries: Iterable[CalibrationQuery | Sequence[Any]],
    *,
    level: Level | str = FULL,
    loss: str = "consistency",
    k: int = 10,
    batch_size: int | None = None,
) -> PolicyEvaluation:
    """Run ``policy`` (at ``level``'s width, up to its depth) and ``level`` without early exit
    on ``queries`` and measure the per-query loss as :func:`calibrate` does -- on queries it
    did not see, this is the held-out check of the calibrated ``delta``. Each query's
    candidates are in first-stage order (what a rank policy reads as their ranks)."""
    policy = parse_policy(policy)
    level = ranker.check_level(level)
    data, texts, passages, offsets = _flatten(queries)
    relevance = [None if d.relevance is None else np.asarray(d.relevance) for d in data]
    reference = ranker.score_pairs(texts, passages, level=level, batch_size=batch_size)
    if isinstance(policy, FixedLevel):
        run = ranker.score_pairs(texts, passages, policy=policy, batch_size=batch_size)
    else:
        ranks = first_stage_ranks(offsets)
        run = ranker.score_pairs(
            texts, passages, level=level, policy=policy, batch_size=batch_size, ranks=ranks
        )
    losses = query_losses(
        run.scores, reference.scores, offsets, k=k, loss=loss, relevance=relevance
    )
    return PolicyEvaluation(
        policy=policy,
        level=level,
        loss=loss,
        k=int(k),
        losses=losses,
        speedup=float(reference.flops.sum()) / float(run.flops.sum()),
        full_speedup=run.speedup,
        mean_exit_layer=float(run.exit_layers.mean()),
        n_pairs=len(passages),
    )
