"""Training ElasticRanker: every exit, at every trained width, on labelled ranking groups.

**Data** (``<data_root>/train``; never the DL19 judgements nor the nq-open questions, except
the cross-validation folds of ``judged`` below, and any group of these files whose query text
equals an evaluation question is dropped all the same): each source
becomes *groups* of one query, one positive and its negatives, with teacher scores where the
source has them (the files are parsed by :mod:`elasticir.train.data`; the groups are built here).

=================== ============================================ =========================
source              file(s)                                      negatives / teacher
=================== ============================================ =========================
``msmarco-triples`` ``msmarco-triples-100.tsv``                  the triple's (merged per
                                                                 query and positive); no
``msmarco-teacher`` ``msmarco-teacher-scored-{a,b,c}.jsonl``     25-100 hard; yes (one
                                                                 scale per file)
``nq-teacher``      ``nq-train-teacher-scored.jsonl``            ~99; yes
``wikiqa``          ``wikiqa-train.tsv`` (CSV-quoted sentences)  the question's other
                                                                 sentences; no
``trecqa``          ``trecqa-train.jsonl``                       the question's label-0
                                                                 sentences; no
``medquad``         ``medquad-qa.jsonl.gz`` (optional, weak)     none; no
=================== ============================================ =========================

With ``judged`` set (a dataset with qrels, e.g. ``msmarco-dl19``), :mod:`elasticir.train.judged`
adds that benchmark's own judgements for cross-validation: the queries are split into
``judged_folds`` folds, every fold but ``judged_fold`` gives labelled groups (source ``judged``;
the grades are the teacher scores), and the model records the training and held-out query ids,
so it is only ever evaluated on its held-out fold (``benchmarks/rerank_cv.py``). With
``init_from`` a trained ranker is fine-tuned instead of starting from the base encoder; an
empty ``sources`` list trains on the judged and/or anchor groups alone.

With ``anchor_queries > 0``, :mod:`elasticir.train.anchor` adds that many *unlabelled* groups
(source ``msmarco-dev-anchor``): MS MARCO dev queries over ``anchor_corpus``'s passages, the
base bi-encoder's top ``anchor_depth`` with its cosines as teacher scores. They enter only the
teacher term (their first passage is not a judged positive), and keep a ranker that starts as
the bi-encoder (``head="pooled"``) near it where the labelled sources say nothing. With
``anchor_bm25_weight > 0`` their passages and teacher scores come from the min-max fusion of
BM25 and the bi-encoder instead (a fused first stage), so the ranker is also taught lexical
evidence.

Every step draws ``batch_size`` groups (seeded per-epoch shuffles) and, for each, the positive
and ``group_size - 1`` negatives (seeded per step); a group with too few negatives of its own is
filled with random passages of the same source, and then has no teacher term.

**Loss**, for every exit ``i`` of ``L`` (weights ``w_i``: ``i`` normalised to sum 1 by
default, or uniform), summed over the widths of the step::

    w_i * ( listwise_weight * CE(softmax over the group of s_i, positive)     [labelled]
          + teacher_weight  * KL(softmax(z(teacher) / teacher_temperature) || softmax(s_i))
          + self_weight     * KL(softmax(s_L at full width, detached) || softmax(s_i))
          + pointwise_weight * BCE(sigmoid(s_i), positive = 1, negatives = 0) )  [labelled]

``z(teacher)`` standardises a group's teacher scores (the sources' scales differ by 100x); the
self-distillation term skips the full width's own deepest exit; the small pointwise term pins
the scores' offset, which the listwise terms leave free, so ``sigmoid(score)`` is a relevance
probability (what the entropy and margin exit policies read). With ``grad_rescale`` (COST-EFF's
gradient equilibrium, :meth:`elasticir.rerank.ranker.RankerNet.exit_outputs`) the trunk below
layer ``i`` gets the *mean* of the ``L - i`` exit gradients above it instead of their sum.

**Widths**: the sandwich rule over the menu's widths -- full width (first: its deepest exit is
the self-distillation target), the smallest, and one random other (seeded per step);
``sandwich=False`` trains exactly the widths of ``levels`` every step.

The model starts from the base encoder with heads and FFN neurons ranked by importance on
training pairs and reordered (so each width is a prefix), exit heads initialised from its
pooler. After the last step, the **CALM exit classifier** is fitted on ``exit_holdout`` held-out
training queries (never trained on): for each layer, at every trained width, the target is
whether the candidate's layer-``i`` score sits in the same place among its group's deepest-exit
scores as its own deepest-exit score (no pair of the group changes order).

Seeded and resumable like ``elasticir train denser``: ``<output>/checkpoint/state.pt`` every
``checkpoint_every`` steps; rerunning the same config resumes and ends with the weights an
uninterrupted run ends with (same device and thread count).

**WiSE-FT** (:func:`interpolate_ranker`, ``elasticir train interpolate``): after training, the
weights can be mixed with the run's start net, ``(1 - alpha) * start + alpha * trained``, at no
extra cost per pair. With few labels this keeps part of what the start knew (for the pooled
head, the bi-encoder's ranking); the start is rebuilt from the run's own record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from elasticir.data.errors import InputFormatError
from elasticir.encoders.elastic import (
    Importance,
    compute_importance,
    default_levels,
    level_menu,
    reorder_,
)
from elasticir.encoders.levels import Level
from elasticir.encoders.loading import quiet_loading, resolve_model_path
from elasticir.rerank.ranker import (
    DEFAULT_GATE_INIT,
    HEADS,
    RankerNet,
    _pad,
    encode_pairs,
    write_ranker,
)
from elasticir.train.anchor import check_anchor_fields, drop_unused_anchor_fields
from elasticir.train.config import TrainConfigFile, check_int, check_levels, check_names
from elasticir.train.data import (
    LabelledSentence,
    read_medquad,
    read_scored,
    read_trecqa,
    read_triples,
    read_wikiqa,
)
from elasticir.train.denser import (
    _check_output,
    _Checkpoint,
    _device,
    _finished_key,
    _optimizer_step,
    _schedule,
    _shuffled_rows,
    _threads,
    _training_bar,
)

__all__ = [
    "DEFAULT_SOURCES",
    "SOURCES",
    "ExitLoss",
    "GroupBatch",
    "RankerTrainConfig",
    "RankingGroup",
    "TrainingGroups",
    "exit_agreement",
    "fit_exit_classifier",
    "group_losses",
    "initial_net",
    "interpolate_ranker",
    "load_groups",
    "read_source",
    "train_ranker",
]

CHECKPOINT_FORMAT = "elasticir-train-ranker-checkpoint"
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
LOSS_NAMES = ("listwise", "teacher", "self_distill", "pointwise", "total")


# --------------------------------------------------------------------------- configuration


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
            check_int("judged_folds", self.judged_folds, 2)
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


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class RankingGroup:
    """One query, one positive, its own negatives, and teacher scores when the source has
    them (``teacher[0]`` the positive's, then one per negative). An unlabelled group (the
    anchor groups of :mod:`elasticir.train.anchor`) enters only the teacher term."""

    source: str
    query: str
    positive: str
    negatives: tuple[str, ...]
    teacher: tuple[float, ...] | None = None
    labelled: bool = True  # False: ``positive`` is only the teacher's top passage


def read_source(path: Path) -> list[RankingGroup]:
    """The groups of one training file (format by name; see the module docstring)."""
    name = path.name
    if name.startswith("msmarco-triples"):
        return _read_triples(path)
    if name.startswith(("msmarco-teacher-scored", "nq-train-teacher-scored")):
        return _read_scored(path)
    if name.startswith("wikiqa"):
        return _read_labelled(path, read_wikiqa(path))
    if name.startswith("trecqa"):
        return _read_labelled(path, read_trecqa(path))
    if name.startswith("medquad"):
        return _read_medquad(path)
    raise ValueError(f"{path}: not a known training file")


def _clean(text: str) -> str:
    return " ".join(text.split())


def _read_triples(path: Path) -> list[RankingGroup]:
    merged: dict[tuple[str, str], list[str]] = {}
    for triple in read_triples(path):
        query, positive, negative = (
            _clean(t) for t in (triple.query, triple.positive, triple.negative)
        )
        negatives = merged.setdefault((query, positive), [])
        if negative not in negatives:
            negatives.append(negative)
    return [RankingGroup(path.name, q, p, tuple(n)) for (q, p), n in merged.items()]


def _read_scored(path: Path) -> list[RankingGroup]:
    """One group per positive, with all the line's negatives; every line needs teacher scores."""
    groups = []
    for record in read_scored(path):
        if record.scores is None:
            raise InputFormatError(
                path,
                record.line,
                'teacher scores ("pos_scores" + "neg_scores" or "teacher_scores")',
            )
        query = _clean(record.query)
        negatives = tuple(_clean(n) for n in record.negatives)
        neg_scores = record.scores[len(record.positives) :]
        for positive, score in zip(record.positives, record.scores):
            groups.append(
                RankingGroup(path.name, query, _clean(positive), negatives, (score, *neg_scores))
            )
    return groups


