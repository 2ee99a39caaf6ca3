"""The DiPair head: projections of truncated token outputs and a small Transformer on them.

Of each text's encoder output only the first few token vectors are kept (``query_tokens`` of
the query, ``k`` of the passage, [CLS] included), each projected to ``dim`` dimensions by a
learned linear map (one for each side). A small Transformer head reads the sequence

    [SCORE] q_1 .. q_kq  p_1 .. p_k        (learned position and segment embeddings)

and a linear layer on the [SCORE] position gives the pair's score. Padding (texts shorter than
``query_tokens`` / ``k`` tokens) is masked out of attention.

A *residual* model (``DiPairConfig.residual``) adds the bi-encoder's own similarity to that
score: ``score = head(...) + scale * cos(q, p)``, where ``q`` and ``p`` are the encoder's
sentence embeddings of the whole texts (its own pooling, before truncation) and ``scale`` is
learned. The head's output layer starts at zero, so an untrained residual model ranks exactly
as the bi-encoder does and training learns a correction on top of it. The token cache then
also stores each passage's sentence embedding (float16).
"""

from __future__ import annotations

import torch
from torch import nn

from elasticir.models.dipair.config import DiPairConfig

__all__ = ["DiPairHead"]

# Segment ids of the head's input sequence.
_SCORE, _QUERY, _PASSAGE = 0, 1, 2


class DiPairHead(nn.Module):
    """The two projections (encoder hidden size -> ``dim``) and the small Transformer head."""

    def __init__(self, hidden_size: int, config: DiPairConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        self.query_projection = nn.Linear(hidden_size, dim)
        self.passage_projection = nn.Linear(hidden_size, dim)
        self.score_token = nn.Parameter(torch.empty(dim))
        self.positions = nn.Embedding(1 + config.query_tokens + config.k, dim)
        self.segments = nn.Embedding(3, dim)
        self.input_norm = nn.LayerNorm(dim)
        layer = nn.TransformerEncoderLayer(
            dim,
            config.heads,
            config.ffn_size,
            config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(
            layer, config.layers, enable_nested_tensor=False, norm=nn.LayerNorm(dim)
        )
        self.score = nn.Linear(dim, 1)
        for table in (self.positions.weight, self.segments.weight, self.score_token):
            nn.init.normal_(table, std=0.02)
        if config.residual:
            # Starts as the bi-encoder: a zero correction on top of cos / 0.05.
            nn.init.zeros_(self.score.weight)
            nn.init.zeros_(self.score.bias)
            self.residual_scale = nn.Parameter(torch.tensor(20.0))
        sequence = torch.tensor(
            [_SCORE] + [_QUERY] * config.query_tokens + [_PASSAGE] * config.k, dtype=torch.long
        )
        self.register_buffer("segment_ids", sequence, persistent=False)
        self.register_buffer(
            "position_ids", torch.arange(len(sequence), dtype=torch.long), persistent=False
        )

    def forward(
        self,
        query: torch.Tensor,
        query_lengths: torch.Tensor,
        passages: torch.Tensor,
        passage_lengths: torch.Tensor,
        similarity: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores ``(B,)`` of projected ``query`` ``(B or 1, kq, dim)`` and ``passages``
        ``(B, k, dim)``; a single query row is shared by every passage. Positions at or beyond
        a text's length are padding: masked, whatever they hold. A residual head also takes
        the bi-encoder's ``similarity`` ``(B,)`` of each pair (and only a residual head)."""
        config = self.config
        if config.residual != (similarity is not None):
            raise ValueError(
                "a residual DiPair head needs the pairs' bi-encoder similarity"
                if config.residual
                else "this DiPair head is not residual: it takes no similarity"
            )
        batch = passages.shape[0]
        expected_q, expected_p = (config.query_tokens, config.dim), (config.k, config.dim)
        if tuple(query.shape[1:]) != expected_q or tuple(passages.shape[1:]) != expected_p:
            raise ValueError(
                f"DiPair head takes queries (n, {config.query_tokens}, {config.dim}) and "
                f"passages (n, {config.k}, {config.dim}), got {tuple(query.shape)} and "
                f"{tuple(passages.shape)}"
            )
        query_lengths = query_lengths.reshape(-1).to(passages.device)
        if query.shape[0] == 1 and batch != 1:
            query = query.expand(batch, -1, -1)
            query_lengths = query_lengths.expand(batch)
        score = self.score_token.expand(batch, 1, -1)
        x = torch.cat([score, query.to(passages.dtype), passages], dim=1)
        x = x + self.positions(self.position_ids) + self.segments(self.segment_ids)
        x = self.input_norm(x)
        q_pad = torch.arange(config.query_tokens, device=x.device) >= query_lengths[:, None]
        p_pad = torch.arange(config.k, device=x.device) >= passage_lengths.to(x.device)[:, None]
        keep_score = torch.zeros(batch, 1, dtype=torch.bool, device=x.device)
        padding = torch.cat([keep_score, q_pad, p_pad], dim=1)
        if self.training:
            pooled = self.layers(x, src_key_padding_mask=padding)[:, 0]
        else:
            pooled = self._score_state(x, padding)
        out = self.score(pooled).squeeze(-1)
        if similarity is not None:
            out = out + self.residual_scale * similarity.reshape(-1).to(out.dtype)
        return out

    def _score_state(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """The [SCORE] position's final state ``(B, dim)``: what ``self.layers`` computes
        (pre-norm layers, no dropout), minus work whose result is never read.

        Columns that are padding in every row (a short query's unused slots, passages all
        shorter than ``k``) are dropped: they are masked as keys, so no other position sees
        them. In the last layer only the [SCORE] row is computed (its query projection,
        attention row and feed-forward); the other rows only give keys and values. Same
        scores as the module path to float rounding (tested), about half its time on CPU.
        """
        keep = ~padding
        columns = keep.any(dim=0)
        if not bool(columns.all()):
            x, keep = x[:, columns], keep[:, columns]
        mask = keep[:, None, None, :]
        *inner, last = self.layers.layers
        for layer in inner:
            states = layer.norm1(x)
            x = _feed_forward(layer, x + _attention(layer, states, states, mask))
        states = last.norm1(x)
        first = x[:, :1] + _attention(last, states[:, :1], states, mask)
        return self.layers.norm(_feed_forward(last, first)[:, 0])


def _attention(
    layer: nn.TransformerEncoderLayer, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``layer.self_attn`` of ``queries`` ``(B, m, d)`` over ``keys`` ``(B, n, d)`` (the same
    normalised states, or their first rows), ``mask`` ``(B, 1, 1, n)`` True where attended."""
    attn = layer.self_attn
    batch, length, width = keys.shape
    heads = attn.num_heads
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    q = nn.functional.linear(queries, weight[:width], bias[:width])
    q = q.view(batch, -1, heads, width // heads).transpose(1, 2)
    kv = nn.functional.linear(keys, weight[width:], bias[width:])
    kv = kv.view(batch, length, 2, heads, width // heads).permute(2, 0, 3, 1, 4)
    out = nn.functional.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)
    return attn.out_proj(out.transpose(1, 2).reshape(batch, -1, width))


def _feed_forward(layer: nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    """The pre-norm feed-forward block of ``layer`` with its residual (GELU, no dropout)."""
    return x + layer.linear2(nn.functional.gelu(layer.linear1(layer.norm2(x))))
