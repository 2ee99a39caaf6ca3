"""DiPair: a fast pair scorer over truncated, projected token outputs (EMNLP 2020, adapted).

Both texts are encoded *independently* by the bi-encoder's Hugging Face model at full compute.
Of each output only the first few token vectors are kept (``query_tokens`` of the query,
``k`` of the passage, [CLS] included), each projected to ``dim`` dimensions by a learned
linear map (one for each side). A small Transformer head reads the sequence

    [SCORE] q_1 .. q_kq  p_1 .. p_k        (learned position and segment embeddings)

and a linear layer on the [SCORE] position gives the pair's score. Padding (texts shorter than
``query_tokens`` / ``k`` tokens) is masked out of attention.

A *residual* model (``DiPairConfig.residual``) adds the bi-encoder's own similarity to that
score: ``score = head(...) + scale * cos(q, p)``, where ``q`` and ``p`` are the encoder's
sentence embeddings of the whole texts (its own pooling, before truncation) and ``scale`` is
learned. The head's output layer starts at zero, so an untrained residual model ranks exactly
as the bi-encoder does and training learns a correction on top of it. The token cache then
also stores each passage's sentence embedding (float16).

Passages are encoded once, at indexing time, into a token cache
(:mod:`elasticir.rerank.token_cache`: ``(k, dim)`` float16 per passage). At query time the
query is encoded once and every candidate is scored from the cache in one batched call of
the head, which costs a tiny fraction of a cross-encoder's forward pass.

A DiPair model is one directory::

    elasticir.json       {"kind": "dipair", "k", "query_tokens", "dim", "head": {...},
                          "encoder": {"model", "fingerprint", ...}, "training": {...}}
    dipair.safetensors   the two projections and the head
    encoder/             the fine-tuned encoder (only when training changed it; otherwise
                         "encoder" names the base model and its weights' fingerprint)

``elasticir.json`` is written last: a directory without it is not a finished model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import nn

from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.files import atomic_file
from elasticir.rerank.pipeline import Reranker
from elasticir.train.config import check_int

if TYPE_CHECKING:
    from elasticir.data.records import Passage, Query, Run
    from elasticir.encoders.denser import ElasticDenser
    from elasticir.index.store import EncodeReport
    from elasticir.rerank.token_cache import TokenCache

__all__ = [
    "DIPAIR_KIND",
    "DiPair",
    "DiPairConfig",
    "DiPairHead",
    "DiPairScorer",
    "EncodedTexts",
    "encoder_token_outputs",
    "read_manifest",
]

DIPAIR_KIND = "dipair"
WEIGHTS_FILE = "dipair.safetensors"
MANIFEST_FILE = "elasticir.json"
ENCODER_DIR = "encoder"
# Segment ids of the head's input sequence.
_SCORE, _QUERY, _PASSAGE = 0, 1, 2


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class DiPairConfig:
    """The shape of a DiPair model.

    ``k`` passage tokens and ``query_tokens`` query tokens are kept (first ones, [CLS]
    included), projected to ``dim``; the head has ``layers`` pre-norm Transformer layers of
    width ``dim`` with ``heads`` attention heads and a feed-forward size of ``ffn``
    (``None``: ``4 * dim``). ``query_max_length`` / ``passage_max_length`` are how many tokens
    the encoder reads before its outputs are truncated (``None``: the encoder's own passage
    length, resolved when a model is created). ``residual`` adds the bi-encoder's similarity
    to the head's score (see the module docstring).
    """

    k: int = 32
    query_tokens: int = 16
    dim: int = 64
    layers: int = 2
    heads: int = 4
    ffn: int | None = None
    dropout: float = 0.1
    query_max_length: int = 64
    passage_max_length: int | None = None
    residual: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.residual, bool):
            raise ValueError(f"residual must be true or false, got {self.residual!r}")
        for name in ("k", "query_tokens", "dim", "layers", "heads", "query_max_length"):
            check_int(name, getattr(self, name))
        for name in ("ffn", "passage_max_length"):
            check_int(name, getattr(self, name), optional=True)
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.query_tokens > self.query_max_length:
            raise ValueError(
                f"query_tokens ({self.query_tokens}) cannot exceed query_max_length "
                f"({self.query_max_length})"
            )
        if self.passage_max_length is not None and self.k > self.passage_max_length:
            raise ValueError(
                f"k ({self.k}) cannot exceed passage_max_length ({self.passage_max_length})"
            )

    @property
    def ffn_size(self) -> int:
        return self.ffn if self.ffn is not None else 4 * self.dim

    def head_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "heads": self.heads,
            "ffn": self.ffn_size,
            "dropout": self.dropout,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """What fingerprints and training keys hash: :meth:`to_dict` without ``residual``
        when it is off, so plain models keep the fingerprints they had before it existed."""
        values = self.to_dict()
        if not values["residual"]:
            del values["residual"]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DiPairConfig:
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DiPair setting(s) {', '.join(unknown)}")
        return cls(**values)


# --------------------------------------------------------------------------- the head


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


# --------------------------------------------------------------------------- encoder outputs


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
    :class:`~elasticir.encoders.denser.ElasticDenser` does.
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
    from elasticir.encoders.denser import pool

    full = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    hidden = full[:, :keep] * attention_mask[:, :keep].unsqueeze(-1).to(full.dtype)
    if hidden.shape[1] < keep:
        hidden = nn.functional.pad(hidden, (0, 0, 0, keep - hidden.shape[1]))
    vectors = None if pooling is None else pool(full, attention_mask, *pooling)
    return hidden, vectors


# --------------------------------------------------------------------------- the model


class DiPair:
    """A DiPair model ready to score: the encoder, the projections and the head.

    Create an untrained one with :meth:`create`, read a trained one with :meth:`load`. The
    object holds no per-call state; scoring runs under ``torch.inference_mode``.
    """

    def __init__(
        self,
        encoder: ElasticDenser,
        head: DiPairHead,
        config: DiPairConfig,
        *,
        encoder_spec: Mapping[str, Any] | None = None,
        manifest: Mapping[str, Any] | None = None,
        path: Path | None = None,
        batch_size: int = 1024,
    ) -> None:
        if config.passage_max_length is None:
            raise ValueError("DiPair needs a resolved passage_max_length (use DiPair.create)")
        self.encoder = encoder
        self.head = head.to(encoder.device).eval()
        self.config = config
        self.encoder_spec = dict(encoder_spec or _encoder_spec(encoder))
        self.manifest = dict(manifest or {})
        self.path = path
        self.batch_size = batch_size
        self._fingerprint: str | None = None

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        config: DiPairConfig | None = None,
        encoder: ElasticDenser | None = None,
        *,
        seed: int = 13,
        device: str | None = None,
    ) -> DiPair:
        """An untrained DiPair over ``encoder`` (default: the packaged all-MiniLM-L6-v2),
        head weights drawn from ``seed``."""
        from elasticir.encoders.denser import ElasticDenser

        config = config or DiPairConfig()
        if encoder is None:
            encoder = ElasticDenser(device=device)
        config = resolve_config(config, encoder)
        _check_lengths(encoder, config)
        generator_state = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            head = DiPairHead(int(encoder.model.config.hidden_size), config)
        finally:
            torch.set_rng_state(generator_state)
        return cls(encoder, head, config)

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None, batch_size: int = 1024) -> DiPair:
        """Read a DiPair directory (see the module docstring)."""
        from safetensors.torch import load_file

        from elasticir.encoders.denser import ElasticDenser

        path = Path(path)
        manifest = read_manifest(path)
        config = _config_from_manifest(path, manifest)
        spec = manifest["encoder"]
        location = _encoder_location(path, spec["model"])
        encoder = ElasticDenser(
            location,
            device=device,
            query_max_length=config.query_max_length,
            passage_max_length=config.passage_max_length,
        )
        if encoder.own_fingerprint != spec["fingerprint"]:
            raise ValueError(
                f"{path}: the DiPair head was trained on encoder {spec['model']!r} with "
                f"fingerprint {spec['fingerprint']}, but that model now has fingerprint "
                f"{encoder.own_fingerprint} (other weights)"
            )
        head = DiPairHead(int(encoder.model.config.hidden_size), config)
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise MissingResourceError(f"{path}: no {WEIGHTS_FILE}; the model is incomplete")
        state = load_file(str(weights))
        try:
            head.load_state_dict(state)
        except RuntimeError as err:
            raise InputFormatError(
                weights, None, "the weights of this DiPair head", str(err)
            ) from err
        return cls(
            encoder,
            head,
            config,
            encoder_spec=spec,
            manifest=manifest,
            path=path,
            batch_size=batch_size,
        )

    # -- description -----------------------------------------------------------------------
    @property
    def k(self) -> int:
        return self.config.k

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def query_tokens(self) -> int:
        return self.config.query_tokens

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    @property
    def fingerprint(self) -> str:
        """Identifies what a token cache depends on: encoder weights, lengths, projection.

        Computed once; the object is not meant to change after creation (training writes a
        new directory, read back with :meth:`load`).
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            config = dataclasses.replace(self.config, ffn=self.config.ffn_size).identity()
            digest.update(
                json.dumps(
                    {"config": config, "encoder": self.encoder_spec["fingerprint"]},
                    sort_keys=True,
                ).encode()
            )
            for name, tensor in sorted(self.head.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        """What a token cache's ``meta.json`` records about the model that wrote it."""
        return {
            "model": str(self.path.resolve()) if self.path is not None else "<in memory>",
            "model_fingerprint": self.fingerprint,
            "encoder": dict(self.encoder_spec),
            "k": self.config.k,
            "dim": self.config.dim,
            "passage_max_length": self.config.passage_max_length,
        }

    # -- encoding --------------------------------------------------------------------------
    def encode_queries(self, queries: Sequence[str], batch_size: int | None = None) -> EncodedTexts:
        """Projected query tokens ``(n, query_tokens, dim)`` float32, their lengths, and (for a
        residual model) the queries' sentence embeddings."""
        return encoder_token_outputs(
            self.encoder,
            queries,
            max_length=self.config.query_max_length,
            keep=self.config.query_tokens,
            project=self.head.query_projection,
            vectors=self.config.residual,
            batch_size=batch_size,
        )

    def encode_passages(
        self,
        passages: Sequence[str],
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> EncodedTexts:
        """Projected passage tokens ``(n, k, dim)`` float32, their lengths and (for a residual
        model) sentence embeddings: what the token cache stores, before its float16
        rounding."""
        return encoder_token_outputs(
            self.encoder,
            passages,
            max_length=int(self.config.passage_max_length or 0),
            keep=self.config.k,
            project=self.head.passage_projection,
            vectors=self.config.residual,
            batch_size=batch_size,
            progress=progress,
        )

    # -- scoring ---------------------------------------------------------------------------
    def score_tokens(
        self,
        query: np.ndarray,
        query_length: int,
        passages: np.ndarray,
        passage_lengths: np.ndarray,
        query_vector: np.ndarray | None = None,
        passage_vectors: np.ndarray | None = None,
    ) -> np.ndarray:
        """Scores ``(n,)`` float32 of one projected query ``(query_tokens, dim)`` against
        projected passages ``(n, k, dim)`` (any float dtype), in head batches of
        ``batch_size``. A residual model also needs the query's sentence embedding
        ``(hidden,)`` and the passages' ``(n, hidden)``."""
        similarity = None
        if self.config.residual:
            if query_vector is None or passage_vectors is None:
                raise ValueError(
                    "a residual DiPair model scores with the texts' sentence embeddings"
                )
            similarity = np.asarray(passage_vectors, dtype=np.float32) @ np.asarray(
                query_vector, dtype=np.float32
            )
        query_t = torch.as_tensor(np.asarray(query, dtype=np.float32), device=self.device)
        query_t = query_t.reshape(1, self.config.query_tokens, self.config.dim)
        q_len = torch.tensor([int(query_length)], device=self.device)
        out = np.empty(len(passages), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(passages), self.batch_size):
                stop = start + self.batch_size
                chunk = torch.as_tensor(
                    np.asarray(passages[start:stop], dtype=np.float32), device=self.device
                )
                lengths = torch.as_tensor(
                    np.asarray(passage_lengths[start:stop], dtype=np.int64), device=self.device
                )
                sim = None
                if similarity is not None:
                    sim = torch.as_tensor(similarity[start:stop], device=self.device)
                scores = self.head(query_t, q_len, chunk, lengths, sim)
                out[start:stop] = scores.float().cpu().numpy()
        return out

    def score_encoded(self, query: EncodedTexts, row: int, passages: EncodedTexts) -> np.ndarray:
        """Scores of encoded ``passages`` (from :meth:`encode_passages` or a cache lookup)
        for row ``row`` of encoded queries ``query``."""
        return self.score_tokens(
            query.tokens[row],
            int(query.lengths[row]),
            passages.tokens,
            passages.lengths,
            None if query.vectors is None else query.vectors[row],
            passages.vectors,
        )

    def score(
        self, query: str, doc_ids: Sequence[str], cache: TokenCache | str | Path
    ) -> np.ndarray:
        """Scores of ``doc_ids`` for ``query``, the passages read from a token cache.

        Raises ``ValueError`` when the cache was built by another DiPair model and
        :class:`~elasticir.rerank.token_cache.MissingTokensError` listing ids it lacks.
        """
        cache = self.check_cache(cache)
        return self.score_encoded(self.encode_queries([query]), 0, cache.lookup(doc_ids))

    def score_texts(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Scores of passage texts encoded on the fly (the cached path, in float32)."""
        return self.score_encoded(self.encode_queries([query]), 0, self.encode_passages(passages))

    def rerank(
        self,
        queries: Sequence[Query],
        run: Run,
        cache: TokenCache | str | Path,
        depth: int | None = None,
    ) -> Run:
        """Rescore each query's candidates in ``run`` (its top ``depth``, default all) from
        ``cache``; returns ``{qid: {doc_id: score}}`` for the rescored documents."""
        cache = self.check_cache(cache)
        texts = {q.query_id: q.text for q in queries}
        unknown = sorted(set(run) - texts.keys())
        if unknown:
            raise ValueError(
                f"{len(unknown)} quer{'y' if len(unknown) == 1 else 'ies'} of the run are not in "
                f"the topics (e.g. {unknown[:3]})"
            )
        order = [qid for qid in texts if qid in run]
        encoded = self.encode_queries([texts[qid] for qid in order])
        out: Run = {}
        for row, qid in enumerate(order):
            ranked = sorted(run[qid].items(), key=lambda item: (-item[1], item[0]))
            docs = [doc for doc, _ in (ranked if depth is None else ranked[:depth])]
            scores = self.score_encoded(encoded, row, cache.lookup(docs))
            out[qid] = dict(zip(docs, scores.tolist()))
        return out

    def check_cache(self, cache: TokenCache | str | Path) -> TokenCache:
        """``cache`` opened, and checked to hold this model's passage tokens."""
        from elasticir.rerank.token_cache import TokenCache

        if not isinstance(cache, TokenCache):
            cache = TokenCache(cache)
        if cache.model_fingerprint != self.fingerprint:
            raise ValueError(
                f"{cache.path} holds passage tokens of DiPair model {cache.meta.get('model')!r} "
                f"(fingerprint {cache.model_fingerprint}); this model's fingerprint is "
                f"{self.fingerprint}: rebuild the cache with this model"
            )
        if self.config.residual and cache.vector_dim != self.encoder.dim:
            raise ValueError(
                f"{cache.path} holds no {self.encoder.dim}-d sentence embeddings, which this "
                "residual DiPair model scores with: rebuild the cache with this model"
            )
        return cache

    def build_cache(
        self,
        corpus: str | Path,
        cache_dir: str | Path,
        *,
        shard_size: int | None = None,
        shard: tuple[int, int] = (0, 1),
        batch_size: int | None = None,
        progress: bool = True,
    ) -> EncodeReport:
        """Encode ``corpus`` into a token cache at ``cache_dir`` (resumable; see
        :func:`elasticir.rerank.token_cache.build_token_cache`)."""
        from elasticir.rerank.token_cache import DEFAULT_SHARD_SIZE, build_token_cache

        return build_token_cache(
            corpus,
            cache_dir,
            self,
            shard_size=shard_size or DEFAULT_SHARD_SIZE,
            shard=shard,
            batch_size=batch_size,
            progress=progress,
        )

    def scorer(self, cache: TokenCache | str | Path | None = None) -> DiPairScorer:
        """This model as a ``Rerank`` stage's scorer (``elasticir.rerank.pipeline``)."""
        return DiPairScorer(self, cache)

    # -- saving ----------------------------------------------------------------------------
    def save(
        self,
        path: str | Path,
        *,
        training: Mapping[str, Any] | None = None,
        save_encoder: bool = False,
    ) -> Path:
        """Write the model directory; ``elasticir.json`` last, every file renamed into place.

        ``save_encoder`` copies the encoder's weights into ``encoder/`` (needed once training
        changed them); otherwise the manifest names the base model and its fingerprint.
        """
        from safetensors.torch import save_file

        from elasticir.encoders.loading import model_fingerprint, read_settings

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / MANIFEST_FILE).unlink(missing_ok=True)  # unfinished until the new one is in
        staging = path / f".tmp-dipair.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
            save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": "elasticir-dipair"})
            spec = dict(self.encoder_spec)
            save_encoder = save_encoder or spec["model"] == ENCODER_DIR  # lives in a model dir
            if save_encoder:
                target = staging / ENCODER_DIR
                self.encoder.model.save_pretrained(target)
                self.encoder.tokenizer.save_pretrained(target)
                spec = {
                    "model": ENCODER_DIR,
                    "fingerprint": model_fingerprint(str(target), read_settings(str(target))),
                    "base_model": spec.get("base_model", spec["model"]),
                    "base_fingerprint": spec.get("base_fingerprint", spec["fingerprint"]),
                }
            for item in staging.iterdir():
                final = path / item.name
                if final.is_dir():
                    shutil.rmtree(final)
                os.replace(item, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not save_encoder and (path / ENCODER_DIR).is_dir():
            shutil.rmtree(path / ENCODER_DIR)  # left by an earlier save: not this model's
        config = self.config
        manifest = {
            "kind": DIPAIR_KIND,
            "format_version": 1,
            "k": config.k,
            "query_tokens": config.query_tokens,
            "dim": config.dim,
            "head": config.head_dict(),
            "query_max_length": config.query_max_length,
            "passage_max_length": config.passage_max_length,
            "residual": config.residual,
            "encoder": spec,
            "training": dict(training) if training is not None else None,
        }
        with atomic_file(path / MANIFEST_FILE) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            tmp.chmod(0o644)
        return path


class DiPairScorer(Reranker):
    """A :class:`DiPair` as a ``Rerank`` stage's scorer: ``score(query, passages)``.

    With a token cache, passages are looked up by ``doc_id`` (their text is not read);
    without, they are encoded on the fly. The last query's tokens are kept, so a query whose
    candidates come in several calls is encoded once.
    """

    def __init__(self, dipair: DiPair, cache: TokenCache | str | Path | None = None) -> None:
        self.dipair = dipair
        self.cache = None if cache is None else dipair.check_cache(cache)
        self._last: tuple[str, EncodedTexts] | None = None

    def score(self, query: str, passages: Sequence[Passage]) -> np.ndarray:
        last = self._last
        if last is None or last[0] != query:
            last = self._last = (query, self.dipair.encode_queries([query]))
        if self.cache is not None:
            encoded = self.cache.lookup([p.doc_id for p in passages])
        else:
            encoded = self.dipair.encode_passages([p.encoder_text() for p in passages])
        return self.dipair.score_encoded(last[1], 0, encoded)


# --------------------------------------------------------------------------- helpers


def read_manifest(path: str | Path) -> dict[str, Any]:
    """``elasticir.json`` of a DiPair directory, checked to be one."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise MissingResourceError(
            f"{path}: not a DiPair model (no {MANIFEST_FILE}); train one with "
            "`elasticir train dipair`"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputFormatError(manifest_path, err.lineno, "a JSON object", err.msg) from err
    if not isinstance(manifest, dict) or manifest.get("kind") != DIPAIR_KIND:
        got = manifest.get("kind") if isinstance(manifest, dict) else type(manifest).__name__
        raise InputFormatError(manifest_path, None, f'"kind": "{DIPAIR_KIND}"', repr(got))
    encoder = manifest.get("encoder")
    if not isinstance(encoder, dict) or not all(
        isinstance(encoder.get(key), str) and encoder[key] for key in ("model", "fingerprint")
    ):
        raise InputFormatError(
            manifest_path, None, '"encoder": {"model": ..., "fingerprint": ...}', repr(encoder)
        )
    return manifest


def _config_from_manifest(path: Path, manifest: Mapping[str, Any]) -> DiPairConfig:
    head = manifest.get("head") or {}
    try:
        return DiPairConfig(
            k=manifest["k"],
            query_tokens=manifest["query_tokens"],
            dim=manifest["dim"],
            layers=head["layers"],
            heads=head["heads"],
            ffn=head["ffn"],
            dropout=head["dropout"],
            query_max_length=manifest["query_max_length"],
            passage_max_length=manifest["passage_max_length"],
            residual=manifest.get("residual", False),  # models written before it existed
        )
    except (KeyError, TypeError, ValueError) as err:
        raise InputFormatError(
            path / MANIFEST_FILE, None, "a DiPair shape (k, query_tokens, dim, head)", str(err)
        ) from err


def resolve_config(config: DiPairConfig, encoder: ElasticDenser) -> DiPairConfig:
    """``config`` with every default resolved: ``passage_max_length`` from the encoder, and
    ``ffn`` to its size (so equal models have equal configs, and equal fingerprints)."""
    length = config.passage_max_length
    return dataclasses.replace(
        config,
        ffn=config.ffn_size,
        passage_max_length=int(encoder.passage_max_length) if length is None else length,
    )


def _check_lengths(encoder: ElasticDenser, config: DiPairConfig) -> None:
    longest = max(config.query_max_length, int(config.passage_max_length or 0))
    positions = getattr(encoder.model.config, "max_position_embeddings", None)
    if positions is not None and longest > int(positions):
        raise ValueError(f"the encoder reads at most {positions} tokens; asked for {longest}")


def _encoder_spec(encoder: ElasticDenser) -> dict[str, str]:
    name = encoder.model_name
    path = Path(name).expanduser()
    if path.exists():
        name = str(path.resolve())
    return {"model": name, "fingerprint": encoder.own_fingerprint}


def _encoder_location(path: Path, model: str) -> str:
    beside = path / model
    if not Path(model).is_absolute() and (beside / "config.json").is_file():
        return str(beside)  # the fine-tuned encoder saved inside the model directory
    return model  # a name or an absolute path
