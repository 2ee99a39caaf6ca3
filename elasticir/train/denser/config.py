"""What decides an ElasticDenser training run: :class:`DenserTrainConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from elasticir.compute.levels import Level
from elasticir.train.config import (
    TrainConfigFile,
    check_int,
    check_levels,
    check_names,
)

__all__ = ["CORPUS_DATASETS", "DenserTrainConfig", "check_focus"]

CORPUS_DATASETS = ("msmarco-dl19", "nq-open")  # datasets whose passages may join the pool


@dataclass(frozen=True)
class DenserTrainConfig(TrainConfigFile):
    """Everything that decides a training run; ``to_json`` / ``from_json`` round-trip it.

    ``output`` is the model directory written (caches and checkpoints live inside it unless
    ``cache`` points elsewhere). ``levels=None`` takes ``default_levels`` of the base model;
    ``sandwich=False`` trains only ``levels`` (the static baseline). ``focus`` names menu
    levels trained at every step on top of the sandwich (the level a deployment serves most;
    the random middle level is then drawn from the others). ``max_queries`` and
    ``passage_pool_size`` cap the training queries and the passage pool (sampled with
    ``seed``; None = all). ``passage_max_length=None`` uses the base model's own passage
    length, the one indexes are built with. ``warmup`` is the fraction of steps of linear
    warm-up before linear decay. ``threads`` sets torch's intra-op threads for the run.
    The word-embedding table (half of MiniLM's weights, each query touching a few rows) stays
    frozen unless ``train_word_embeddings``; everything else every level uses is trained.

    ``corpus_passages`` names datasets (``msmarco-dl19``, ``nq-open``) whose corpus passage
    texts join the pool, all of them, after the training passages are sampled: label-free
    in-domain candidates (no query, question or judgement of those datasets is read).
    ``pseudo_queries`` adds that many extra training inputs, word spans of 4-12 words cut
    from pool passages (seeded), distilled like the real queries.
    """

    output: Path
    base_model: str | None = None
    data_root: Path | None = None
    seed: int = 13
    steps: int = 2000
    batch_size: int = 64
    lr: float = 5e-5
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    levels: tuple[str, ...] | None = None
    sandwich: bool = True
    focus: tuple[str, ...] = ()
    candidates: int = 32
    temperature: float = 0.05
    align_weight: float = 1.0
    max_query_length: int = 32
    passage_max_length: int | None = None
    passage_pool_size: int | None = 20000
    max_queries: int | None = None
    corpus_passages: tuple[str, ...] = ()
    pseudo_queries: int = 0
    importance_queries: int = 512
    dropout: bool = False
    train_word_embeddings: bool = False
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
    )

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        self._settle_paths("data_root", "cache")
        if self.levels is not None:
            put("levels", check_levels(self.levels))
        elif not self.sandwich:
            raise ValueError(
                "static training (sandwich=False) needs the levels to train, e.g. "
                "levels=('L2-W50',)"
            )
        if isinstance(self.focus, str):
            raise ValueError(f"focus is a list of levels, got the string {self.focus!r}")
        put("focus", tuple(dict.fromkeys(str(Level(lv)) for lv in self.focus)))
        if self.focus and not self.sandwich:
            raise ValueError("focus levels add to the sandwich; a static run trains its levels")
        positive = ("steps", "batch_size", "candidates", "max_query_length", "checkpoint_every")
        if self.corpus_passages:  # each a known dataset, duplicates dropped
            put(
                "corpus_passages",
                check_names("corpus_passages", self.corpus_passages, CORPUS_DATASETS),
            )
        else:
            put("corpus_passages", ())
        for name in (*positive, "importance_queries", "pseudo_queries"):
            check_int(name, getattr(self, name), least=0 if name == "pseudo_queries" else 1)
        for name in ("passage_pool_size", "max_queries", "passage_max_length", "threads"):
            check_int(name, getattr(self, name), optional=True)
        if not self.lr > 0 or not self.temperature > 0:
            raise ValueError(
                f"lr and temperature must be positive, got {self.lr!r} and {self.temperature!r}"
            )
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup!r}")
        if self.align_weight < 0 or self.weight_decay < 0:
            raise ValueError("align_weight and weight_decay must not be negative")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm!r}")

    # -- derived -----------------------------------------------------------------------------
    def cache_dir(self) -> Path:
        return self.cache if self.cache is not None else self.output / "cache"

    def training_fields(self) -> dict[str, Any]:
        values = super().training_fields()
        # runs that leave these at their defaults keep the keys they had before the fields
        for name in ("focus", "corpus_passages", "pseudo_queries"):
            if not values[name]:
                values.pop(name)
        return values


def check_focus(config: DenserTrainConfig, menu: tuple[Level, ...]) -> list[Level]:
    """``config.focus`` as levels, each one of ``menu``'s (else ``ValueError``)."""
    focus = [Level(lv) for lv in config.focus]
    missing = [str(lv) for lv in focus if lv not in menu]
    if missing:
        raise ValueError(
            f"focus level(s) {', '.join(missing)} not in the menu ({', '.join(map(str, menu))})"
        )
    return focus
