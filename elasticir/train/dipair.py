"""Two-stage training of the DiPair head (``elasticir.rerank.dipair``), distilled from teachers.

Training material (``<data_root>/train``, never an evaluation set; the files are parsed by
:mod:`elasticir.train.data`): groups of one query, its positive passage(s) and negatives, from

* ``msmarco-teacher-scored-{a,b,c}.jsonl`` and ``nq-train-teacher-scored.jsonl``: hard
  negatives with a strong teacher's scores;
* ``msmarco-triples-100.tsv``: official MS MARCO training triples (one positive, one negative);
* ``wikiqa-train.tsv`` and ``trecqa-train.jsonl``: labelled answer sentences, grouped by
  question (questions with no positive or no negative are dropped).

A group whose query equals a DL19 query or an nq-open question is dropped all the same
(``elasticir.train.data.evaluation_questions``).

With ``anchor_queries > 0``, unlabelled *anchor* groups are added (:mod:`elasticir.train.anchor`:
MS MARCO dev queries, never their qrels, each with its top passages of a corpus as a first
stage ranks them). They have no positive: only the KL term reads them, with the ``teacher``'s
scores (or, without one, the first stage's own), so the head learns the cross-encoder on
candidate lists like those it reranks, not only on the few labelled training queries.

Each step takes ``batch_size`` groups and, from each, one positive (slot 0) and up to
``group_size - 1`` negatives, drawn from generators seeded by ``(seed, stage, step)``. The loss
is ``ce_weight * CE + kl_weight * KL``:

* CE: listwise cross-entropy of the student's softmax over the group against the positive;
* KL: ``KL(teacher || student)`` over the group, for groups with teacher scores. The teacher is,
  first match wins: the ``teacher`` passed to :func:`train_dipair` (a callable
  ``(query, passages) -> scores``, or any object with ``score(query, passages)``, e.g. the
  cross-encoder), a ``teacher_scores`` file, or the source file's own teacher scores. Teacher
  scores are standardised per group (mean 0, standard deviation 1 over the group's kept
  passages) and divided by ``teacher_temperature``: sources with different score scales
  then teach equally sharp distributions.

Stage 1 (``stage1_steps``) trains the projections and the head with the encoder frozen: the
encoder's first token outputs of every training text are computed once and cached (a
resumable token cache of unprojected outputs, float16), so a step costs only the head.
Stage 2 (``stage2_steps``) trains end to end: the encoder runs on every step (without dropout;
the word-embedding table stays frozen unless ``train_word_embeddings``), with its own lower
learning rate. Either stage may have 0 steps.

What :func:`train_dipair` writes (``<output>`` is the DiPair model directory)::

    cache/dipair/<key>/{queries,passages}/   the frozen encoder's token outputs (stage 1)
    cache/dipair/teacher/<key>.npy           a fingerprinted teacher's scores (while scoring,
                                             <key>.partial.npy: a killed run resumes from it)
    checkpoint/state.pt                      head (+ encoder in stage 2), optimizer, scheduler,
                                             stage, step; removed once the model is written
    dipair.safetensors, encoder/ (after stage 2), training-log.jsonl, elasticir.json (last)

A rerun of the same config after a kill resumes from the last checkpoint and ends with the
weights an uninterrupted run ends with (same device and thread count): nothing random is
carried between steps except what the checkpoint holds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.files import atomic_file
from elasticir.progress import progress_bar
from elasticir.rerank.dipair import DiPair, DiPairConfig, DiPairHead, token_states
from elasticir.train.anchor import (
    ANCHOR_SOURCE,
    anchor_data,
    anchor_groups,
    check_anchor_fields,
    drop_unused_anchor_fields,
)
from elasticir.train.config import TrainConfigFile, check_int, check_names, check_training_output
from elasticir.train.data import (
    LabelledSentence,
    is_number,
    json_lines,
    read_scored,
    read_trecqa,
    read_triples,
    read_wikiqa,
)
from elasticir.train.denser import (
    _device,
    _digest,
    _finished_key,
    _optimizer_step,
    _schedule,
    _shuffled_rows,
    _texts_digest,
    _threads,
    _trainable,
    _training_bar,
)

if TYPE_CHECKING:
    from elasticir.encoders.denser import ElasticDenser

__all__ = [
    "SOURCES",
    "DiPairData",
    "DiPairTrainConfig",
    "StepBatch",
    "TrainingGroup",
    "export_teacher_inputs",
    "initial_dipair",
    "prepare_dipair_data",
    "read_groups",
    "train_dipair",
]

# source name -> file in <data_root>/train
SOURCES: dict[str, str] = {
    "msmarco-teacher-scored-a": "msmarco-teacher-scored-a.jsonl",
    "msmarco-teacher-scored-b": "msmarco-teacher-scored-b.jsonl",
    "msmarco-teacher-scored-c": "msmarco-teacher-scored-c.jsonl",
    "nq-train-teacher-scored": "nq-train-teacher-scored.jsonl",
    "msmarco-triples": "msmarco-triples-100.tsv",
    "wikiqa": "wikiqa-train.tsv",
    "trecqa": "trecqa-train.jsonl",
}
CHECKPOINT_FORMAT = "elasticir-dipair-checkpoint"
Teacher = Callable[[str, list[str]], Sequence[float]]


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class DiPairTrainConfig(TrainConfigFile):
    """Everything that decides a DiPair training run; ``to_json`` / ``from_json`` round-trip it.

    Model shape: ``k``, ``query_tokens``, ``dim``, ``layers``, ``heads``, ``ffn``,
    ``dropout``, ``query_max_length``, ``passage_max_length``, ``residual`` (see
    :class:`~elasticir.rerank.dipair.DiPairConfig`; on by default here: with this little data
    the plain head ranks held-out queries near chance, the residual one keeps the bi-encoder's
    ranking and corrects it, results/rerank.md). Data: ``sources`` (names of
    :data:`SOURCES`; None = all), ``max_groups`` per source (seeded sample; None = all),
    ``max_passages`` kept per group (positives first, a seeded sample of the rest),
    ``group_size`` passages per group per step, ``batch_size`` groups per step. Stage 1 runs
    ``stage1_steps`` at ``lr``; stage 2 ``stage2_steps`` of ``stage2_batch_size`` groups
    (``None``: ``batch_size``; small by default, as every passage then runs through the
    encoder with gradients) at ``stage2_lr`` (head) and ``encoder_lr`` (encoder); each stage
    warms up linearly over ``warmup`` of its steps, then decays linearly. ``teacher_scores``
    is a file of teacher scores: JSON lines ``{"query", "passage", "score"}``, or a TREC run
    over the ids that :func:`export_teacher_inputs` writes. ``anchor_queries > 0`` adds that
    many unlabelled groups of MS MARCO dev queries over ``anchor_corpus`` (the anchor groups of
    :mod:`elasticir.train.anchor`: the base bi-encoder's top ``anchor_depth`` passages, or with
    ``anchor_bm25_weight > 0`` a fused first stage's; its vectors and BM25 index are cached in
    ``anchor_cache``). They enter only the KL term, so they are worth training on only with a
    ``teacher`` that scores them: the head then learns the teacher on MS MARCO-like candidate
    lists, not only on the labelled files.
    """

    output: Path
    base_model: str | None = None
    data_root: Path | None = None
    sources: tuple[str, ...] | None = None
    seed: int = 13
    k: int = 32
    query_tokens: int = 16
    dim: int = 64
    layers: int = 2
    heads: int = 4
    ffn: int | None = None
    dropout: float = 0.1
    query_max_length: int = 64
    passage_max_length: int | None = None
    residual: bool = True
    max_groups: int | None = None
    max_passages: int = 32
    group_size: int = 16
    batch_size: int = 16
    stage1_steps: int = 2000
    stage2_steps: int = 50
    stage2_batch_size: int | None = 4
    lr: float = 1e-3
    stage2_lr: float = 1e-4
    encoder_lr: float = 1e-5
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    train_word_embeddings: bool = False
    ce_weight: float = 1.0
    kl_weight: float = 1.0
    teacher_temperature: float = 1.0
    teacher_scores: Path | None = None
    anchor_queries: int = 0
    anchor_corpus: str = "msmarco-dl19"
    anchor_depth: int = 32
    anchor_bm25_weight: float = 0.0
    anchor_cache: Path | None = None
    checkpoint_every: int = 100
    threads: int | None = None
    device: str | None = None
    cache: Path | None = None

    # fields that do not change what is trained: they may differ between a run and its resume
    _RUN_ONLY_FIELDS: ClassVar[tuple[str, ...]] = (
        "output",
        "data_root",
        "checkpoint_every",
        "threads",
        "cache",
        "device",
        "teacher_scores",  # its scores are part of the training key, not its path
        "anchor_cache",  # where the anchor corpus's vectors are cached
    )

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        self._settle_paths("data_root", "cache", "teacher_scores", "anchor_cache")
        if self.sources is not None:
            put("sources", check_names("sources", self.sources, tuple(SOURCES)))
        for name in ("batch_size", "checkpoint_every", "max_passages"):
            check_int(name, getattr(self, name))
        for name in ("stage1_steps", "stage2_steps"):
            check_int(name, getattr(self, name), 0)
        if self.stage1_steps + self.stage2_steps == 0:
            raise ValueError("stage1_steps and stage2_steps are both 0: nothing to train")
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
            raise ValueError(f"group_size must be an integer, got {self.group_size!r}")
        if self.group_size < 2 or self.max_passages < 2:
            raise ValueError(
                "group_size and max_passages must be at least 2 (a positive and a negative)"
            )
        for name in ("max_groups", "threads", "stage2_batch_size"):
            check_int(name, getattr(self, name), optional=True)
        for name in ("lr", "stage2_lr", "encoder_lr", "teacher_temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup!r}")
        if self.weight_decay < 0 or self.ce_weight < 0 or self.kl_weight < 0:
            raise ValueError("weight_decay, ce_weight and kl_weight must not be negative")
        if self.ce_weight == 0 and self.kl_weight == 0:
            raise ValueError("ce_weight and kl_weight are both 0: the loss would be empty")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm!r}")
        check_anchor_fields(self)
        self.model_config()  # the model shape is checked by DiPairConfig

    # -- derived -----------------------------------------------------------------------------
    def training_fields(self) -> dict[str, Any]:
        values = super().training_fields()
        if not values["residual"]:
            del values["residual"]  # the keys of plain runs made before it existed stay valid
        drop_unused_anchor_fields(self, values)  # nor do runs without anchors
        return values

    def model_config(self) -> DiPairConfig:
        return DiPairConfig(
            k=self.k,
            query_tokens=self.query_tokens,
            dim=self.dim,
            layers=self.layers,
            heads=self.heads,
            ffn=self.ffn,
            dropout=self.dropout,
            query_max_length=self.query_max_length,
            passage_max_length=self.passage_max_length,
            residual=self.residual,
        )

    def stage_batch_size(self, stage: int) -> int:
        """Groups per step of ``stage`` (1 or 2)."""
        if stage == 2 and self.stage2_batch_size is not None:
            return self.stage2_batch_size
        return self.batch_size

    def cache_dir(self) -> Path:
        return self.cache if self.cache is not None else self.output / "cache"

    def source_names(self) -> tuple[str, ...]:
        return self.sources if self.sources is not None else tuple(SOURCES)


# --------------------------------------------------------------------------- reading the groups


@dataclass(frozen=True)
class TrainingGroup:
    """One query with labelled passages (1 = positive) and, when the source has them, the
    source teacher's scores (same order). An unlabelled group (``labelled=False``, the anchor
    groups; every label 0) enters only the teacher term."""

    source: str
    query: str
    passages: tuple[str, ...]
    labels: tuple[int, ...]
    scores: tuple[float, ...] | None = None
    labelled: bool = True


def read_groups(train_dir: str | Path, sources: Sequence[str] | None = None) -> list[TrainingGroup]:
    """Every usable group of the named ``sources`` (default all) in ``train_dir``, in file
    order: a group has a non-empty query, at least one positive and one negative, and no
    passage twice. Malformed records raise :class:`InputFormatError` naming file and line."""
    train_dir = Path(train_dir)
    groups: list[TrainingGroup] = []
    for name in sources if sources is not None else SOURCES:
        path = train_dir / SOURCES[name]
        if not path.is_file():
            raise MissingResourceError(f"{path}: training file of source {name!r} not found")
        if path.suffix == ".jsonl":
            reader = _trecqa if name == "trecqa" else _scored
        else:
            reader = _wikiqa if name == "wikiqa" else _triples
        for group in reader(path, name):
            cleaned = _clean(group)
            if cleaned is not None:
                groups.append(cleaned)
    return groups


def _clean(group: TrainingGroup) -> TrainingGroup | None:
    query = " ".join(group.query.split())
    seen: dict[str, int] = {}
    for i, text in enumerate(group.passages):
        text = text.strip()
        if text and text not in seen:
            seen[text] = i
    keep = list(seen.values())
    labels = tuple(group.labels[i] for i in keep)
    if not query or len(keep) < 2:
        return None
    if group.labelled and (1 not in labels or 0 not in labels):
        return None
    scores = None if group.scores is None else tuple(group.scores[i] for i in keep)
    return TrainingGroup(group.source, query, tuple(seen), labels, scores, group.labelled)


def _scored(path: Path, name: str) -> Iterator[TrainingGroup]:
    """One group per line: its positives, then its negatives, with the line's teacher scores."""
    for record in read_scored(path):
        yield TrainingGroup(
            name,
            record.query,
            record.positives + record.negatives,
            (1,) * len(record.positives) + (0,) * len(record.negatives),
            record.scores,
        )


