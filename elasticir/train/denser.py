"""Elastic optimization of ElasticDenser's query encoder: every level distilled into one space.

The index space is fixed by the *full* passage encoder: the passage side stays the frozen
original model, and the query side is trained so that every compute level lands in that
space. One index then serves every query level.

What :func:`train_denser` does, and where it keeps it (``<output>`` is the model directory)::

    cache/passages/<key>/    the passage pool (pool.jsonl) and its teacher vectors, an
                             EmbeddingStore encoded once by the frozen model at full (resumable)
    cache/queries/<key>/     the training queries' teacher vectors, one .npy per 2,048 queries
    cache/candidates/<key>.npy  each query's top-k pool passages (FAISS flat, teacher vectors)
    checkpoint/state.pt      student + optimizer + scheduler + step + RNG states, every
                             ``checkpoint_every`` steps (removed once the model is written)
    config.json, model.safetensors, tokenizer files, elasticir.json, training-log.jsonl

The student is a copy of the base model with heads and neurons ranked by importance on
training queries and reordered (:func:`elasticir.encoders.elastic.reorder_`), so every level
is a nested sub-network of one set of weights (:func:`elastic_forward`). Each step applies the
**sandwich rule**: the full level, the smallest level and one random middle level of the menu,
each adding

* listwise distillation: ``KL(teacher || student)`` of the softmax over ``score / tau`` where a
  query's candidates are its own mined top-k *and* every other batch query's (in-batch
  negatives), scored by dot product with the **fixed** teacher passage vectors;
* embedding alignment: ``align_weight * (1 - cos(student query, teacher query))``, which pulls
  each level's query vector toward the full model's, i.e. into the passage space.

``sandwich=False`` trains only the listed ``levels`` (a static, one-level baseline).

Everything is seeded and resumable: batches and middle levels are drawn from generators seeded
by ``(seed, step)``; a rerun of the same config after a kill resumes from the last checkpoint
and ends with the weights an uninterrupted run ends with (same device and thread count).
Caches are keyed by what they depend on (teacher fingerprint, texts, lengths), so several
outputs may share one ``cache`` directory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from elasticir.data.files import atomic_file
from elasticir.encoders.elastic import (
    Importance,
    compute_importance,
    elastic_forward,
    level_menu,
    reorder_,
)
from elasticir.encoders.levels import FULL, Level
from elasticir.encoders.loading import EncoderSettings, quiet_loading
from elasticir.progress import progress_bar
from elasticir.train.config import (
    TrainConfigFile,
    check_int,
    check_levels,
    check_names,
    check_training_output,
)

if TYPE_CHECKING:
    from elasticir.encoders.denser import ElasticDenser
    from elasticir.train.data import TrainingText

__all__ = [
    "DenserTrainConfig",
    "Distillation",
    "LevelLoss",
    "initial_student",
    "level_menu",
    "prepare_distillation",
    "pseudo_queries",
    "query_agreement",
    "train_denser",
]

CHECKPOINT_FORMAT = "elasticir-train-checkpoint"
QUERY_PART = 2048  # teacher query vectors are cached in parts of this many queries
CORPUS_DATASETS = ("msmarco-dl19", "nq-open")  # datasets whose passages may join the pool
PSEUDO_QUERY_WORDS = (4, 12)  # a pseudo-query is a span of this many words (inclusive)


# --------------------------------------------------------------------------- configuration


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


# --------------------------------------------------------------------------- the distillation data


@dataclass(frozen=True)
class LevelLoss:
    """One level's loss on one batch: ``total = kl + align_weight * align`` (a tensor)."""

    kl: torch.Tensor
    align: torch.Tensor
    total: torch.Tensor

    def values(self) -> dict[str, float]:
        return {
            "kl": self.kl.item(),
            "align": self.align.item(),
            "total": self.total.item(),
        }