def _read_labelled(path: Path, rows: Iterable[LabelledSentence]) -> list[RankingGroup]:
    """Question-sentence pairs with 0/1 labels: one group per positive, the question's label-0
    sentences as its negatives."""
    questions: dict[str, tuple[list[str], list[str]]] = {}
    for row in rows:
        positives, negatives = questions.setdefault(_clean(row.question), ([], []))
        text = _clean(row.sentence)
        if text:
            (positives if row.label > 0 else negatives).append(text)
    return [
        RankingGroup(path.name, question, positive, tuple(dict.fromkeys(negatives)))
        for question, (positives, negatives) in questions.items()
        for positive in dict.fromkeys(positives)
    ]


def _read_medquad(path: Path) -> list[RankingGroup]:
    groups = []
    for pair in read_medquad(path):
        if _clean(pair.answer):
            groups.append(
                RankingGroup(path.name, _clean(pair.question), _clean(pair.answer)[:2000], ())
            )
    return groups


@dataclass
class GroupBatch:
    """One step's groups as ``size`` x ``group`` pairs (positive first in each group)."""

    queries: list[str]
    passages: list[str]
    teacher: torch.Tensor  # (size, group) standardised teacher scores (0 where absent)
    has_teacher: torch.Tensor  # (size,) bool
    labelled: torch.Tensor  # (size,) bool: the first passage is a judged positive
    size: int
    group: int


