"""Encoder outputs for DiPair: each text's first token vectors (and sentence embedding).

Both texts are encoded *independently* by the bi-encoder's Hugging Face model at full compute;
of each output only the first few token vectors are kept, projected by the head's projection
for that side (:func:`encoder_token_outputs`, inference) or not (:func:`token_states`, the
end-to-end training path, gradients flowing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser

__all__ = ["EncodedTexts", "encoder_token_outputs", "token_states"]


class EncodedTexts(NamedTuple):
    """What :func:`encoder_token_outputs` returns for ``n`` texts."""

    tokens: np.ndarray  # (n, keep, d) float32, zeros beyond each text
    lengths: np.ndarray  # (n,) int32: min(tokens of the text, keep)
    vectors: np.ndarray | None  # (n, hidden) float32 sentence embeddings, when asked for


def encoder_token_outputs(
    encoder: ElasticDenser,
    texts: Sequence[str],
    *,
    max_length: int,
    keep: int,
    project: nn.Module | None = None,
    vectors: bool = False,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> EncodedTexts:
    """The first ``keep`` token outputs of each text (and, with ``vectors``, its sentence
    embedding: the encoder's pooling over all its tokens, from the same forward pass).

    The encoder (``encoder.model`` at full compute) reads up to ``max_length`` tokens; its
    last layer's first ``keep`` vectors are kept, passed through ``project`` when given
    (``d`` is then its output size, else the hidden size). Rows beyond a text's length are
    zeros and ``lengths[i] = min(tokens of text i, keep)``. Batches are sorted by length, as
    :class:`~elasticir.models.denser.ElasticDenser` does.
    """
    model, tokenizer = encoder.model, encoder.tokenizer
    hidden_size = width = int(model.config.hidden_size)
    if project is not None:
        width = int(project.out_features)
    out = np.zeros((len(texts), keep, width), dtype=np.float32)
    lengths = np.zeros(len(texts), dtype=np.int32)
    pooled = np.zeros((len(texts), hidden_size), dtype=np.float32) if vectors else None
    if len(texts) == 0:
        return EncodedTexts(out, lengths, pooled)
    input_ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    for rows in encoder._batches(input_ids, batch_size or encoder.batch_size):
        batch = tokenizer.pad({"input_ids": [input_ids[i] for i in rows]}, return_tensors="pt").to(
            encoder.device
        )
        with torch.inference_mode(), encoder._autocast():
            full = model(**batch).last_hidden_state
            if pooled is not None:
                pooled[rows] = encoder._pool(full.float(), batch["attention_mask"]).cpu().numpy()
            hidden = full[:, :keep].float()
            mask = batch["attention_mask"][:, :keep].unsqueeze(-1).to(hidden.dtype)
            if project is not None:
                hidden = project(hidden)
            hidden = hidden * mask
        out[rows, : hidden.shape[1]] = hidden.float().cpu().numpy()
        lengths[rows] = [min(len(input_ids[i]), keep) for i in rows]
        if progress is not None:
            progress(len(rows))
    return EncodedTexts(out, lengths, pooled)


def token_states(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    keep: int,
    pooling: tuple[str, bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(B, keep, hidden)`` first token outputs of a padded batch, zeros beyond the text
    (gradients flow: the end-to-end training path), and with ``pooling`` (``(pooling,
    normalize)`` of the encoder) the sentence embeddings ``(B, hidden)``, else None."""
    from elasticir.models.denser import pool

    full = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    hidden = full[:, :keep] * attention_mask[:, :keep].unsqueeze(-1).to(full.dtype)
    if hidden.shape[1] < keep:
        hidden = nn.functional.pad(hidden, (0, 0, 0, keep - hidden.shape[1]))
    vectors = None if pooling is None else pool(full, attention_mask, *pooling)
    return hidden, vectors