def _triples(path: Path, name: str) -> Iterator[TrainingGroup]:
    for triple in read_triples(path):
        yield TrainingGroup(name, triple.query, (triple.positive, triple.negative), (1, 0))


def _wikiqa(path: Path, name: str) -> Iterator[TrainingGroup]:
    """Grouped by question text (WikiQA's question ids are per row)."""
    return _by_question(name, read_wikiqa(path), lambda row: row.question)


def _trecqa(path: Path, name: str) -> Iterator[TrainingGroup]:
    """Grouped by question id."""
    return _by_question(name, read_trecqa(path), lambda row: row.qid)


def _by_question(
    name: str, rows: Iterable[LabelledSentence], key: Callable[[LabelledSentence], str | None]
) -> Iterator[TrainingGroup]:
    """One group per ``key`` (in order of first appearance), under its first row's question."""
    by_key: dict[str | None, list[LabelledSentence]] = {}
    for row in rows:
        by_key.setdefault(key(row), []).append(row)
    for members in by_key.values():
        yield TrainingGroup(
            name,
            members[0].question,
            tuple(row.sentence for row in members),
            tuple(row.label for row in members),
        )


# --------------------------------------------------------------------------- prepared data


@dataclass(frozen=True)
class StepBatch:
    """One step's groups: query rows ``(B,)``, passage rows ``(B, G)`` (-1 = padding, the
    positive in column 0 of a labelled group) and teacher logits ``(B, G)`` (NaN where a group
    has no teacher); ``labelled`` ``(B,)`` says which groups have that positive (None: all)."""

    query_rows: np.ndarray
    passage_rows: np.ndarray
    teacher: np.ndarray
    labelled: np.ndarray | None = None

    @property
    def mask(self) -> np.ndarray:
        return self.passage_rows >= 0