@dataclass
class TrainingGroups:
    """The training groups of a config, the held-out ones, and what was read."""

    config: RankerTrainConfig
    train: list[RankingGroup]
    holdout: list[RankingGroup]
    pools: dict[str, tuple[str, ...]]  # file -> every passage of that file (filler negatives)
    data: dict[str, Any]
    key: str
    _orders: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict, repr=False)

    def rows(self, step: int) -> np.ndarray:
        """Group rows of 1-based ``step``: consecutive slices of seeded per-epoch shuffles."""
        config = self.config
        return _shuffled_rows(
            len(self.train), config.batch_size, step, (config.seed, 101), self._orders
        )

    def batch(self, step: int) -> GroupBatch:
        """Step ``step``'s groups, negatives sampled with a generator seeded by the step."""
        rng = np.random.default_rng([self.config.seed, 307, step])
        return self.make_batch([self.train[int(r)] for r in self.rows(step)], rng)

    def make_batch(self, groups: Sequence[RankingGroup], rng: np.random.Generator) -> GroupBatch:
        g = self.config.group_size
        queries, passages, teachers, has, labelled = [], [], [], [], []
        for group in groups:
            own = len(group.negatives)
            if own >= g - 1:
                picked = rng.choice(own, size=g - 1, replace=False)
                negatives = [group.negatives[int(i)] for i in picked]
                if group.teacher is not None:
                    scores = np.array(
                        [group.teacher[0], *(group.teacher[1 + int(i)] for i in picked)]
                    )
                    teachers.append((scores - scores.mean()) / (scores.std() + 1e-6))
                    has.append(True)
                else:
                    teachers.append(np.zeros(g))
                    has.append(False)
            else:
                negatives = list(group.negatives) + self._fillers(group, g - 1 - own, rng)
                teachers.append(np.zeros(g))
                has.append(False)
            queries.extend([group.query] * g)
            passages.extend([group.positive, *negatives])
            labelled.append(group.labelled)
        teacher = torch.tensor(np.stack(teachers), dtype=torch.float32)
        return GroupBatch(
            queries,
            passages,
            teacher,
            torch.tensor(has),
            torch.tensor(labelled),
            size=len(groups),
            group=g,
        )

    def _fillers(self, group: RankingGroup, count: int, rng: np.random.Generator) -> list[str]:
        pool = self.pools[group.source]
        taken = {group.positive, *group.negatives}
        out: list[str] = []
        for _ in range(count * 20):
            if len(out) == count:
                break
            text = pool[int(rng.integers(len(pool)))]
            if text not in taken:
                taken.add(text)
                out.append(text)
        while len(out) < count:  # a source with almost no passages: repeat rather than fail
            out.append(pool[int(rng.integers(len(pool)))])
        return out


def load_groups(config: RankerTrainConfig, progress: bool = False) -> TrainingGroups:
    """Read the configured sources, drop evaluation overlaps, cap, add the anchor groups
    (``anchor_queries``; mining them may encode the anchor corpus once, into ``cache``), and
    hold out the exit classifier's queries (a seeded choice of whole queries)."""
    from elasticir.data.datasets import data_root as find_data_root
    from elasticir.train.data import evaluation_questions

    root = Path(config.data_root if config.data_root is not None else find_data_root()).resolve()
    banned = evaluation_questions(root)  # lower-cased, whitespace-normalised
    groups: list[RankingGroup] = []
    pools: dict[str, tuple[str, ...]] = {}
    counts: dict[str, dict[str, int]] = {}
    for source in config.sources:
        for name in SOURCES[source]:
            path = root / "train" / name
            if not path.is_file():
                raise FileNotFoundError(f"training source {source}: {path} not found")
            found = read_source(path)
            kept = [g for g in found if g.query.lower() not in banned]
            excluded = len(found) - len(kept)
            cap = config.max_groups_per_source
            if cap is not None and len(kept) > cap:
                rng = np.random.default_rng([config.seed, 17, _stable_hash(name)])
                kept = [kept[int(i)] for i in np.sort(rng.choice(len(kept), cap, replace=False))]
            pools[name] = tuple(dict.fromkeys(p for g in found for p in (g.positive, *g.negatives)))
            counts[name] = {
                "groups": len(kept),
                "pairs_available": sum(1 + len(g.negatives) for g in kept),
                "with_teacher": sum(g.teacher is not None for g in kept),
                "excluded_eval_overlap": excluded,
            }
            groups.extend(kept)
    anchor = None
    if config.anchor_queries:
        from elasticir.train.anchor import ANCHOR_SOURCE, anchor_data, anchor_groups

        spec = anchor_data(config, root, config.cache)
        mined, anchor = anchor_groups(spec, banned, progress=progress, threads=config.threads)
        counts[ANCHOR_SOURCE] = _added_counts(mined)
        groups.extend(mined)
    judged = None
    if config.judged is not None:
        from elasticir.train.judged import JUDGED_SOURCE, JudgedData, judged_groups

        judged_spec = JudgedData(
            dataset=config.judged,
            folds=config.judged_folds,
            fold=config.judged_fold,
            fold_seed=config.judged_fold_seed,
            relevance=config.judged_relevance,
            per_query=config.judged_per_query,
            seed=config.seed,
            data_root=root,
            negatives_depth=config.judged_negatives_depth,
            min_negatives=config.group_size - 1,
            base_model=config.base_model,
            cache=config.cache,
        )
        # deliberately not filtered by ``banned``: these are the benchmark's own queries, and
        # only the training folds' (the held-out fold is recorded and never read)
        found, judged = judged_groups(judged_spec, progress=progress)
        counts[JUDGED_SOURCE] = _added_counts(found)
        groups.extend(found)
    if not groups:
        raise ValueError("no training groups found in the configured sources")
    queries = sorted({g.query for g in groups})
    rng = np.random.default_rng([config.seed, 401])
    holdout_queries = set()
    if config.exit_holdout:
        if config.exit_holdout >= len(queries):
            raise ValueError(
                f"exit_holdout={config.exit_holdout} queries, but only {len(queries)} training "
                "queries exist"
            )
        picked = rng.choice(len(queries), size=config.exit_holdout, replace=False)
        holdout_queries = {queries[int(i)] for i in picked}
    train = [g for g in groups if g.query not in holdout_queries]
    holdout = [g for g in groups if g.query in holdout_queries]
    for name in counts:
        counts[name]["held_out_groups"] = sum(g.source == name for g in holdout)
    digest = hashlib.sha256()
    for g in groups:  # a labelled group hashes as it did before groups had the flag
        fields = dataclasses.astuple(g)
        digest.update(json.dumps(fields[:-1] if g.labelled else fields).encode())
    data_digest = digest.hexdigest()[:16]
    data = {
        "root": str(root),
        "sources": counts,
        "groups": len(train),
        "held_out_groups": len(holdout),
        "held_out_queries": len(holdout_queries),
        "digest": data_digest,
    }
    if anchor is not None:
        data["anchor"] = anchor
    if judged is not None:
        data["judged"] = judged
    if config.init_from is not None:
        data["init_from"] = _init_record(config)
    key = _digest({"data": data_digest, "config": config.training_fields()})
    return TrainingGroups(config, train, holdout, pools, data, key)


