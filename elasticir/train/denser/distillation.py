"""The teacher's side of ElasticDenser's training: :func:`prepare_distillation`.

The frozen original model encodes the training queries and the passage pool at full compute
(the index space), and each query's top-k pool passages are mined with those vectors. Where it
keeps them (``<cache>`` is ``<output>/cache`` unless the config names another)::

    cache/passages/<key>/    the passage pool (pool.jsonl) and its teacher vectors, an
                             EmbeddingStore encoded once by the frozen model at full (resumable)
    cache/queries/<key>/     the training queries' teacher vectors, one .npy per 2,048 queries
    cache/candidates/<key>.npy  each query's top-k pool passages (FAISS flat, teacher vectors)

Caches are keyed by what they depend on (teacher fingerprint, texts, lengths), so several
outputs may share one ``cache`` directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from elasticir.compute.levels import Level
from elasticir.data.files import atomic_file
from elasticir.models.elastic import elastic_forward, level_menu
from elasticir.models.loading import EncoderSettings
from elasticir.progress import progress_bar
from elasticir.train.core import choose_device, shuffled_rows
from elasticir.train.denser.config import DenserTrainConfig, check_focus
from elasticir.train.denser.texts import (
    cached_evaluation_questions,
    cached_training_text,
    corpus_texts,
    select_texts,
)
from elasticir.train.keys import digest, texts_digest
from elasticir.train.losses.listwise import LevelLoss, level_loss
from elasticir.train.mining import mine_candidates

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser

__all__ = ["QUERY_PART", "Distillation", "pool", "prepare_distillation"]

QUERY_PART = 2048  # teacher query vectors are cached in parts of this many queries


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
        return digest({"data": self.keys, "config": self.config.training_fields()})

    def batch(self, step: int) -> np.ndarray:
        """Query rows of 1-based ``step``: consecutive slices of seeded per-epoch shuffles."""
        config = self.config
        return shuffled_rows(
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
        config = self.config
        return level_loss(student, teacher, passages, config.temperature, config.align_weight)


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
    from elasticir.models.denser import ElasticDenser

    root = Path(config.data_root if config.data_root is not None else find_data_root())
    text = cached_training_text(root.resolve())
    corpus = corpus_texts(root, config.corpus_passages)
    # a pseudo-query never equals a question we report on
    banned = cached_evaluation_questions(root.resolve()) if config.pseudo_queries else frozenset()
    queries, passages = select_texts(config, text, corpus, banned)
    real_queries = min(len(text.queries), config.max_queries or len(text.queries))
    if config.candidates > len(passages):
        raise ValueError(
            f"candidates={config.candidates} per query, but the passage pool has only "
            f"{len(passages)} passages"
        )
    device = choose_device(config.device)
    teacher = ElasticDenser(
        config.base_model,
        device=str(device),
        batch_size=32,
        query_max_length=config.max_query_length,
        passage_max_length=config.passage_max_length,
    )
    if config.focus:  # a wrong focus level fails now, not after the teacher's encoding
        check_focus(config, level_menu(teacher.model.config, config.levels))
    cache = config.cache_dir()
    passage_key = digest(
        {
            "teacher": teacher.fingerprint,
            "max_length": teacher.passage_max_length,
            "texts": texts_digest(passages),
        }
    )
    query_key = digest(
        {
            "teacher": teacher.fingerprint,
            "max_length": config.max_query_length,
            "texts": texts_digest(queries),
        }
    )
    candidate_key = digest({"p": passage_key, "q": query_key, "k": config.candidates})
    passage_dir, query_dir = cache / "passages" / passage_key, cache / "queries" / query_key
    passage_vectors = _teacher_passages(teacher, passages, passage_dir, progress)
    query_vectors = _teacher_queries(teacher, queries, query_dir, progress)
    candidates = mine_candidates(
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