@dataclass
class DiPairData:
    """The training problem, fixed for the whole run: texts, groups, teacher targets, and
    the frozen encoder's token outputs of every text (stage 1 reads these)."""

    config: DiPairTrainConfig
    queries: list[str]
    passages: list[str]
    group_queries: np.ndarray  # (groups,) row in queries
    group_passages: list[np.ndarray]  # per group: rows in passages, positives first
    group_positives: np.ndarray  # (groups,) how many of those rows are positives (0: unlabelled)
    group_teacher: list[np.ndarray | None]  # per group: teacher logits aligned with its rows
    query_ids: list[list[int]]
    passage_ids: list[list[int]]
    query_states: torch.Tensor  # (queries, query_tokens, hidden) float16
    query_lengths: torch.Tensor
    passage_states: torch.Tensor  # (passages, k, hidden) float16
    passage_lengths: torch.Tensor
    query_vectors: torch.Tensor | None  # (queries, hidden) float16 sentence embeddings
    passage_vectors: torch.Tensor | None  # (passages, hidden): both only for a residual head
    pooling: tuple[str, bool]  # the encoder's pooling and normalisation
    pad_token_id: int
    encoder_fingerprint: str
    key: str
    stats: dict[str, Any]
    device: torch.device
    _orders: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict, repr=False)

    def batch(self, stage: int, step: int) -> StepBatch:
        """The groups of 1-based ``step`` of ``stage``: consecutive slices of seeded per-epoch
        shuffles; each group's positive and negatives drawn from ``(seed, stage, step)`` (an
        unlabelled group's ``group_size`` passages drawn from all it has)."""
        config = self.config
        n, size = len(self.group_queries), config.stage_batch_size(stage)
        groups = _shuffled_rows(n, size, step, (config.seed, 101, stage), self._orders)
        rng = np.random.default_rng([config.seed, 211, stage, step])
        width = config.group_size
        rows = np.full((size, width), -1, dtype=np.int64)
        teacher = np.full((size, width), np.nan, dtype=np.float32)
        labelled = np.ones(size, dtype=bool)
        for slot, group in enumerate(groups):
            members, positives = self.group_passages[group], int(self.group_positives[group])
            if positives == 0:  # an anchor group: no positive slot
                labelled[slot] = False
                take = min(width, len(members))
                chosen = rng.choice(len(members), size=take, replace=False).tolist()
            else:
                chosen = [int(rng.integers(positives))]
                negatives = len(members) - positives
                take = min(width - 1, negatives)
                chosen += (positives + rng.choice(negatives, size=take, replace=False)).tolist()
            rows[slot, : len(chosen)] = members[chosen]
            logits = self.group_teacher[group]
            if logits is not None:
                teacher[slot, : len(chosen)] = logits[chosen]
        return StepBatch(
            self.group_queries[groups], rows, teacher, None if labelled.all() else labelled
        )

    # -- the student's scores ----------------------------------------------------------------
    def scores(
        self, head: DiPairHead, batch: StepBatch, encoder: torch.nn.Module | None = None
    ) -> torch.Tensor:
        """Student scores ``(B, G)``, ``-inf`` at padding. Without ``encoder`` the cached
        frozen token outputs are projected (stage 1); with it, the texts run through it."""
        device = self.device
        q_unique, q_inverse = np.unique(batch.query_rows, return_inverse=True)
        mask = batch.mask
        flat = batch.passage_rows[mask]
        p_unique, p_inverse = np.unique(flat, return_inverse=True)
        q_vectors = p_vectors = None
        if encoder is None:
            q_rows, p_rows = torch.from_numpy(q_unique), torch.from_numpy(p_unique)
            q_states = self.query_states[q_rows].to(device).float()
            q_lengths = self.query_lengths[q_rows].to(device)
            p_states = self.passage_states[p_rows].to(device).float()
            p_lengths = self.passage_lengths[p_rows].to(device)
            if self.query_vectors is not None and self.passage_vectors is not None:
                q_vectors = self.query_vectors[q_rows].to(device).float()
                p_vectors = self.passage_vectors[p_rows].to(device).float()
        else:
            q_states, q_lengths, q_vectors = self._encode(
                encoder, self.query_ids, q_unique, "query"
            )
            p_states, p_lengths, p_vectors = self._encode(
                encoder, self.passage_ids, p_unique, "passage"
            )
        q_proj = head.query_projection(q_states)
        p_proj = head.passage_projection(p_states)
        owner = np.broadcast_to(q_inverse.reshape(-1)[:, None], mask.shape)[mask]
        owner_t = torch.from_numpy(np.ascontiguousarray(owner)).to(device)
        p_index = torch.from_numpy(p_inverse.reshape(-1)).to(device)
        similarity = None
        if head.config.residual:
            assert q_vectors is not None and p_vectors is not None
            similarity = (q_vectors[owner_t] * p_vectors[p_index]).sum(-1)
        values = head(
            q_proj[owner_t], q_lengths[owner_t], p_proj[p_index], p_lengths[p_index], similarity
        )
        out = torch.full(mask.shape, float("-inf"), device=device, dtype=values.dtype)
        return out.masked_scatter(torch.from_numpy(mask).to(device), values)

    def _encode(
        self, encoder: torch.nn.Module, ids: list[list[int]], rows: np.ndarray, side: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        keep = self.config.query_tokens if side == "query" else self.config.k
        texts = [ids[int(r)] for r in rows]
        longest = max(len(t) for t in texts)
        input_ids = torch.full((len(texts), longest), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(texts), longest), dtype=torch.long)
        for i, tokens in enumerate(texts):
            input_ids[i, : len(tokens)] = torch.tensor(tokens)
            attention[i, : len(tokens)] = 1
        states, vectors = token_states(
            encoder,
            input_ids.to(self.device),
            attention.to(self.device),
            keep,
            self.pooling if self.config.residual else None,
        )
        lengths = torch.tensor([min(len(t), keep) for t in texts], device=self.device)
        return states, lengths, vectors

    def losses(
        self, head: DiPairHead, batch: StepBatch, encoder: torch.nn.Module | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"ce", "kl", "total"}`` of a batch (tensors; ``kl`` is 0 without teachers, ``ce``
        0 without labelled groups; each is a mean over the groups it covers)."""
        config = self.config
        scores = self.scores(head, batch, encoder)
        log_p = F.log_softmax(scores, dim=-1)
        if batch.labelled is None:
            ce = -log_p[:, 0].mean()
        elif batch.labelled.any():
            rows = torch.from_numpy(np.nonzero(batch.labelled)[0]).to(scores.device)
            ce = -log_p[rows, 0].mean()
        else:
            ce = scores.new_zeros(())
        has_teacher = ~np.isnan(batch.teacher[:, 0])
        if has_teacher.any():
            rows = torch.from_numpy(np.nonzero(has_teacher)[0]).to(scores.device)
            teacher = torch.from_numpy(batch.teacher).to(scores.device)[rows]
            valid = torch.from_numpy(batch.mask).to(scores.device)[rows]
            teacher = teacher.masked_fill(~valid, float("-inf"))
            target = F.softmax(teacher, dim=-1)
            student = log_p[rows].masked_fill(~valid, 0.0)
            target_log = torch.log(target.clamp_min(1e-30)).masked_fill(~valid, 0.0)
            kl = (target * (target_log - student)).sum(-1).mean()
        else:
            kl = scores.new_zeros(())
        total = config.ce_weight * ce + config.kl_weight * kl
        return {"ce": ce, "kl": kl, "total": total}


def prepare_dipair_data(
    config: DiPairTrainConfig,
    progress: bool = True,
    teacher: Teacher | Any | None = None,
    encoder: ElasticDenser | None = None,
) -> DiPairData:
    """Read and select the groups, compute the teacher targets and the frozen encoder's token
    outputs of every training text (cached under ``config.cache_dir()``, resumable)."""
    from elasticir.data.datasets import data_root as find_data_root

    root = Path(config.data_root if config.data_root is not None else find_data_root()).resolve()
    groups, stats = _select_groups(config, root, progress)
    if encoder is None:
        encoder = _base_encoder(config)
    model_config = _resolved_config(config, encoder)
    queries = list(dict.fromkeys(g.query for g in groups))
    query_row = {text: i for i, text in enumerate(queries)}
    passage_row: dict[str, int] = {}
    group_passages, group_positives, kept = [], [], []
    for number, group in enumerate(groups):
        members = _kept_members(config, group, number)
        kept.append(members)
        rows = [passage_row.setdefault(group.passages[i], len(passage_row)) for i in members]
        group_passages.append(np.asarray(rows, dtype=np.int64))
        group_positives.append(sum(group.labels[i] for i in members))
    passages = list(passage_row)
    teacher_logits, teacher_stats = _teacher_targets(
        config, groups, kept, queries, passages, teacher, progress
    )
    device = _device(config)
    cache = config.cache_dir() / "dipair"
    fingerprint = encoder.own_fingerprint
    residual = config.residual
    q_states, q_lengths, q_vectors = _frozen_states(
        encoder,
        queries,
        cache,
        config.query_max_length,
        config.query_tokens,
        "queries",
        progress,
        residual,
    )
    passage_max_length = int(model_config.passage_max_length or 0)
    p_states, p_lengths, p_vectors = _frozen_states(
        encoder, passages, cache, passage_max_length, config.k, "passages", progress, residual
    )
    tokenizer = encoder.tokenizer
    query_ids = tokenizer(queries, truncation=True, max_length=config.query_max_length)["input_ids"]
    passage_ids = tokenizer(passages, truncation=True, max_length=passage_max_length)["input_ids"]
    data_digest = _digest(
        {
            "groups": [
                [
                    int(query_row[g.query]),
                    rows.tolist(),
                    int(p),
                    None if t is None else hashlib.sha256(t.tobytes()).hexdigest(),
                ]
                for g, rows, p, t in zip(groups, group_passages, group_positives, teacher_logits)
            ],
            "queries": _texts_digest(queries),
            "passages": _texts_digest(passages),
        }
    )
    key = _digest(
        {
            "config": config.training_fields(),
            "model": model_config.identity(),
            "encoder": fingerprint,
            "data": data_digest,
        }
    )
    stats = {
        **stats,
        "root": str(root),
        "groups": len(groups),
        "queries": len(queries),
        "passages": len(passages),
        "teacher": teacher_stats,
    }
    return DiPairData(
        config=config,
        queries=queries,
        passages=passages,
        group_queries=np.asarray([query_row[g.query] for g in groups], dtype=np.int64),
        group_passages=group_passages,
        group_positives=np.asarray(group_positives, dtype=np.int64),
        group_teacher=teacher_logits,
        query_ids=query_ids,
        passage_ids=passage_ids,
        query_states=q_states,
        query_lengths=q_lengths,
        passage_states=p_states,
        passage_lengths=p_lengths,
        query_vectors=q_vectors,
        passage_vectors=p_vectors,
        pooling=(encoder.settings.pooling, bool(encoder.settings.normalize)),
        pad_token_id=int(tokenizer.pad_token_id or 0),
        encoder_fingerprint=fingerprint,
        key=key,
        stats=stats,
        device=device,
    )


def _select_groups(
    config: DiPairTrainConfig, root: Path, progress: bool = False
) -> tuple[list[TrainingGroup], dict[str, Any]]:
    """The groups of the configured sources, minus evaluation questions, capped per source."""
    banned, checked = _evaluation_questions(root)
    groups = read_groups(root / "train", config.source_names())
    by_source: dict[str, list[TrainingGroup]] = {name: [] for name in config.source_names()}
    excluded: dict[str, int] = dict.fromkeys(by_source, 0)
    for group in groups:
        if " ".join(group.query.lower().split()) in banned:
            excluded[group.source] += 1
        else:
            by_source[group.source].append(group)
    selected: list[TrainingGroup] = []
    sources: dict[str, dict[str, int]] = {}
    for number, (name, items) in enumerate(by_source.items()):
        available = len(items)
        if config.max_groups is not None and len(items) > config.max_groups:
            rng = np.random.default_rng([config.seed, 5, number])
            chosen = np.sort(rng.choice(len(items), size=config.max_groups, replace=False))
            items = [items[int(i)] for i in chosen]
        selected.extend(items)
        sources[name] = {
            "file": SOURCES[name],
            "groups_available": available,
            "groups": len(items),
            "excluded_eval_overlap": excluded[name],
        }
    if not selected:
        raise ValueError(f"no training groups found in {root / 'train'}")
    stats: dict[str, Any] = {"sources": sources, "eval_overlap_checked": checked}
    if config.anchor_queries:
        anchors, stats["anchor"] = _anchor_groups(config, root, banned, progress)
        selected.extend(anchors)
        sources[ANCHOR_SOURCE] = {"groups": len(anchors), "labelled": False}
    return selected, stats


def _anchor_groups(
    config: DiPairTrainConfig, root: Path, banned: set[str], progress: bool
) -> tuple[list[TrainingGroup], dict[str, Any]]:
    """The unlabelled anchor groups (:mod:`elasticir.train.anchor`) as training groups, and
    their record (the query ids included)."""
    spec = anchor_data(config, root, config.anchor_cache)
    mined, record = anchor_groups(spec, banned, progress=progress, threads=config.threads)
    groups = []
    for group in mined:
        passages = (group.positive, *group.negatives)
        cleaned = _clean(
            TrainingGroup(
                group.source,
                group.query,
                passages,
                (0,) * len(passages),
                group.teacher,
                labelled=False,
            )
        )
        if cleaned is not None:
            groups.append(cleaned)
    if not groups:
        raise ValueError(f"anchor_queries={config.anchor_queries} gave no usable anchor group")
    return groups, record


def _evaluation_questions(root: Path) -> tuple[set[str], bool]:
    from elasticir.train.data import evaluation_questions

    try:
        return evaluation_questions(root), True
    except (MissingResourceError, FileNotFoundError):
        return set(), False  # a data folder without the evaluation sets: nothing to exclude


def _kept_members(config: DiPairTrainConfig, group: TrainingGroup, number: int) -> list[int]:
    """Indices of the passages kept of a group: positives first (at most half of
    ``max_passages``), then negatives, each a seeded sample in file order."""
    positives = [i for i, label in enumerate(group.labels) if label == 1]
    negatives = [i for i, label in enumerate(group.labels) if label == 0]
    rng = np.random.default_rng([config.seed, 7, number])

    def sample(items: list[int], cap: int) -> list[int]:
        if len(items) <= cap:
            return items
        return [items[int(i)] for i in np.sort(rng.choice(len(items), size=cap, replace=False))]

    kept_pos = sample(positives, max(1, config.max_passages // 2))
    return kept_pos + sample(negatives, config.max_passages - len(kept_pos))


def _base_encoder(config: DiPairTrainConfig) -> ElasticDenser:
    from elasticir.encoders.denser import ElasticDenser

    return ElasticDenser(
        config.base_model,
        device=str(_device(config)),
        batch_size=32,
        query_max_length=config.query_max_length,
        passage_max_length=config.passage_max_length,
    )


def _resolved_config(config: DiPairTrainConfig, encoder: ElasticDenser) -> DiPairConfig:
    from elasticir.rerank.dipair import resolve_config

    return resolve_config(config.model_config(), encoder)


def _frozen_states(
    encoder: ElasticDenser,
    texts: list[str],
    cache: Path,
    max_length: int,
    keep: int,
    side: str,
    progress: bool,
    vectors: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The frozen encoder's first ``keep`` token outputs of ``texts`` (float16, cached), their
    lengths and, with ``vectors``, their sentence embeddings (else None)."""
    from elasticir.rerank.dipair import EncodedTexts, encoder_token_outputs
    from elasticir.rerank.token_cache import TokenCache, write_token_cache

    fingerprint = encoder.own_fingerprint
    described: dict[str, Any] = {
        "encoder": fingerprint,
        "max_length": max_length,
        "keep": keep,
        "raw": True,
    }
    if vectors:
        described["vectors"] = True  # without it: the key of caches made before vectors
    key = _digest({**described, "texts": _texts_digest(texts)})
    directory = cache / side / key
    corpus = directory / "texts.jsonl"
    if not corpus.is_file():
        with atomic_file(corpus) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for i, text in enumerate(texts):
                fh.write(json.dumps({"id": f"t{i}", "contents": text}, ensure_ascii=False) + "\n")

    def encode(batch: Sequence[str], advance: Callable[[int], None]) -> EncodedTexts:
        return encoder_token_outputs(
            encoder, batch, max_length=max_length, keep=keep, vectors=vectors, progress=advance
        )

    hidden = int(encoder.model.config.hidden_size)
    write_token_cache(
        corpus,
        directory / "tokens",
        encode,
        model={**described, "model_fingerprint": _digest(described)},
        k=keep,
        dim=hidden,
        vector_dim=hidden if vectors else 0,
        shard_size=1024,
        progress=progress,
        label=f"encoder tokens ({side})",
    )
    ids, stored = TokenCache(directory / "tokens").load()
    if ids != [f"t{i}" for i in range(len(texts))]:
        raise ValueError(f"{directory}: cached token outputs do not match the texts; delete it")
    return (
        torch.from_numpy(stored.tokens),
        torch.from_numpy(stored.lengths.astype(np.int64)),
        None if stored.vectors is None else torch.from_numpy(stored.vectors),
    )


