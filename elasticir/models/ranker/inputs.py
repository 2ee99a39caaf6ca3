"""The ranker's inputs: query-passage pairs as token ids, in padded batches.

A pair reads ``[CLS] query [SEP] passage [SEP]`` (token types 0 / 1), or for the pooled head
``[CLS] query [SEP] [CLS] passage [SEP]`` (types marking the segments), at most
``max_length`` tokens (``DEFAULT_MAX_LENGTH`` unless a ranker directory says otherwise).
Pairs are batched longest first, each batch padded only to its own longest pair.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["DEFAULT_MAX_LENGTH", "batches_by_length", "encode_pairs", "pad_batch"]

DEFAULT_MAX_LENGTH = 256


def encode_pairs(
    tokenizer: Any,
    queries: Sequence[str],
    passages: Sequence[str],
    max_length: int,
    types: bool,
    pooled: bool = False,
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and token types of ``[CLS] query [SEP] passage [SEP]`` for each pair.

    Each distinct text is tokenized once. The passage is truncated first: the query keeps its
    tokens unless it would leave a long passage less than half of the ``max_length - 3``
    tokens of room, and the passage takes what is left. ``types=False`` (a model with one token
    type) gives zeros throughout. ``pooled=True`` gives the pooled head's layout,
    ``[CLS] query [SEP] [CLS] passage [SEP]`` (room ``max_length - 4``), whose types mark the
    segments (0 query, 1 passage) whatever ``types`` says.
    """
    if len(queries) != len(passages):
        raise ValueError(f"{len(queries)} queries for {len(passages)} passages: pair them up")
    if max_length < 8:
        raise ValueError(f"max_length must be at least 8, got {max_length}")
    room = max_length - (4 if pooled else 3)

    def ids_of(texts: Sequence[str]) -> dict[str, list[int]]:
        unique = list(dict.fromkeys(texts))
        if not unique:
            return {}
        encoded = tokenizer(unique, add_special_tokens=False, truncation=True, max_length=room)
        return dict(zip(unique, encoded["input_ids"]))

    query_ids, passage_ids = ids_of(queries), ids_of(passages)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls is None or sep is None:
        raise ValueError("the ranker needs a tokenizer with [CLS] and [SEP] tokens (BERT-style)")
    all_ids, all_types = [], []
    for query, passage in zip(queries, passages):
        q, p = query_ids[query], passage_ids[passage]
        q = q[: room - min(len(p), room // 2)]
        p = p[: room - len(q)]
        if pooled:
            all_ids.append([cls, *q, sep, cls, *p, sep])
            all_types.append([0] * (len(q) + 2) + [1] * (len(p) + 2))
            continue
        all_ids.append([cls, *q, sep, *p, sep])
        second = 1 if types else 0
        all_types.append([0] * (len(q) + 2) + [second] * (len(p) + 1))
    return all_ids, all_types


def batches_by_length(lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Row indices of batches of at most ``batch_size`` pairs, longest first (stable)."""
    # Longest first, stable (as ElasticDenser): each batch pads only to its own longest pair,
    # and the batches depend on nothing but the inputs.
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def pad_batch(
    ids: list[list[int]], types: list[list[int]], rows: np.ndarray, pad_id: int, device: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, token types and attention mask ``(rows, longest)`` of pairs ``rows`` of
    ``ids`` / ``types``, padded with ``pad_id``, on ``device``."""
    longest = max(len(ids[r]) for r in rows)
    input_ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    token_types = np.zeros((len(rows), longest), dtype=np.int64)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for j, r in enumerate(rows):
        n = len(ids[r])
        input_ids[j, :n], token_types[j, :n], mask[j, :n] = ids[r], types[r], 1
    return (
        torch.from_numpy(input_ids).to(device),
        torch.from_numpy(token_types).to(device),
        torch.from_numpy(mask).to(device),
    )
