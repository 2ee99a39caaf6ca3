"""What decides an ElasticRanker training run: :class:`RankerTrainConfig`, and the sources."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from elasticir.compute.levels import Level
from elasticir.models.ranker import DEFAULT_GATE_INIT, HEADS
from elasticir.train.anchor import check_anchor_fields, drop_unused_anchor_fields
from elasticir.train.config import TrainConfigFile, check_int, check_levels, check_names

__all__ = [
    "DEFAULT_SOURCES",
    "JUDGED_FIELDS",
    "SOURCES",
    "WEIGHTINGS",
    "RankerTrainConfig",
]

# source name -> its files in <data_root>/train (:mod:`elasticir.train.ranker.sources`)
SOURCES: dict[str, tuple[str, ...]] = {
    "msmarco-triples": ("msmarco-triples-100.tsv",),
    "msmarco-teacher": (
        "msmarco-teacher-scored-a.jsonl",
        "msmarco-teacher-scored-b.jsonl",
        "msmarco-teacher-scored-c.jsonl",
    ),
    "nq-teacher": ("nq-train-teacher-scored.jsonl",),
    "wikiqa": ("wikiqa-train.tsv",),
    "trecqa": ("trecqa-train.jsonl",),
    "medquad": ("medquad-qa.jsonl.gz",),
}
DEFAULT_SOURCES = ("msmarco-triples", "msmarco-teacher", "nq-teacher", "wikiqa", "trecqa")
WEIGHTINGS = ("linear", "uniform")
JUDGED_FIELDS = (
    "judged",
    "judged_folds",
    "judged_fold",
    "judged_fold_seed",
    "judged_relevance",
    "judged_per_query",
)


@dataclass(frozen=True)
class RankerTrainConfig(TrainConfigFile):
    """Everything that decides a ranker training run; ``to_json`` / ``from_json`` round-trip.

    ``levels=None`` takes ``default_levels`` of the base model (widths 100, 75, 50 for
    MiniLM); ``batch_size`` counts groups, each of ``group_size`` pairs (one positive).
    ``max_groups_per_source`` caps each source's groups (a seeded sample; None = all).
    ``lr`` is the encoder's learning rate, ``head_lr`` the exit heads'. ``exit_holdout``
    queries are kept out of training to fit the exit classifier (0: no classifier).
    ``sandwich=False`` trains exactly the widths of ``levels`` each step (``full`` is always
    listed in the written model's levels, trained or not). The word embeddings (half of
    MiniLM's weights) and the unused pooler stay frozen unless ``train_word_embeddings``.
    ``head`` is ``"cls"`` (a [CLS] relevance head per layer) or ``"pooled"`` (the bi-encoder's
    own scoring, a cosine of mean-pooled query and passage states per layer, with the
    attention between the two segments gated per layer and head: it starts at ``gate_init``,
    nearly closed, so training starts from the bi-encoder's ranking; ``gate_lr`` is the
    gates' learning rate).
    """

    output: Path
    base_model: str | None = None
    data_root: Path | None = None
    sources: tuple[str, ...] = DEFAULT_SOURCES
    max_groups_per_source: int | None = None
    seed: int = 13
    steps: int = 2000
    batch_size: int = 16
    group_size: int = 8
    max_length: int = 256
    lr: float = 5e-5
    head_lr: float = 5e-4
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    levels: tuple[str, ...] | None = None
    sandwich: bool = True
    exit_weighting: str = "linear"
    grad_rescale: bool = True
    listwise_weight: float = 1.0
    teacher_weight: float = 1.0
    self_weight: float = 1.0
    pointwise_weight: float = 0.2
    teacher_temperature: float = 1.0
    importance_pairs: int = 512
    exit_holdout: int = 64
    classifier_steps: int = 300
    classifier_lr: float = 1e-2
    dropout: bool = False
    train_word_embeddings: bool = False
    head: str = "cls"
    gate_init: float = DEFAULT_GATE_INIT
    gate_lr: float = 0.05
    anchor_queries: int = 0
    anchor_corpus: str = "msmarco-dl19"
    anchor_depth: int = 32
    anchor_bm25_weight: float = 0.0
    judged: str | None = None
    judged_folds: int = 5
    judged_fold: int = 0
    judged_fold_seed: int = 0
    judged_relevance: int = 2
    judged_per_query: int = 32
    judged_negatives_depth: int | None = None
    init_from: Path | None = None
    cache: Path | None = None
    checkpoint_every: int = 100
    threads: int | None = None
    device: str | None = None

    # fields that do not change what is trained: they may differ between a run and its resume
    _RUN_ONLY_FIELDS: ClassVar[tuple[str, ...]] = (
        "output",
        "data_root",
        "cache",
        "checkpoint_every",
        "threads",
        "device",
    )

    def training_fields(self) -> dict[str, Any]:
        values = super().training_fields()
        if self.head == "cls":  # [CLS] runs keep the keys they had before the pooled head
            for name in ("head", "gate_init", "gate_lr"):
                values.pop(name)
        drop_unused_anchor_fields(self, values)  # as do runs without anchors
        if self.judged is None:  # and runs without judged folds
            for name in JUDGED_FIELDS:
                values.pop(name)
        if self.judged_negatives_depth is None:  # runs from before the option keep their keys
            values.pop("judged_negatives_depth")
        if self.init_from is None:
            values.pop("init_from")
        else:  # the starting weights are keyed by their fingerprint (in the data record)
            values["init_from"] = "ranker"
        return values

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        self._settle_paths("data_root", "cache", "init_from")
        if tuple(self.sources) == () and (self.judged is not None or self.anchor_queries):
            put("sources", ())  # judged folds and/or anchors only
        else:
            put("sources", check_names("sources", self.sources, tuple(SOURCES)))
        if self.judged is not None:
            if not isinstance(self.judged, str) or not self.judged:
                raise ValueError(f"judged names a dataset with qrels, got {self.judged!r}")
            check_int("judged_folds", self.judged_folds, 1)  # 1: all queries train
            check_int("judged_fold", self.judged_fold, 0)
            check_int("judged_fold_seed", self.judged_fold_seed, 0)
            check_int("judged_relevance", self.judged_relevance, 1)
            check_int("judged_per_query", self.judged_per_query)
            if self.judged_negatives_depth is not None:
                check_int("judged_negatives_depth", self.judged_negatives_depth)
            if self.judged_fold >= self.judged_folds:
                raise ValueError(
                    f"judged_fold is 0-based: in [0, {self.judged_folds}), got {self.judged_fold}"
                )
        elif self.judged_negatives_depth is not None:
            raise ValueError("judged_negatives_depth needs judged (a dataset with qrels)")
        if self.levels is not None:
            put("levels", check_levels(self.levels))
            mixed = [lv for lv in self.levels if Level(lv).width is None]
            if mixed:
                raise ValueError(
                    f"levels {', '.join(mixed)}: ElasticRanker cuts heads and FFN neurons "
                    "alike (an exit per layer at each width), so its levels are 'L<d>-W<w>'"
                )
        elif not self.sandwich:
            raise ValueError(
                "training without the sandwich rule needs the levels whose widths to train, "
                "e.g. levels=('full',)"
            )
        positive = (
            "steps",
            "batch_size",
            "checkpoint_every",
            "importance_pairs",
            "classifier_steps",
        )
        for name in positive:
            check_int(name, getattr(self, name))
        check_int("group_size", self.group_size, 2)
        check_int("max_length", self.max_length, 16)
        check_int("exit_holdout", self.exit_holdout, 0)
        check_anchor_fields(self)
        for name in ("max_groups_per_source", "threads"):
            check_int(name, getattr(self, name), optional=True)
        if self.head not in HEADS:
            raise ValueError(f"head is one of {HEADS}, got {self.head!r}")
        if not isinstance(self.gate_init, (int, float)) or not math.isfinite(self.gate_init):
            raise ValueError(f"gate_init must be a finite number, got {self.gate_init!r}")
        for name in ("lr", "head_lr", "gate_lr", "teacher_temperature", "classifier_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        weights = ("listwise_weight", "teacher_weight", "self_weight", "pointwise_weight")
        for name in (*weights, "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
                raise ValueError(f"{name} must not be negative, got {value!r}")
        if not any(getattr(self, name) > 0 for name in weights):
            raise ValueError("every loss weight is 0: nothing would be trained")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm!r}")
        if self.exit_weighting not in WEIGHTINGS:
            raise ValueError(f"exit_weighting is one of {WEIGHTINGS}, got {self.exit_weighting!r}")