# --------------------------------------------------------------------------- teachers


def _teacher_targets(
    config: DiPairTrainConfig,
    groups: list[TrainingGroup],
    kept: list[list[int]],
    queries: list[str],
    passages: list[str],
    teacher: Teacher | Any | None,
    progress: bool,
) -> tuple[list[np.ndarray | None], dict[str, int]]:
    """Per group, teacher logits over its kept passages (standardised, / temperature)."""
    raw: list[np.ndarray | None] = [None] * len(groups)
    origin = ["none"] * len(groups)
    for i, (group, members) in enumerate(zip(groups, kept)):
        if group.scores is not None:
            raw[i] = np.asarray([group.scores[m] for m in members], dtype=np.float64)
            origin[i] = "source"
    if config.teacher_scores is not None:
        table = _read_teacher_file(config.teacher_scores, queries, passages)
        covered = 0
        for i, (group, members) in enumerate(zip(groups, kept)):
            values = [table.get((group.query, group.passages[m])) for m in members]
            if all(v is not None for v in values):
                raw[i] = np.asarray(values, dtype=np.float64)
                origin[i] = "file"
                covered += 1
        if covered == 0:
            raise ValueError(
                f"{config.teacher_scores}: scores none of the training groups (every passage of "
                "a group must be scored); write it for the pairs export_teacher_inputs lists"
            )
    if teacher is not None:
        scored = _call_teacher(config, teacher, groups, kept, progress)
        for i, values in enumerate(scored):
            raw[i] = values
            origin[i] = "teacher"
    logits: list[np.ndarray | None] = []
    for values in raw:
        if values is None:
            logits.append(None)
            continue
        spread = values.std()
        z = (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)
        logits.append((z / config.teacher_temperature).astype(np.float32))
    counts = {name: origin.count(name) for name in ("teacher", "file", "source", "none")}
    return logits, counts