@dataclass
class Distillation:
    """The teacher's side of the training problem, fixed for the whole run.

    ``teacher_queries`` ``(n, dim)`` and ``passages`` ``(m, dim)`` are the frozen full model's
    vectors; ``candidates`` ``(n, k)`` each query's mined pool rows; ``query_ids`` the
    training queries tokenized at ``max_query_length``.
    """

    config: DenserTrainConfig
    base_path: str
    settings: EncoderSettings
    teacher_fingerprint: str
    tokenizer: Any
    queries: list[str]
    query_ids: list[list[int]]
    teacher_queries: torch.Tensor
    passages: torch.Tensor
    candidates: np.ndarray
    keys: dict[str, str]
    data: dict[str, Any]
    device: torch.device
    _orders: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        """Identifies the teacher data and the training settings: what a checkpoint resumes."""
        return _digest({"data": self.keys, "config": self.config.training_fields()})

    def batch(self, step: int) -> np.ndarray:
        """Query rows of 1-based ``step``: consecutive slices of seeded per-epoch shuffles."""
        config = self.config
        return _shuffled_rows(
            len(self.queries), config.batch_size, step, (config.seed, 101), self._orders
        )

    def encode(self, model: torch.nn.Module, rows: np.ndarray, level: Level | str) -> torch.Tensor:
        """Student query vectors of ``rows`` at ``level`` (pooled like the model, grads on)."""
        batch = self.tokenizer.pad(
            {"input_ids": [self.query_ids[int(r)] for r in rows]}, return_tensors="pt"
        ).to(self.device)
        hidden = elastic_forward(model, batch["input_ids"], batch["attention_mask"], level)
        return pool(hidden, batch["attention_mask"], self.settings)

    def losses(self, model: torch.nn.Module, rows: np.ndarray, level: Level | str) -> LevelLoss:
        """Listwise KL over own + in-batch candidates, and alignment to the teacher query."""
        unique = np.unique(self.candidates[rows])
        passages = self.passages[torch.from_numpy(unique).to(self.device)]  # (C, dim)
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(self.device)
        teacher = self.teacher_queries[index]  # (B, dim)
        student = self.encode(model, rows, level)
        tau = self.config.temperature
        teacher_log = F.log_softmax(teacher @ passages.T / tau, dim=-1)
        student_log = F.log_softmax(student @ passages.T / tau, dim=-1)
        kl = F.kl_div(student_log, teacher_log, log_target=True, reduction="batchmean")
        align = (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
        return LevelLoss(kl, align, kl + self.config.align_weight * align)


def pool(hidden: torch.Tensor, mask: torch.Tensor, settings: EncoderSettings) -> torch.Tensor:
    """Token states to one vector per text, exactly as ``ElasticDenser`` pools them."""
    if settings.pooling == "cls":
        vectors = hidden[:, 0]
    else:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        vectors = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if settings.normalize:
        vectors = F.normalize(vectors, dim=-1)
    return vectors


def prepare_distillation(config: DenserTrainConfig, progress: bool = True) -> Distillation:
    """Select the texts, and compute (or read from the cache) every teacher-side array.

    Encoding the passage pool with the frozen model is the slow part (minutes on a CPU); it
    goes through a resumable :class:`~elasticir.index.store.EmbeddingStore`, and the query
    vectors are cached in parts, so a killed run redoes at most one part.
    """
    from elasticir.data.datasets import data_root as find_data_root
    from elasticir.encoders.denser import ElasticDenser

    root = Path(config.data_root if config.data_root is not None else find_data_root())
    text = _training_text(root.resolve())
    corpus = _corpus_texts(root, config.corpus_passages)
    # a pseudo-query never equals a question we report on
    banned = _evaluation_questions(root.resolve()) if config.pseudo_queries else frozenset()
    queries, passages = _select(config, text, corpus, banned)
    real_queries = min(len(text.queries), config.max_queries or len(text.queries))
    if config.candidates > len(passages):
        raise ValueError(
            f"candidates={config.candidates} per query, but the passage pool has only "
            f"{len(passages)} passages"
        )
    device = _device(config)
    teacher = ElasticDenser(
        config.base_model,
        device=str(device),
        batch_size=32,
        query_max_length=config.max_query_length,
        passage_max_length=config.passage_max_length,
    )
    if config.focus:  # a wrong focus level fails now, not after the teacher's encoding
        _check_focus(config, level_menu(teacher.model.config, config.levels))
    cache = config.cache_dir()
    passage_key = _digest(
        {
            "teacher": teacher.fingerprint,
            "max_length": teacher.passage_max_length,
            "texts": _texts_digest(passages),
        }
    )
    query_key = _digest(
        {
            "teacher": teacher.fingerprint,
            "max_length": config.max_query_length,
            "texts": _texts_digest(queries),
        }
    )
    candidate_key = _digest({"p": passage_key, "q": query_key, "k": config.candidates})
    passage_dir, query_dir = cache / "passages" / passage_key, cache / "queries" / query_key
    passage_vectors = _teacher_passages(teacher, passages, passage_dir, progress)
    query_vectors = _teacher_queries(teacher, queries, query_dir, progress)
    candidates = _mine(
        query_vectors,
        passage_vectors,
        config.candidates,
        cache / "candidates" / f"{candidate_key}.npy",
        config.threads,
    )
    tokenizer = teacher.tokenizer
    query_ids = tokenizer(queries, truncation=True, max_length=config.max_query_length)["input_ids"]
    data = {
        "root": str(root.resolve()),
        "sources": text.sources,
        "excluded_eval_overlap": text.excluded_eval_overlap,
        "queries_available": len(text.queries),
        "queries_used": len(queries),
        "passages_available": len(text.passages),
        "passage_pool": len(passages),
        "corpus_passages": {"datasets": list(config.corpus_passages), "texts": len(corpus)},
        "pseudo_queries": config.pseudo_queries,
        "pseudo_queries_used": len(queries) - real_queries,
        "passage_max_length": teacher.passage_max_length,
    }
    return Distillation(
        config=config,
        base_path=teacher.model_path,
        settings=teacher.settings,
        teacher_fingerprint=teacher.fingerprint,
        tokenizer=tokenizer,
        queries=queries,
        query_ids=query_ids,
        teacher_queries=torch.from_numpy(query_vectors).to(device),
        passages=torch.from_numpy(passage_vectors).to(device),
        candidates=candidates,
        keys={"passages": passage_key, "queries": query_key, "candidates": candidate_key},
        data=data,
        device=device,
    )


@functools.lru_cache(maxsize=2)
def _evaluation_questions(root: Path) -> frozenset[str]:
    """``evaluation_questions(root)``, read once per process: no pseudo-query may equal one."""
    from elasticir.train.data import evaluation_questions

    return frozenset(evaluation_questions(root))


@functools.lru_cache(maxsize=2)
def _training_text(root: Path) -> TrainingText:
    """``training_text(root)``, read once per process (a few seconds; runs share it)."""
    from elasticir.train.data import training_text

    return training_text(root)


def _select(
    config: DenserTrainConfig,
    text: TrainingText,
    corpus: Sequence[str] = (),
    banned: frozenset[str] = frozenset(),
) -> tuple[list[str], list[str]]:
    """The training queries and the passage pool, capped by seeded samples (order kept);
    then the ``corpus`` texts join the pool and the pseudo-queries the queries, except any
    whose normalised text is ``banned`` (the evaluation questions)."""

    def sample(items: list[str], cap: int | None, stream: int) -> list[str]:
        if cap is None or len(items) <= cap:
            return list(items)
        rng = np.random.default_rng([config.seed, stream])
        chosen = np.sort(rng.choice(len(items), size=cap, replace=False))
        return [items[i] for i in chosen]

    queries = sample(text.queries, config.max_queries, 1)
    passages = sample(text.passages, config.passage_pool_size, 2)
    if corpus:
        seen = set(passages)
        passages += [p for p in dict.fromkeys(corpus) if p not in seen]
    if not queries or not passages:
        raise ValueError("no training text found: the data folder has no queries or passages")
    if config.pseudo_queries:
        from elasticir.train.data import _norm  # how evaluation questions are normalised

        spans = pseudo_queries(passages, config.pseudo_queries, config.seed)
        queries = queries + [q for q in spans if _norm(q) not in banned]
    return queries, passages


def pseudo_queries(passages: Sequence[str], count: int, seed: int) -> list[str]:
    """``count`` word spans (``PSEUDO_QUERY_WORDS`` long, shorter only when the passage is)
    cut at seeded random places of seeded random ``passages``; deterministic for a seed."""
    rng = np.random.default_rng([seed, 4])
    words = [p.split() for p in passages]
    low, high = PSEUDO_QUERY_WORDS
    out = []
    for row, length, start in zip(
        rng.integers(len(words), size=count),
        rng.integers(low, high + 1, size=count),
        rng.random(count),
        strict=True,
    ):
        tokens = words[int(row)]
        take = min(int(length), len(tokens))
        first = int(start * (len(tokens) - take + 1))
        out.append(" ".join(tokens[first : first + take]))
    return out


def _corpus_texts(root: Path, names: Sequence[str], max_chars: int = 1500) -> list[str]:
    """The passage texts of the named datasets' corpora (title and text, as the index has
    them), whitespace-normalised and cut like the training passages."""
    from elasticir.data.corpus import iter_corpus
    from elasticir.data.datasets import get_dataset

    texts = []
    for name in names:
        dataset = get_dataset(name, root=root)
        if dataset.corpus is None:
            raise ValueError(f"corpus_passages: dataset {name!r} has no corpus file under {root}")
        for passage in iter_corpus(dataset.corpus):
            text = " ".join(passage.encoder_text().split())[:max_chars]
            if len(text) > 20:
                texts.append(text)
    return texts


def _teacher_passages(
    teacher: ElasticDenser, passages: list[str], directory: Path, progress: bool
) -> np.ndarray:
    from elasticir.index.store import EmbeddingStore, encode_corpus

    pool = directory / "pool.jsonl"
    if not pool.is_file():
        with atomic_file(pool) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for i, text in enumerate(passages):
                fh.write(json.dumps({"id": f"p{i}", "contents": text}, ensure_ascii=False) + "\n")
    store = directory / "embeddings"
    encode_corpus(pool, store, teacher, shard_size=1024, progress=progress)
    ids, vectors = EmbeddingStore(store).load()
    if ids != [f"p{i}" for i in range(len(passages))]:
        raise ValueError(
            f"{store}: cached passage vectors do not match the pool; delete {directory}"
        )
    return vectors


def _teacher_queries(
    teacher: ElasticDenser, queries: list[str], directory: Path, progress: bool
) -> np.ndarray:
    parts = []
    with progress_bar(progress, len(queries), "teacher queries") as advance:
        for number, start in enumerate(range(0, len(queries), QUERY_PART)):
            chunk = queries[start : start + QUERY_PART]
            path = directory / f"part-{number:05d}.npy"
            if not path.is_file():
                vectors = teacher.encode_queries(chunk)
                with atomic_file(path) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, vectors)
            part = np.load(path)
            if part.shape != (len(chunk), teacher.dim):
                raise ValueError(f"{path}: cached vectors have shape {part.shape}; delete it")
            parts.append(part)
            advance(len(chunk))
    return np.concatenate(parts)