def _added_counts(groups: list[RankingGroup]) -> dict[str, int]:
    """The data record's counts for groups that carry teacher scores and are never filtered
    by the evaluation-question ban (anchor and judged groups)."""
    return {
        "groups": len(groups),
        "pairs_available": sum(1 + len(g.negatives) for g in groups),
        "with_teacher": len(groups),
        "excluded_eval_overlap": 0,
    }


def _init_record(config: RankerTrainConfig) -> dict[str, Any]:
    """What a fine-tuning run starts from: the ranker's path and weight fingerprint (checked
    here, before any training data is mined, to have the config's head kind)."""
    from elasticir.rerank.ranker import ElasticRanker

    ranker = ElasticRanker(config.init_from, device="cpu")
    if ranker.net.head != config.head:
        raise ValueError(
            f"init_from={config.init_from} has a {ranker.net.head!r} head, but the config "
            f"says head={config.head!r}"
        )
    return {"path": str(Path(config.init_from).resolve()), "fingerprint": ranker.fingerprint}


def _start_net(
    config: RankerTrainConfig, groups: TrainingGroups, device: torch.device | str
) -> tuple[RankerNet, Any, Importance | None, tuple[Level, ...] | None]:
    """The net training starts from: :func:`initial_net`, or with ``init_from`` a trained
    ranker's (its neurons already ordered, its exit heads and levels kept)."""
    if config.init_from is None:
        net, tokenizer, importance = initial_net(config, groups, device)
        return net, tokenizer, importance, None
    from elasticir.rerank.ranker import ElasticRanker

    ranker = ElasticRanker(config.init_from, device=str(device))
    if ranker.fingerprint != groups.data["init_from"]["fingerprint"]:
        raise ValueError(f"{config.init_from} changed while this run was being set up")
    return ranker.net, ranker.tokenizer, None, tuple(ranker.levels)


def _stable_hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- model


class _PairTokenizer:
    """Lets ``compute_importance`` (which tokenizes single texts) score query-passage pairs:
    called with ``(query, passage)`` tuples, it returns the ranker's pair encoding."""

    def __init__(self, tokenizer: Any, types: bool) -> None:
        self.tokenizer, self.types = tokenizer, types

    def __call__(self, pairs: Sequence[tuple[str, str]], *, max_length: int, **_: Any) -> Any:
        from transformers import BatchEncoding

        ids, types = encode_pairs(
            self.tokenizer, [q for q, _ in pairs], [p for _, p in pairs], max_length, self.types
        )
        input_ids, token_types, mask = _pad(
            ids, types, np.arange(len(ids)), self.tokenizer.pad_token_id or 0, "cpu"
        )
        return BatchEncoding(
            {"input_ids": input_ids, "token_type_ids": token_types, "attention_mask": mask}
        )