def _call_teacher(
    config: DiPairTrainConfig,
    teacher: Teacher | Any,
    groups: list[TrainingGroup],
    kept: list[list[int]],
    progress: bool,
) -> list[np.ndarray]:
    """The teacher's scores of every group's kept passages; cached on disk when the teacher
    has a ``fingerprint`` (a deterministic model), else computed on each run. The labelled
    groups and the unlabelled (anchor) ones are cached apart, so adding anchors to a run reuses
    the labelled groups' scores."""
    out: list[np.ndarray | None] = [None] * len(groups)
    for labelled in (True, False):
        part = [i for i, g in enumerate(groups) if g.labelled == labelled]
        if part:
            scores = _teacher_part(
                config, teacher, [groups[i] for i in part], [kept[i] for i in part], progress
            )
            for i, values in zip(part, scores):
                out[i] = values
    return out  # type: ignore[return-value]


def _teacher_part(
    config: DiPairTrainConfig,
    teacher: Teacher | Any,
    groups: list[TrainingGroup],
    kept: list[list[int]],
    progress: bool,
) -> list[np.ndarray]:
    """One part's teacher scores (see :func:`_call_teacher`). A fingerprinted teacher's scores
    so far are saved every ``_PARTIAL_SECONDS`` (``<key>.partial.npy``), so a killed run
    resumes scoring where it stopped."""
    from elasticir.data.records import Passage

    fingerprint = getattr(teacher, "fingerprint", None)
    sizes = [len(m) for m in kept]
    path = partial = None
    if isinstance(fingerprint, str) and fingerprint:
        digest = hashlib.sha256()
        for group, members in zip(groups, kept):
            digest.update(group.query.encode() + b"\0")
            for m in members:
                digest.update(group.passages[m].encode() + b"\1")
        key = _digest({"teacher": fingerprint, "pairs": digest.hexdigest()})
        path = config.cache_dir() / "dipair" / "teacher" / f"{key}.npy"
        if path.is_file():
            flat = np.load(path)
            if flat.shape == (sum(sizes),):
                return np.split(flat.astype(np.float64), np.cumsum(sizes)[:-1])
        partial = path.with_name(f"{key}.partial.npy")
    out = _partial_scores(partial, sizes)
    saved = time.monotonic()
    with progress_bar(progress, sum(sizes), "teacher scores") as advance:
        advance(sum(sizes[: len(out)]))
        for group, members in zip(groups[len(out) :], kept[len(out) :]):
            texts = [group.passages[m] for m in members]
            if hasattr(teacher, "score"):
                values = teacher.score(
                    group.query, [Passage(f"t{j}", t) for j, t in enumerate(texts)]
                )
            else:
                values = teacher(group.query, texts)
            values = np.asarray(values, dtype=np.float64).reshape(-1)
            if values.shape != (len(texts),) or not np.all(np.isfinite(values)):
                raise ValueError(
                    f"the teacher returned {values.shape} scores (finite expected) for "
                    f"{len(texts)} passages"
                )
            out.append(values)
            advance(len(texts))
            if partial is not None and time.monotonic() - saved > _PARTIAL_SECONDS:
                with atomic_file(partial) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, np.concatenate(out))
                saved = time.monotonic()
    if path is not None and partial is not None:
        with atomic_file(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.concatenate(out))
        partial.unlink(missing_ok=True)
    return out


