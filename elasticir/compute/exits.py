"""Exit policies: per-input compute choices of a multi-exit model (ElasticRanker).

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
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from elasticir.compute.levels import Level

__all__ = [
    "MEASURES",
    "PRUNE_GAP",
    "ConfidencePolicy",
    "CutoffPolicy",
    "EntropyPolicy",
    "ExitPolicy",
    "FixedLevel",
    "Policy",
    "RankPolicy",
    "Thresholds",
    "RankWeights",
    "binary_entropy",
    "check_cutoff",
    "check_min_layer",
    "check_rank_weights",
    "parse_policy",
    "skipped_scores",
]

MEASURES = ("margin", "saturation", "classifier")
PRUNE_GAP = 1000.0  # score gap per skipped layer below which a pruned candidate ranks
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


def check_min_layer(value: object) -> int:
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
        object.__setattr__(self, "min_layer", check_min_layer(self.min_layer))

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
        object.__setattr__(self, "min_layer", check_min_layer(self.min_layer))

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


def check_rank_weights(value: object) -> RankWeights:
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
        object.__setattr__(self, "weights", check_rank_weights(self.weights))
        object.__setattr__(self, "min_layer", check_min_layer(self.min_layer))

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


def check_cutoff(value: object) -> int:
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
        object.__setattr__(self, "cutoff", check_cutoff(self.cutoff))

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
        return CutoffPolicy(check_cutoff(numbers[0]))
    if name == "entropy":
        return EntropyPolicy(thresholds, min_layer)
    if name in MEASURES:
        return ConfidencePolicy(name, thresholds, min_layer)
    raise ValueError(f"not an exit policy: {spec!r}; unknown measure {name!r}")