def initial_net(
    config: RankerTrainConfig, groups: TrainingGroups, device: torch.device | str = "cpu"
) -> tuple[RankerNet, Any, Importance]:
    """The base encoder with heads and neurons reordered by importance on ``importance_pairs``
    training pairs (a seeded choice of query-positive and query-negative pairs), and exit
    heads initialised from its pooler. Deterministic for a config."""
    from transformers import AutoModel, AutoTokenizer

    source = resolve_model_path(config.base_model)
    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(source)
        encoder = AutoModel.from_pretrained(source)
    net = RankerNet(encoder, head=config.head, gate_init=config.gate_init).to(device).eval()
    rng = np.random.default_rng([config.seed, 3])
    picked = rng.permutation(len(groups.train))[: config.importance_pairs]
    pairs: list[tuple[str, str]] = []
    for i, row in enumerate(picked):
        group = groups.train[int(row)]
        use_negative = i % 2 == 1 and group.negatives
        pairs.append((group.query, group.negatives[0] if use_negative else group.positive))
    types = int(getattr(encoder.config, "type_vocab_size", 1) or 1) > 1
    importance = compute_importance(
        net.encoder, _PairTokenizer(tokenizer, types), pairs, max_length=config.max_length
    )
    importance = reorder_(net.encoder, importance)
    net.init_exits_(source, seed=config.seed)
    return net, tokenizer, importance


# --------------------------------------------------------------------------- losses


@dataclass(frozen=True)
class ExitLoss:
    """One width's loss on one batch: weighted sums over the exits, and ``per_exit`` totals."""

    listwise: torch.Tensor
    teacher: torch.Tensor
    self_distill: torch.Tensor
    pointwise: torch.Tensor
    total: torch.Tensor
    per_exit: torch.Tensor  # (layers,) unweighted total of each exit
    deepest_scores: torch.Tensor  # (size, group) the deepest exit's scores (graph kept)

    def values(self) -> dict[str, float]:
        out = {name: float(getattr(self, name).item()) for name in LOSS_NAMES}
        out["deepest_exit"] = float(self.per_exit[-1].item())
        return out


def exit_weights(layers: int, weighting: str) -> torch.Tensor:
    """Per-exit weights summing to 1: proportional to the layer number, or uniform."""
    if weighting == "uniform":
        weights = torch.ones(layers)
    else:
        weights = torch.arange(1, layers + 1, dtype=torch.float32)
    return weights / weights.sum()