_PARTIAL_SECONDS = 60.0


def _partial_scores(partial: Path | None, sizes: list[int]) -> list[np.ndarray]:
    """The whole groups' scores a killed run saved in ``partial`` (none when it is absent or
    does not end on a group boundary)."""
    if partial is None or not partial.is_file():
        return []
    flat = np.load(partial).astype(np.float64)
    ends = np.cumsum(sizes)
    done = int(np.searchsorted(ends, len(flat), side="right"))  # whole groups within flat
    if done == 0 or ends[done - 1] != len(flat):
        return []
    return np.split(flat, ends[: done - 1])


def _read_teacher_file(
    path: Path, queries: list[str], passages: list[str]
) -> dict[tuple[str, str], float]:
    """``(query text, passage text) -> score`` from JSON lines or a TREC run over the ids
    :func:`export_teacher_inputs` gives (``q<i>`` queries, ``t<i>`` passages)."""
    table: dict[tuple[str, str], float] = {}
    if path.name.endswith(".jsonl"):
        for lineno, record in json_lines(path):
            query, passage, score = record.get("query"), record.get("passage"), record.get("score")
            if not isinstance(query, str) or not isinstance(passage, str) or not is_number(score):
                raise InputFormatError(path, lineno, '{"query": ..., "passage": ..., "score": n}')
            table[(" ".join(query.split()), passage.strip())] = float(score)  # type: ignore[arg-type]
        return table
    from elasticir.data.trec import read_run

    run = read_run(path)
    for qid, docs in run.items():
        q = _parse_id(qid, "q", len(queries), path)
        for doc, score in docs.items():
            table[(queries[q], passages[_parse_id(doc, "t", len(passages), path)])] = float(score)
    return table