def _mine(
    queries: np.ndarray, passages: np.ndarray, k: int, path: Path, threads: int | None
) -> np.ndarray:
    """Each query's top-``k`` pool rows by teacher inner product (exact FAISS search)."""
    if path.is_file():
        candidates = np.load(path)
        if candidates.shape == (len(queries), k):
            return candidates
    try:
        import faiss
    except ImportError:  # e.g. a GPU machine with torch but no FAISS: the same exact search
        candidates = _torch_top_k(queries, passages, k)
    else:
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        index = faiss.IndexFlatIP(passages.shape[1])
        index.add(np.ascontiguousarray(passages, dtype=np.float32))
        _, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        candidates = rows.astype(np.int64)
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, candidates)
    return candidates


def _torch_top_k(
    queries: np.ndarray, passages: np.ndarray, k: int, chunk: int = 4096
) -> np.ndarray:
    """Each query's top-``k`` passage rows by inner product, exact, best first (in torch,
    on the GPU when there is one)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    table = torch.from_numpy(np.ascontiguousarray(passages, dtype=np.float32)).to(device)
    out = []
    for start in range(0, len(queries), chunk):
        block = torch.from_numpy(np.ascontiguousarray(queries[start : start + chunk])).to(device)
        out.append((block.float() @ table.T).topk(k, dim=1).indices.cpu())
    return torch.cat(out).numpy().astype(np.int64)


def initial_student(
    config: DenserTrainConfig, distillation: Distillation
) -> tuple[torch.nn.Module, Importance]:
    """A copy of the base model, heads and neurons reordered by importance on training queries.

    The importance texts are the first ``importance_queries`` training queries of a seeded
    shuffle; the result is deterministic for a config.
    """
    from transformers import AutoModel

    with quiet_loading():
        model = AutoModel.from_pretrained(distillation.base_path)
    model.to(distillation.device).eval()
    rng = np.random.default_rng([config.seed, 3])
    picked = rng.permutation(len(distillation.queries))[: config.importance_queries]
    texts = [distillation.queries[int(i)] for i in picked]
    importance = compute_importance(
        model, distillation.tokenizer, texts, max_length=config.max_query_length
    )
    return model, reorder_(model, importance)


# --------------------------------------------------------------------------- training


def train_denser(
    config: DenserTrainConfig,
    progress: bool = True,
    on_step: Callable[[int, dict[str, dict[str, float]]], None] | None = None,
) -> Path:
    """Train the elastic query encoder of ``config``; returns the model directory.

    Resumable: rerunning the same config continues from ``<output>/checkpoint/state.pt``, and
    returns at once when ``<output>`` already holds the finished model. ``on_step(step,
    losses)`` is called after each optimizer step with ``{level: {"kl", "align", "total"}}``
    (an exception from it stops the run like a kill would).
    """
    output = config.output
    _check_output(config)
    with _threads(config.threads):
        distillation = prepare_distillation(config, progress)
        finished = _finished_key(output)
        if finished == distillation.key:
            return output
        if finished is not None:
            raise ValueError(
                f"{output} already holds a model trained with other settings; use another "
                "output directory (or delete that one)"
            )
        return _train(config, distillation, progress, on_step)


def _train(
    config: DenserTrainConfig,
    distillation: Distillation,
    progress: bool,
    on_step: Callable[[int, dict[str, dict[str, float]]], None] | None,
) -> Path:
    model, importance = initial_student(config, distillation)
    menu = level_menu(model.config, config.levels)
    model.train(config.dropout)  # dropout off by default: the full level starts at the teacher
    parameters = _trainable(model, config)
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config.steps, config.warmup))
    checkpoint = _Checkpoint(
        config.output / "checkpoint" / "state.pt", CHECKPOINT_FORMAT, distillation.key, config
    )
    step, seconds, history = checkpoint.resume(model, optimizer, scheduler)
    plan = _plan(config, menu)
    with _training_bar(progress, config.steps, step) as show:
        while step < config.steps:
            started = time.perf_counter()
            step += 1
            rows = distillation.batch(step)
            optimizer.zero_grad(set_to_none=True)
            record: dict[str, dict[str, float]] = {}
            for level in plan(step):
                loss = distillation.losses(model, rows, level)
                loss.total.backward()
                record[str(level)] = loss.values()
            lr = _optimizer_step(optimizer, scheduler, parameters, config.max_grad_norm)
            seconds += time.perf_counter() - started
            history.append({"step": step, "lr": lr, "losses": record})
            show(step, record)
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint.save(model, optimizer, scheduler, step, seconds, history)
            if on_step is not None:
                on_step(step, record)
    _write_model(config, distillation, model, importance, menu, seconds, history)
    shutil.rmtree(checkpoint.path.parent, ignore_errors=True)
    return config.output


def _plan(config: DenserTrainConfig, menu: tuple[Level, ...]) -> Callable[[int], list[Level]]:
    """The levels trained at each step: the sandwich (full, smallest, one random middle, plus
    the ``focus`` levels) or, for a static run, exactly the listed levels."""
    if not config.sandwich:
        static = [Level(lv) for lv in config.levels or ()]  # unique and canonical already
        return lambda step: static
    focus = _check_focus(config, menu)
    smallest = menu[-1]
    middle = [lv for lv in menu[1:-1] if lv not in focus]

    def sandwich(step: int) -> list[Level]:
        levels = [FULL] if len(menu) == 1 else [FULL, smallest]
        if middle:
            rng = np.random.default_rng([config.seed, 211, step])
            levels.insert(1, middle[int(rng.integers(len(middle)))])
        extra = [lv for lv in focus if lv not in levels]
        return levels[:1] + extra + levels[1:]

    return sandwich


def _check_focus(config: DenserTrainConfig, menu: tuple[Level, ...]) -> list[Level]:
    """``config.focus`` as levels, each one of ``menu``'s (else ``ValueError``)."""
    focus = [Level(lv) for lv in config.focus]
    missing = [str(lv) for lv in focus if lv not in menu]
    if missing:
        raise ValueError(
            f"focus level(s) {', '.join(missing)} not in the menu ({', '.join(map(str, menu))})"
        )
    return focus