def batch_tensors(
    batch: GroupBatch, tokenizer: Any, config: RankerTrainConfig, device: Any, types: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pooled = config.head == "pooled"
    ids, token_types = encode_pairs(
        tokenizer, batch.queries, batch.passages, config.max_length, types, pooled
    )
    return _pad(ids, token_types, np.arange(len(ids)), tokenizer.pad_token_id or 0, device)


def group_losses(
    net: RankerNet,
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    batch: GroupBatch,
    width: int,
    config: RankerTrainConfig,
    reference: torch.Tensor | None = None,
) -> ExitLoss:
    """Every exit's loss at ``width`` (see the module docstring); ``reference`` is the full
    width's deepest-exit scores ``(size, group)`` (detached here); None at full width, where
    this call's own deepest exit is the reference."""
    input_ids, token_types, mask = tensors
    layers = net.num_layers
    level = Level(depth=layers, width=width)
    scores, _ = net.exit_outputs(
        input_ids, token_types, mask, level, grad_rescale=config.grad_rescale
    )
    scores = scores.float().view(batch.size, batch.group, layers)  # (B, G, L)
    log_p = F.log_softmax(scores, dim=1)
    device = scores.device
    labels = torch.zeros(batch.size, batch.group, layers, device=device)
    labels[:, 0, :] = 1.0
    bce = F.binary_cross_entropy_with_logits(scores, labels, reduction="none").mean(1)  # (B, L)
    judged = batch.labelled.to(device)
    listwise = _group_mean(-log_p[:, 0, :], judged)  # (L,)
    pointwise = _group_mean(bce, judged)
    target = F.log_softmax(batch.teacher.to(device) / config.teacher_temperature, dim=1)
    kl = (target.exp()[..., None] * (target[..., None] - log_p)).sum(1)  # (B, L)
    teacher = _group_mean(kl, batch.has_teacher.to(device))
    own_reference = reference is None
    ref = (scores[:, :, -1] if own_reference else reference).detach()
    ref_log = F.log_softmax(ref, dim=1)
    self_kl = (ref_log.exp()[..., None] * (ref_log[..., None] - log_p)).sum(1).mean(0)  # (L,)
    if own_reference:
        self_kl = torch.cat([self_kl[:-1], torch.zeros(1, device=device)])
    per_exit = (
        config.listwise_weight * listwise
        + config.teacher_weight * teacher
        + config.self_weight * self_kl
        + config.pointwise_weight * pointwise
    )
    w = exit_weights(layers, config.exit_weighting).to(device)
    return ExitLoss(
        listwise=(w * listwise).sum(),
        teacher=(w * teacher).sum(),
        self_distill=(w * self_kl).sum(),
        pointwise=(w * pointwise).sum(),
        total=(w * per_exit).sum(),
        per_exit=per_exit.detach(),
        deepest_scores=scores[:, :, -1],
    )


def _group_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` ``(B, L)`` over the groups where ``keep`` ``(B,)`` is set; 0 where
    none is."""
    return (values * keep[:, None]).sum(0) / keep.sum().clamp(min=1)


# --------------------------------------------------------------------------- the exit classifier


def exit_agreement(scores: torch.Tensor) -> torch.Tensor:
    """Targets of the exit classifier from ``scores`` ``(size, group, layers)``: ``[b, c, i]``
    is 1 when candidate ``c``'s layer-``i`` score sits where its deepest score does among the
    group's other deepest scores (no pair changes order), else 0."""
    deepest = scores[:, :, -1]  # (B, G)
    others = deepest[:, None, :, None]  # (B, 1, G', 1)
    mine = deepest[:, :, None, None]  # (B, G, 1, 1)
    layer = scores[:, :, None, :]  # (B, G, 1, L)
    same_side = (layer > others) == (mine > others)  # (B, G, G', L)
    group = scores.shape[1]
    eye = torch.eye(group, dtype=torch.bool, device=scores.device)[None, :, :, None]
    return (same_side | eye).all(dim=2).float()


def fit_exit_classifier(
    net: RankerNet,
    tokenizer: Any,
    groups: TrainingGroups,
    widths: Sequence[int],
    config: RankerTrainConfig,
    device: Any,
) -> dict[str, Any]:
    """Fit ``net.classifier`` on the held-out groups (trunk and heads frozen): features and
    targets from every exit at every width, full-batch Adam with BCE for
    ``classifier_steps`` steps. Returns per-layer statistics for the model card."""
    holdout = groups.holdout
    rng = np.random.default_rng([config.seed, 503])
    batch = groups.make_batch(holdout, rng)
    types = int(getattr(net.config, "type_vocab_size", 1) or 1) > 1
    layers = net.num_layers
    features: list[list[torch.Tensor]] = [[] for _ in range(layers)]
    targets: list[list[torch.Tensor]] = [[] for _ in range(layers)]
    net.eval()
    chunk = max(1, config.batch_size)
    with torch.no_grad():
        for width in widths:
            level = Level(depth=layers, width=width)
            for start in range(0, batch.size, chunk):
                size = min(chunk, batch.size - start)
                g = batch.group
                part = GroupBatch(
                    batch.queries[start * g : (start + size) * g],
                    batch.passages[start * g : (start + size) * g],
                    batch.teacher[start : start + size],
                    batch.has_teacher[start : start + size],
                    batch.labelled[start : start + size],
                    size,
                    g,
                )
                input_ids, token_types, mask = batch_tensors(part, tokenizer, config, device, types)
                scores, states = net.exit_outputs(input_ids, token_types, mask, level)
                agree = exit_agreement(scores.float().view(size, g, layers)).view(-1, layers)
                for i in range(layers):
                    features[i].append(net.classifier.features(states[i + 1], scores[:, i]).float())
                    targets[i].append(agree[:, i])
    stats: dict[str, Any] = {"examples_per_layer": 0, "layers": []}
    for i in range(layers):  # full-batch Adam from the seeded init: deterministic
        x, y = torch.cat(features[i]), torch.cat(targets[i])
        linear = net.classifier.linear[i]
        linear.requires_grad_(True)
        optimizer = torch.optim.Adam(linear.parameters(), lr=config.classifier_lr)
        for _ in range(config.classifier_steps):
            optimizer.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(linear(x).squeeze(-1), y)
            loss.backward()
            optimizer.step()
        linear.requires_grad_(False)
        with torch.no_grad():
            predicted = linear(x).squeeze(-1) > 0
            accuracy = float((predicted == (y > 0.5)).float().mean())
        stats["examples_per_layer"] = len(y)
        stats["layers"].append(
            {
                "layer": i + 1,
                "agree_rate": round(float(y.mean()), 4),
                "accuracy": round(accuracy, 4),
                "bce": round(float(loss.item()), 4),
            }
        )
    stats["groups"] = batch.size
    stats["widths"] = list(widths)
    return stats


# --------------------------------------------------------------------------- training


def train_ranker(
    config: RankerTrainConfig,
    progress: bool = True,
    on_step: Callable[[int, dict[str, dict[str, float]]], None] | None = None,
) -> Path:
    """Train the ElasticRanker of ``config``; returns the model directory.

    Resumable: rerunning the same config continues from ``<output>/checkpoint/state.pt``, and
    returns at once when ``<output>`` already holds the finished model. ``on_step(step,
    losses)`` is called after each optimizer step with ``{"W<width>": {loss name: value}}``
    (an exception from it stops the run like a kill would).
    """
    output = config.output
    _check_output(config)
    with _threads(config.threads):
        groups = load_groups(config, progress=progress)
        finished = _finished_key(output)
        if finished == groups.key:
            return output
        if finished is not None:
            raise ValueError(
                f"{output} already holds a model trained with other settings; use another "
                "output directory (or delete that one)"
            )
        return _train(config, groups, progress, on_step)


def width_plan(config: RankerTrainConfig, widths: Sequence[int]) -> Callable[[int], list[int]]:
    """The widths trained at each step, full width first: the sandwich (full, smallest, one
    random other), or every width of ``levels`` without it."""
    widths = sorted(set(widths), reverse=True)
    if not config.sandwich:
        return lambda step: list(widths)
    smallest, middle = widths[-1], widths[1:-1]

    def sandwich(step: int) -> list[int]:
        plan = [100] if len(widths) == 1 else [100, smallest]
        if middle:
            rng = np.random.default_rng([config.seed, 211, step])
            plan.insert(1, middle[int(rng.integers(len(middle)))])
        return plan

    return sandwich


def _optimizer(net: RankerNet, config: RankerTrainConfig) -> torch.optim.Optimizer:
    for name, parameter in net.named_parameters():
        frozen = (
            name.startswith("classifier.")
            or name.startswith("encoder.pooler.")
            or ("word_embeddings" in name and not config.train_word_embeddings)
        )
        parameter.requires_grad_(not frozen)
    decay, no_decay, heads, gates = [], [], [], []
    for name, parameter in net.named_parameters():
        if not parameter.requires_grad:
            continue
        if name == "gates":
            gates.append(parameter)
        elif name.startswith("heads."):
            heads.append(parameter)
        elif name.endswith("bias") or "LayerNorm" in name:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay, "lr": config.lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": config.lr},
        {"params": heads, "weight_decay": 0.0, "lr": config.head_lr},
    ]
    if gates:
        groups.append({"params": gates, "weight_decay": 0.0, "lr": config.gate_lr})
    return torch.optim.AdamW(groups, lr=config.lr, foreach=True)


def _train(
    config: RankerTrainConfig,
    groups: TrainingGroups,
    progress: bool,
    on_step: Callable[[int, dict[str, dict[str, float]]], None] | None,
) -> Path:
    device = _device(config)
    net, tokenizer, importance, start_levels = _start_net(config, groups, device)
    menu = level_menu(net.config, config.levels) if config.levels is not None else None
    ranker_levels = menu if menu is not None else start_levels or default_levels(net.config)
    widths = sorted({lv.width for lv in ranker_levels} | {100}, reverse=True)
    if not config.sandwich:
        widths = sorted({Level(lv).width for lv in config.levels or ()}, reverse=True)
    types = int(getattr(net.config, "type_vocab_size", 1) or 1) > 1
    net.train(config.dropout)
    optimizer = _optimizer(net, config)
    parameters = [p for p in net.parameters() if p.requires_grad]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config.steps, config.warmup))
    checkpoint = _Checkpoint(
        config.output / "checkpoint" / "state.pt", CHECKPOINT_FORMAT, groups.key, config
    )
    step, seconds, history = checkpoint.resume(net, optimizer, scheduler)
    plan = width_plan(config, widths)
    with _training_bar(progress, config.steps, step) as show:
        while step < config.steps:
            started = time.perf_counter()
            step += 1
            batch = groups.batch(step)
            tensors = batch_tensors(batch, tokenizer, config, device, types)
            optimizer.zero_grad(set_to_none=True)
            record: dict[str, dict[str, float]] = {}
            reference = None
            for width in plan(step):
                loss = group_losses(net, tensors, batch, width, config, reference)
                loss.total.backward()
                if width == 100:
                    reference = loss.deepest_scores.detach()
                record[f"W{width}"] = loss.values()
            lr = _optimizer_step(optimizer, scheduler, parameters, config.max_grad_norm)
            seconds += time.perf_counter() - started
            history.append({"step": step, "lr": lr, "losses": record})
            show(step, record)
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint.save(net, optimizer, scheduler, step, seconds, history)
            if on_step is not None:
                on_step(step, record)
    classifier_stats = None
    if config.exit_holdout and groups.holdout:
        classifier_stats = fit_exit_classifier(net, tokenizer, groups, widths, config, device)
    net.eval()
    training = {
        "method": "sandwich" if config.sandwich else "fixed widths",
        "widths": widths,
        "key": groups.key,
        "config": config.to_dict(),
        "data": groups.data,
        "steps": config.steps,
        "seed": config.seed,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, len(history)), 3),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "importance_pairs": importance.num_texts if importance is not None else None,
        "importance_tokens": importance.num_tokens if importance is not None else None,
        "final_losses": _final_losses(history, config.steps),
        "exit_classifier": classifier_stats,
    }
    write_ranker(
        config.output,
        net,
        tokenizer,
        levels=ranker_levels,
        max_length=config.max_length,
        classifier=classifier_stats is not None,
        training=training,
        source_model=config.base_model_name(),
        extra_files={"training-log.jsonl": "".join(json.dumps(e) + "\n" for e in history)},
    )
    shutil.rmtree(checkpoint.path.parent, ignore_errors=True)
    return config.output


def _final_losses(history: list[dict[str, Any]], steps: int) -> dict[str, dict[str, float]]:
    """Per width, the mean of its last ``max(1, steps // 10)`` recorded losses."""
    window = max(1, steps // 10)
    seen: dict[str, list[dict[str, float]]] = {}
    for entry in history:
        for width, values in entry["losses"].items():
            seen.setdefault(width, []).append(values)
    return {
        width: {name: float(np.mean([v[name] for v in values[-window:]])) for name in values[-1]}
        for width, values in seen.items()
    }


# --------------------------------------------------------------------------- interpolation

INTERPOLATION_FORMAT = "wise-ft"


def interpolate_ranker(
    model: str | Path,
    alpha: float,
    output: str | Path,
    *,
    data_root: str | Path | None = None,
    cache: str | Path | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> Path:
    """Weight-space ensemble of a trained ranker with the net its run started from (WiSE-FT,
    Wortsman et al. 2022): every trunk, exit-head and gate weight becomes
    ``(1 - alpha) * start + alpha * trained``; ``alpha=1`` is the trained ranker, ``alpha=0``
    its start (for the pooled head from the base model: the bi-encoder's ranking).

    The start is rebuilt from the run's recorded config: its training groups are loaded again
    (they decide the importance order of heads and neurons) and must hash to the run's key, so
    the two nets are aligned weight for weight. The exit classifier, fitted to the trained
    exits, is refitted on the run's held-out groups from the start's seeded init. The output
    is an ordinary ranker directory whose ``training`` record is the run's, plus an
    ``interpolation`` entry (alpha, the trained ranker's path and fingerprint); a ranker
    trained by cross-validation keeps its held-out queries, so ``benchmarks/rerank_cv.py``
    accepts it. Returns at once when ``output`` already holds this very interpolation, and
    refuses an output that holds any other model (the trained one included).
    """
    from elasticir.rerank.ranker import ElasticRanker, read_manifest

    alpha = float(alpha)
    if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    source, out = Path(model), Path(output)
    if out.resolve() == source.resolve():
        raise ValueError(f"output {out} is the model itself: write the interpolation elsewhere")
    manifest = read_manifest(str(source))
    training = manifest.get("training")
    if not isinstance(training, dict) or not isinstance(training.get("config"), dict):
        raise ValueError(
            f"{source} has no training record (elasticir.json 'training.config'): only a ranker "
            "trained by `elasticir train ranker` can be interpolated with its start"
        )
    if "interpolation" in training:
        raise ValueError(f"{source} is already an interpolation; interpolate the trained ranker")
    values = dict(training["config"], output=str(out))
    if data_root is not None:
        values["data_root"] = str(data_root)
    if cache is not None:
        values["cache"] = str(cache)
    config = RankerTrainConfig.from_dict(values)
    trained = ElasticRanker(source, device="cpu")
    if (out / "elasticir.json").is_file():
        done = read_manifest(str(out)).get("training", {}).get("interpolation") or {}
        if done.get("alpha") == alpha and done.get("trained_fingerprint") == trained.fingerprint:
            return out  # already written by the same request
        raise ValueError(
            f"{out} already holds another model; use another output directory (or delete it)"
        )
    with _threads(threads if threads is not None else config.threads):
        groups = load_groups(config, progress=progress)
        if groups.key != training.get("key"):
            raise ValueError(
                f"the training data of {source} no longer hashes to its run's key "
                f"({groups.key} != {training.get('key')}): the data folder or cache differs from "
                "the run's, so its start net cannot be rebuilt exactly"
            )
        start, tokenizer, _, _ = _start_net(config, groups, "cpu")
        mixed = _mix_states(start.state_dict(), trained.net.state_dict(), alpha, source)
        start.load_state_dict(mixed)
        widths = [int(w) for w in training.get("widths", [100])]
        stats = None
        if trained.has_classifier and config.exit_holdout and groups.holdout:
            stats = fit_exit_classifier(start, tokenizer, groups, widths, config, "cpu")
    record = dict(training)
    record["interpolation"] = {
        "format": INTERPOLATION_FORMAT,
        "alpha": alpha,
        "trained": str(source.resolve()),
        "trained_fingerprint": trained.fingerprint,
        "start": "the run's start net, rebuilt from its config and data (key checked)",
        "exit_classifier": "refitted on the run's held-out groups" if stats else None,
    }
    if stats is not None:
        record["exit_classifier"] = stats
    return write_ranker(
        out,
        start.eval(),
        tokenizer,
        levels=trained.levels,
        max_length=trained.max_length,
        classifier=stats is not None,
        training=record,
        source_model=manifest.get("source_model"),
    )


def _mix_states(
    start: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], alpha: float, where: Path
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * start + alpha * trained`` for every floating tensor but the exit
    classifier's (kept from ``start``, to be refitted) and those the run left unchanged (kept
    bit for bit); integer buffers must be equal."""
    if start.keys() != trained.keys():
        missing = sorted(set(start) ^ set(trained))[:5]
        raise ValueError(f"{where} does not match its run's start net (differing keys: {missing})")
    mixed: dict[str, torch.Tensor] = {}
    for name, first in start.items():
        last = trained[name].to(first.device)
        if first.shape != last.shape:
            raise ValueError(
                f"{where}: {name} has shape {tuple(last.shape)}, its start {tuple(first.shape)}"
            )
        if name.startswith("classifier."):
            mixed[name] = first
        elif torch.equal(first, last):  # frozen (word embeddings): bit for bit, signed zeros too
            mixed[name] = last
        elif torch.is_floating_point(first):
            mixed[name] = torch.lerp(first.float(), last.float(), alpha).to(first.dtype)
        elif not torch.equal(first, last):
            raise ValueError(f"{where}: buffer {name} differs from its start's")
        else:
            mixed[name] = first
    return mixed