def _parse_id(value: str, prefix: str, size: int, path: Path) -> int:
    number = value[1:] if value.startswith(prefix) else ""
    if not number.isdigit() or int(number) >= size:
        raise InputFormatError(
            path, None, f"ids {prefix}0..{prefix}{size - 1} from export_teacher_inputs", value
        )
    return int(number)


def export_teacher_inputs(
    config: DiPairTrainConfig,
    directory: str | Path,
    progress: bool = True,
) -> dict[str, Path]:
    """Write the training pairs for an external teacher: ``queries.tsv`` (``q<i>``),
    ``corpus.jsonl`` (``t<i>``) and ``candidates.trec``. Rerank the candidates with the
    teacher (e.g. ``elasticir rerank``) and pass the run as ``teacher_scores``."""
    from elasticir.data.datasets import data_root as find_data_root
    from elasticir.data.trec import write_run

    root = Path(config.data_root if config.data_root is not None else find_data_root()).resolve()
    groups, _ = _select_groups(config, root, progress)
    queries = list(dict.fromkeys(g.query for g in groups))
    query_row = {text: i for i, text in enumerate(queries)}
    passage_row: dict[str, int] = {}
    run: dict[str, dict[str, float]] = {}
    for number, group in enumerate(groups):
        docs = run.setdefault(f"q{query_row[group.query]}", {})
        for member in _kept_members(config, group, number):
            row = passage_row.setdefault(group.passages[member], len(passage_row))
            docs.setdefault(f"t{row}", -float(len(docs)))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "queries": directory / "queries.tsv",
        "corpus": directory / "corpus.jsonl",
        "candidates": directory / "candidates.trec",
    }
    with atomic_file(paths["queries"]) as tmp:
        tmp.write_text("".join(f"q{i}\t{q}\n" for i, q in enumerate(queries)), encoding="utf-8")
    with atomic_file(paths["corpus"]) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for i, text in enumerate(passage_row):
            fh.write(json.dumps({"id": f"t{i}", "contents": text}, ensure_ascii=False) + "\n")
    write_run(paths["candidates"], run, tag="dipair-train")
    return paths


# --------------------------------------------------------------------------- training


def initial_dipair(config: DiPairTrainConfig, encoder: ElasticDenser | None = None) -> DiPair:
    """The untrained model of ``config``: the base encoder and a head seeded by ``seed``."""
    if encoder is None:
        encoder = _base_encoder(config)
    return DiPair.create(config.model_config(), encoder, seed=config.seed)


def train_dipair(
    config: DiPairTrainConfig,
    progress: bool = True,
    teacher: Teacher | Any | None = None,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
) -> Path:
    """Train the DiPair model of ``config`` in two stages; returns the model directory.

    ``teacher`` scores the training pairs for distillation (see the module docstring).
    Resumable: rerunning the same config continues from ``<output>/checkpoint/state.pt``, and
    returns at once when ``<output>`` already holds the finished model. ``on_step(stage, step,
    losses)`` is called after each optimizer step (an exception from it stops the run like a
    kill would).
    """
    output = config.output
    check_training_output(output)
    if (output / "config.json").is_file() and not (output / "elasticir.json").is_file():
        raise ValueError(f"{output} holds a model this command did not write; choose another")
    with _threads(config.threads):
        encoder = _base_encoder(config)
        data = prepare_dipair_data(config, progress, teacher, encoder)
        finished = _finished_key(output)
        if finished == data.key:
            return output
        if finished is not None:
            raise ValueError(
                f"{output} already holds a model trained with other settings; use another "
                "output directory (or delete that one)"
            )
        return _train(config, data, encoder, progress, on_step)