def _trainable(model: torch.nn.Module, config: DenserTrainConfig) -> list[torch.nn.Parameter]:
    """Marks what is trained (all but the word embeddings, by default) and returns it."""
    trainable = []
    for name, parameter in model.named_parameters():
        frozen = "word_embeddings" in name and not config.train_word_embeddings
        parameter.requires_grad_(not frozen)
        if not frozen:
            trainable.append(parameter)
    return trainable


def _optimizer(model: torch.nn.Module, config: DenserTrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            no = name.endswith("bias") or "LayerNorm" in name
            (no_decay if no else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, foreach=True)


def _schedule(total: int, warmup: float) -> Callable[[int], float]:
    """Linear warm-up over ``warmup * total`` updates, then linear decay; never exactly 0."""
    warm = int(round(warmup * total))

    def factor(update: int) -> float:
        if update < warm:
            return (update + 1) / (warm + 1)
        return max(total - update, 1) / max(total - warm, 1)

    return factor


def _optimizer_step(
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    parameters: list[torch.nn.Parameter],
    max_grad_norm: float | None,
) -> float:
    """Clip the gradients of ``parameters`` (unless ``max_grad_norm`` is None), then step the
    optimizer and its schedule; returns the learning rate the step used."""
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    return lr


def _shuffled_rows(
    n: int,
    size: int,
    step: int,
    seed: tuple[int, ...],
    orders: dict[tuple[int, ...], np.ndarray],
) -> np.ndarray:
    """The ``size`` rows (of ``n``) of 1-based ``step``: consecutive slices of per-epoch
    shuffles, epoch ``e``'s drawn from ``(*seed, e)`` and kept in ``orders``."""
    positions = np.arange((step - 1) * size, step * size)
    rows = np.empty(size, dtype=np.int64)
    for epoch in np.unique(positions // n):
        key = (*seed, int(epoch))
        if key not in orders:
            orders[key] = np.random.default_rng(list(key)).permutation(n)
        inside = positions // n == epoch
        rows[inside] = orders[key][positions[inside] % n]
    return rows


# --------------------------------------------------------------------------- checkpoints and output


@dataclass(frozen=True)
class _Checkpoint:
    """A run's resumable state: ``path``, written with ``format`` and the run's ``key`` (what
    it trains on and with which settings), both of which a resume must match."""

    path: Path
    format: str
    key: str
    config: TrainConfigFile

    def resume(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> tuple[int, float, list[dict[str, Any]]]:
        """``(step, seconds, history)`` so far: restored with the model, optimizer, schedule
        and RNG states when the file exists, else ``(0, 0.0, [])`` with every RNG seeded."""
        if not self.path.is_file():
            _seed_everything(self.config.seed)
            return 0, 0.0, []
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state.get("format") != self.format or state.get("key") != self.key:
            raise ValueError(
                f"{self.path} was written by a run with other settings or data "
                f"({_config_difference(state.get('config'), self.config)}); rerun with those, "
                "or delete the checkpoint directory to start over"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_states(state["rng"])
        return int(state["step"]), float(state["seconds"]), state["history"]

    def save(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        step: int,
        seconds: float,
        history: list[dict[str, Any]],
    ) -> None:
        state = {
            "format": self.format,
            "key": self.key,
            "config": self.config.to_dict(),
            "step": step,
            "seconds": seconds,
            "history": history,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_states(),
        }
        with atomic_file(self.path) as tmp:
            torch.save(state, tmp)


def _rng_states() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_output(config: DenserTrainConfig) -> None:
    output = config.output
    check_training_output(output)
    if config.base_model is not None and Path(config.base_model).exists():
        if Path(config.base_model).resolve() == output.resolve():
            raise ValueError("the output directory is the base model's: choose another one")
    if (output / "config.json").is_file() and not (output / "elasticir.json").is_file():
        if not (output / "checkpoint").is_dir():
            raise ValueError(
                f"{output} holds a model that this command did not write; choose another "
                "output directory"
            )


def _finished_key(output: Path) -> str | None:
    manifest = output / "elasticir.json"
    if not manifest.is_file():
        return None
    training = json.loads(manifest.read_text(encoding="utf-8")).get("training")
    if not isinstance(training, dict):
        raise ValueError(
            f"{output} holds a model that this command did not train; choose another output"
        )
    return training.get("key")


def _final_losses(history: list[dict[str, Any]], steps: int) -> dict[str, dict[str, float]]:
    """Per level, the mean of its last ``max(1, steps // 10)`` recorded losses."""
    window = max(1, steps // 10)
    seen: dict[str, list[dict[str, float]]] = {}
    for entry in history:
        for level, values in entry["losses"].items():
            seen.setdefault(level, []).append(values)
    return {
        level: {
            name: float(np.mean([v[name] for v in values[-window:]]))
            for name in ("kl", "align", "total")
        }
        for level, values in seen.items()
    }


def _write_model(
    config: DenserTrainConfig,
    distillation: Distillation,
    model: torch.nn.Module,
    importance: Importance,
    menu: tuple[Level, ...],
    seconds: float,
    history: list[dict[str, Any]],
) -> None:
    """Weights, tokenizer and log first, each file renamed into place; ``elasticir.json``
    (the mark of a finished model) last."""
    output = config.output
    output.mkdir(parents=True, exist_ok=True)
    staging = output / f".tmp-model.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.eval()
    model.save_pretrained(staging)
    distillation.tokenizer.save_pretrained(staging)
    with open(staging / "training-log.jsonl", "w", encoding="utf-8") as fh:
        for entry in history:
            fh.write(json.dumps(entry) + "\n")
    for item in staging.iterdir():
        os.replace(item, output / item.name)
    shutil.rmtree(staging, ignore_errors=True)
    settings = distillation.settings
    manifest = {
        "levels": [str(level) for level in menu],
        "pooling": settings.pooling,
        "normalize": settings.normalize,
        "max_length": settings.max_length,
        "passage_encoder": {
            "model": config.base_model_name(),
            "fingerprint": distillation.teacher_fingerprint,
        },
        "elastic": {
            "reordered": True,
            "importance_texts": importance.num_texts,
            "importance_tokens": importance.num_tokens,
            "importance_max_length": config.max_query_length,
            "source_model": config.base_model_name(),
        },
        "training": {
            "method": "sandwich" if config.sandwich else "static",
            "trained_levels": (
                "sandwich over levels"
                + (f", plus {', '.join(config.focus)} at every step" if config.focus else "")
            )
            if config.sandwich
            else list(config.levels or ()),
            "key": distillation.key,
            "config": config.to_dict(),
            "data": distillation.data,
            "steps": config.steps,
            "seed": config.seed,
            "seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / max(1, len(history)), 3),
            "torch_threads": torch.get_num_threads(),
            "final_losses": _final_losses(history, config.steps),
        },
    }
    with atomic_file(output / "elasticir.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o644)  # like the files save_pretrained writes (a temporary file is 0600)


# --------------------------------------------------------------------------- measuring


def query_agreement(
    student: ElasticDenser,
    teacher: ElasticDenser,
    queries: Sequence[str],
    levels: Sequence[Level | str] | None = None,
) -> dict[str, float]:
    """Mean cosine between ``student``'s query vectors at each level and ``teacher``'s at full.

    The teacher is the model whose full-compute space the index lives in (for a trained
    model, its passage encoder). 1.0 means a level's queries land where the full model's do.
    """
    reference = torch.from_numpy(teacher.encode_queries(list(queries)))
    out: dict[str, float] = {}
    for level in levels if levels is not None else student.levels:
        vectors = torch.from_numpy(student.encode_queries(list(queries), level=level))
        out[str(Level(level))] = float(F.cosine_similarity(vectors, reference, dim=-1).mean())
    return out


# --------------------------------------------------------------------------- small helpers


def _device(config: DenserTrainConfig) -> torch.device:
    if config.device is not None:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _texts_digest(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _config_difference(saved: object, config: TrainConfigFile) -> str:
    if not isinstance(saved, dict):
        return "no readable config"
    now = config.training_fields()
    differ = [
        f"{name}: {saved.get(name)!r} there, {value!r} now"
        for name, value in now.items()
        if saved.get(name) != value
    ]
    return "; ".join(differ) or "same settings, other training data or base model"


@contextmanager
def _training_bar(
    enabled: bool, total: int, done: int
) -> Iterator[Callable[[int, dict[str, dict[str, float]]], None]]:
    """A bar over the steps showing each level's latest loss (kl + weighted align)."""
    latest: dict[str, float] = {}
    shown = [done]
    with progress_bar(enabled, total, "training", completed=done) as advance:

        def show(step: int, record: dict[str, dict[str, float]]) -> None:
            for level, values in record.items():
                latest[level] = values["total"]
            text = "  ".join(f"{level} {value:.4f}" for level, value in latest.items())
            advance(step - shown[0], status=text)
            shown[0] = step

        yield show
