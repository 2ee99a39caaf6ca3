"""DiPair's training problem, fixed for a run (:func:`prepare_dipair_data`), and its batches.

The selected groups (:mod:`elasticir.train.dipair.groups`), their teacher targets
(:mod:`elasticir.train.dipair.teacher`) and the frozen encoder's token outputs of every text
(:mod:`elasticir.train.dipair.frozen`), all keyed into the run's key.

Each step takes ``batch_size`` groups and, from each, one positive (slot 0) and up to
``group_size - 1`` negatives, drawn from generators seeded by ``(seed, stage, step)``; the
student's scores of them go into the loss of :mod:`elasticir.train.losses.dipair`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from elasticir.models.dipair import DiPairHead, token_states
from elasticir.train.core import choose_device, shuffled_rows
from elasticir.train.dipair.config import DiPairTrainConfig
from elasticir.train.dipair.frozen import base_encoder, frozen_states, resolved_config
from elasticir.train.dipair.groups import kept_members, select_groups
from elasticir.train.dipair.teacher import teacher_targets
from elasticir.train.keys import digest, texts_digest
from elasticir.train.losses.dipair import dipair_losses

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser
    from elasticir.train.dipair.teacher import Teacher

__all__ = ["DiPairData", "StepBatch", "prepare_dipair_data"]


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
        groups = shuffled_rows(n, size, step, (config.seed, 101, stage), self._orders)
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
        return dipair_losses(
            scores, batch.teacher, batch.mask, batch.labelled, config.ce_weight, config.kl_weight
        )


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
    groups, stats = select_groups(config, root, progress)
    if encoder is None:
        encoder = base_encoder(config)
    model_config = resolved_config(config, encoder)
    queries = list(dict.fromkeys(g.query for g in groups))
    query_row = {text: i for i, text in enumerate(queries)}
    passage_row: dict[str, int] = {}
    group_passages, group_positives, kept = [], [], []
    for number, group in enumerate(groups):
        members = kept_members(config, group, number)
        kept.append(members)
        rows = [passage_row.setdefault(group.passages[i], len(passage_row)) for i in members]
        group_passages.append(np.asarray(rows, dtype=np.int64))
        group_positives.append(sum(group.labels[i] for i in members))
    passages = list(passage_row)
    teacher_logits, teacher_stats = teacher_targets(
        config, groups, kept, queries, passages, teacher, progress
    )
    device = choose_device(config.device)
    cache = config.cache_dir() / "dipair"
    fingerprint = encoder.own_fingerprint
    residual = config.residual
    q_states, q_lengths, q_vectors = frozen_states(
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
    p_states, p_lengths, p_vectors = frozen_states(
        encoder, passages, cache, passage_max_length, config.k, "passages", progress, residual
    )
    tokenizer = encoder.tokenizer
    query_ids = tokenizer(queries, truncation=True, max_length=config.query_max_length)["input_ids"]
    passage_ids = tokenizer(passages, truncation=True, max_length=passage_max_length)["input_ids"]
    data_digest = digest(
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
            "queries": texts_digest(queries),
            "passages": texts_digest(passages),
        }
    )
    key = digest(
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