def _train(
    config: DiPairTrainConfig,
    data: DiPairData,
    encoder: ElasticDenser,
    progress: bool,
    on_step: Callable[[int, int, dict[str, float]], None] | None,
) -> Path:
    dipair = initial_dipair(config, encoder)
    head, model = dipair.head, encoder.model
    checkpoint = config.output / "checkpoint" / "state.pt"
    state: dict[str, Any] | None = None
    seconds, history = 0.0, []
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT or state.get("key") != data.key:
            raise ValueError(
                f"{checkpoint} was written by a run with other settings or data; rerun with "
                "those, or delete the checkpoint directory to start over"
            )
        head.load_state_dict(state["head"])
        if state.get("encoder") is not None:
            model.load_state_dict(state["encoder"])
        seconds, history = float(state["seconds"]), list(state["history"])
    total = config.stage1_steps + config.stage2_steps
    done = 0 if state is None else _global_step(config, state["stage"], state["step"])
    with _training_bar(progress, total, done) as show:
        for stage, steps in ((1, config.stage1_steps), (2, config.stage2_steps)):
            if steps == 0 or (state is not None and state["stage"] > stage):
                continue
            resume = state if state is not None and state["stage"] == stage else None
            seconds = _run_stage(
                config,
                data,
                head,
                model,
                stage,
                steps,
                resume,
                checkpoint,
                seconds,
                history,
                show,
                on_step,
            )
    _write_model(config, data, dipair, seconds, history)
    shutil.rmtree(checkpoint.parent, ignore_errors=True)
    return config.output


def _run_stage(
    config: DiPairTrainConfig,
    data: DiPairData,
    head: DiPairHead,
    model: torch.nn.Module,
    stage: int,
    steps: int,
    resume: dict[str, Any] | None,
    checkpoint: Path,
    seconds: float,
    history: list[dict[str, Any]],
    show: Callable[[int, dict[str, dict[str, float]]], None],
    on_step: Callable[[int, int, dict[str, float]], None] | None,
) -> float:
    end_to_end = stage == 2
    trained = _trainable(model, config) if end_to_end else []
    optimizer = _optimizer(config, head, trained, stage)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(steps, config.warmup))
    step = 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        step = int(resume["step"])
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    head.train()
    model.eval()  # the encoder runs without dropout; in stage 1 it does not run at all
    encoder = model if end_to_end else None
    while step < steps:
        started = time.perf_counter()
        step += 1
        torch.manual_seed(
            int(np.random.default_rng([config.seed, 307, stage, step]).integers(2**62))
        )
        batch = data.batch(stage, step)
        optimizer.zero_grad(set_to_none=True)
        losses = data.losses(head, batch, encoder)
        losses["total"].backward()
        lr = _optimizer_step(optimizer, scheduler, parameters, config.max_grad_norm)
        seconds += time.perf_counter() - started
        record = {name: float(value.item()) for name, value in losses.items()}
        history.append({"stage": stage, "step": step, "lr": lr, "losses": record})
        show(_global_step(config, stage, step), {f"stage{stage}": record})
        if step % config.checkpoint_every == 0 or step == steps:
            _save_checkpoint(
                checkpoint,
                data,
                head,
                model if end_to_end else None,
                optimizer,
                scheduler,
                stage,
                step,
                seconds,
                history,
            )
        if on_step is not None:
            on_step(stage, step, record)
    for parameter in trained:
        parameter.requires_grad_(False)
    head.eval()
    return seconds


def _global_step(config: DiPairTrainConfig, stage: int, step: int) -> int:
    return step if stage == 1 else config.stage1_steps + step


def _optimizer(
    config: DiPairTrainConfig,
    head: DiPairHead,
    encoder_parameters: list[torch.nn.Parameter],
    stage: int,
) -> torch.optim.Optimizer:
    head_lr = config.lr if stage == 1 else config.stage2_lr

    def decays(name: str, parameter: torch.nn.Parameter) -> bool:
        # matrices decay; biases, norms and the position / segment tables do not
        return parameter.ndim >= 2 and "positions" not in name and "segments" not in name

    named = list(head.named_parameters())
    groups: list[dict[str, Any]] = [
        {"params": [p for n, p in named if decays(n, p)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
    ]
    for group in groups:
        group["lr"] = head_lr
    if encoder_parameters:
        groups += [
            {
                "params": [p for p in encoder_parameters if p.ndim >= 2],
                "weight_decay": config.weight_decay,
                "lr": config.encoder_lr,
            },
            {
                "params": [p for p in encoder_parameters if p.ndim < 2],
                "weight_decay": 0.0,
                "lr": config.encoder_lr,
            },
        ]
    return torch.optim.AdamW(groups, lr=head_lr, foreach=True)


def _save_checkpoint(
    path: Path,
    data: DiPairData,
    head: DiPairHead,
    encoder: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    stage: int,
    step: int,
    seconds: float,
    history: list[dict[str, Any]],
) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "key": data.key,
        "config": data.config.to_dict(),
        "stage": stage,
        "step": step,
        "seconds": seconds,
        "history": history,
        "head": head.state_dict(),
        "encoder": None if encoder is None else encoder.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def _final_losses(history: list[dict[str, Any]], stage: int, steps: int) -> dict[str, float]:
    """Mean of a stage's last ``max(1, steps // 10)`` recorded losses."""
    values = [entry["losses"] for entry in history if entry["stage"] == stage]
    window = values[-max(1, steps // 10) :]
    return {name: float(np.mean([v[name] for v in window])) for name in ("ce", "kl", "total")}


def _write_model(
    config: DiPairTrainConfig,
    data: DiPairData,
    dipair: DiPair,
    seconds: float,
    history: list[dict[str, Any]],
) -> None:
    """The log first, then the model directory (``elasticir.json`` last)."""
    output = config.output
    output.mkdir(parents=True, exist_ok=True)
    with atomic_file(output / "training-log.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for entry in history:
            fh.write(json.dumps(entry) + "\n")
    stages = {
        f"stage{stage}": {
            "steps": steps,
            "final_losses": _final_losses(history, stage, steps),
        }
        for stage, steps in ((1, config.stage1_steps), (2, config.stage2_steps))
        if steps
    }
    training = {
        "method": "dipair-two-stage",
        "key": data.key,
        "config": config.to_dict(),
        "data": data.stats,
        "stages": stages,
        "base_encoder": {"fingerprint": data.encoder_fingerprint},
        "seed": config.seed,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, len(history)), 4),
        "torch_threads": torch.get_num_threads(),
    }
    dipair.head.eval()
    dipair.save(output, training=training, save_encoder=config.stage2_steps > 0)
