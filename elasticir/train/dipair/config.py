"""What decides a DiPair training run: :class:`DiPairTrainConfig`, and the sources."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from elasticir.models.dipair import DiPairConfig
from elasticir.train.anchor import check_anchor_fields, drop_unused_anchor_fields
from elasticir.train.config import TrainConfigFile, check_int, check_names

__all__ = ["SOURCES", "DiPairTrainConfig"]

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


@dataclass(frozen=True)
class DiPairTrainConfig(TrainConfigFile):
    """Everything that decides a DiPair training run; ``to_json`` / ``from_json`` round-trip it.

    Model shape: ``k``, ``query_tokens``, ``dim``, ``layers``, ``heads``, ``ffn``,
    ``dropout``, ``query_max_length``, ``passage_max_length``, ``residual`` (see
    :class:`~elasticir.models.dipair.DiPairConfig`; on by default here: with this little data
    the plain head ranks held-out queries near chance, the residual one keeps the bi-encoder's
    ranking and corrects it; docs/experiments/reranking.md). Data: ``sources`` (names of
    :data:`SOURCES`; None = all), ``max_groups`` per source (seeded sample; None = all),
    ``max_passages`` kept per group (positives first, a seeded sample of the rest),
    ``group_size`` passages per group per step, ``batch_size`` groups per step. Stage 1 runs
    ``stage1_steps`` at ``lr``; stage 2 ``stage2_steps`` of ``stage2_batch_size`` groups
    (``None``: ``batch_size``; small by default, as every passage then runs through the
    encoder with gradients) at ``stage2_lr`` (head) and ``encoder_lr`` (encoder); each stage
    warms up linearly over ``warmup`` of its steps, then decays linearly. ``teacher_scores``
    is a file of teacher scores: JSON lines ``{"query", "passage", "score"}``, or a TREC run
    over the ids that :func:`~elasticir.train.dipair.teacher.export_teacher_inputs` writes.
    ``anchor_queries > 0`` adds that many unlabelled groups of MS MARCO dev queries over
    ``anchor_corpus`` (the anchor groups of :mod:`elasticir.train.anchor`: the base
    bi-encoder's top ``anchor_depth`` passages, or with ``anchor_bm25_weight > 0`` a fused
    first stage's; its vectors and BM25 index are cached in ``anchor_cache``). They enter
    only the KL term, so they are worth training on only with a ``teacher`` that scores them:
    the head then learns the teacher on MS MARCO-like candidate lists, not only on the
    labelled files.
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
