"""The net ranker training starts from: :func:`initial_net`, or a trained ranker's.

The model starts from the base encoder with heads and FFN neurons ranked by importance on
training pairs and reordered (so each width is a prefix), exit heads initialised from its
pooler. With ``init_from`` it starts from a trained ranker instead (its neurons already
ordered, its exit heads and levels kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from elasticir.compute.levels import Level
from elasticir.models.elastic import Importance, compute_importance, reorder_
from elasticir.models.loading import quiet_loading, resolve_model_path
from elasticir.models.ranker import RankerNet, encode_pairs, pad_batch

if TYPE_CHECKING:
    from elasticir.train.ranker.config import RankerTrainConfig
    from elasticir.train.ranker.data import TrainingGroups

__all__ = ["initial_net", "start_net"]


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
        input_ids, token_types, mask = pad_batch(
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


def start_net(
    config: RankerTrainConfig, groups: TrainingGroups, device: torch.device | str
) -> tuple[RankerNet, Any, Importance | None, tuple[Level, ...] | None]:
    """The net training starts from: :func:`initial_net`, or with ``init_from`` a trained
    ranker's (its neurons already ordered, its exit heads and levels kept)."""
    if config.init_from is None:
        net, tokenizer, importance = initial_net(config, groups, device)
        return net, tokenizer, importance, None
    from elasticir.models.ranker import ElasticRanker

    ranker = ElasticRanker(config.init_from, device=str(device))
    if ranker.fingerprint != groups.data["init_from"]["fingerprint"]:
        raise ValueError(f"{config.init_from} changed while this run was being set up")
    return ranker.net, ranker.tokenizer, None, tuple(ranker.levels)
