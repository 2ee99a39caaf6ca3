"""ElasticRanker: an elastic multi-exit cross-encoder with per-candidate early exit.

The model reads ``[CLS] query [SEP] passage [SEP]`` (token types 0 / 1) through a BERT-style
encoder whose heads and FFN neurons are stored most-important-first
(:func:`elasticir.encoders.elastic.reorder_`), so a level's width is a prefix of the weights,
and puts a **relevance head on every layer** (multi-exit). Exit head ``i`` reads layer ``i``'s
[CLS] state: ``Linear(hidden, 1)(tanh(Linear(hidden, hidden)(cls)))`` -- the shape of BERT's
pooler + a sequence-classification layer, initialised from the checkpoint's own pooler (and
from its ``classifier`` when it is a one-logit cross-encoder). A level ``L<d>-W<w>`` exits at
layer ``d`` running the first ``w``% of the heads and neurons; every depth works at every
trained width, since every layer has an exit.

The **pooled head** (``RankerNet(head="pooled")``, ``elasticir train ranker --head pooled``)
starts from the bi-encoder instead of a fresh [CLS] head. It reads
``[CLS] query [SEP] [CLS] passage [SEP]`` with each segment's positions counted from 0 and
token type 0, so each segment is embedded exactly as the bi-encoder embeds it alone; exit
``i`` is ``Linear(hidden, 1)`` of ``normalize(mean of layer i's query tokens) *
normalize(mean of its passage tokens)``, initialised to ``20 * (cosine - 0.4)``; and every
attention logit between a query token and a passage token gets a learned per-layer, per-head
bias (the ``gates``, initialised at -8: next to nothing crosses). At initialisation the
deepest exit therefore ranks exactly as the bi-encoder does, and training decides how far
each head opens the cross attention (the gates are reported after training). The gates add
one ``(heads, tokens, tokens)`` bias per layer, not counted in the FLOPs.

Scoring runs one layer at a time (:func:`elasticir.encoders.elastic.layer_step`). Without a
policy every pair runs to the level's depth and only the last exit head is computed. With an
exit policy (:mod:`elasticir.rerank.policies`) the exit head and the policy's signal are
computed after each layer from ``policy.min_layer`` on for the rows still running; rows that
exit are finalised and *removed from the batch* (``index_select`` of the hidden states and
mask, then trailing all-padding columns are cut), so no compute is spent on them afterwards.
``RankerOutput.flops`` counts what each pair really cost: exit layer x one layer's FLOPs at the
level's width for the pair's own token count (exit heads, embeddings and padding excluded, as
in :func:`elasticir.encoders.elastic.level_flops`).

A ranker directory holds the encoder (``save_pretrained``), the tokenizer,
``exits.safetensors`` (``heads.*``: the exit heads; ``gates``: the pooled head's attention
gates; ``classifier.*``: the learned CALM exit classifier, when trained) and
``elasticir.json``, written last::

    {"kind": "elastic-ranker", "levels": [...], "max_length": 256,
     "exits": {"kind": "cls"|"pooled", "head": ..., "classifier": true|false},
     "training": {...}}

Any plain BERT-style checkpoint loads too (the packaged all-MiniLM-L6-v2 by default): its exit
heads are then *untrained* -- initialised, not learned -- and a ``UserWarning`` says so; that is
how ``elasticir train ranker`` starts. The object keeps no per-call state and scores under
``torch.inference_mode()``, so threads may share one ranker at different levels.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.files import atomic_file
from elasticir.encoders.denser import PRECISIONS
from elasticir.encoders.elastic import (
    check_model,
    default_levels,
    embed,
    layer_flops,
    layer_step,
    level_flops,
    level_menu,
    sub_network,
)
from elasticir.encoders.levels import FULL, Level
from elasticir.encoders.loading import quiet_loading, resolve_model_path
from elasticir.rerank.pipeline import Reranker
from elasticir.rerank.policies import (
    PRUNE_GAP,
    ExitPolicy,
    FixedLevel,
    Policy,
    parse_policy,
    skipped_scores,
)

if TYPE_CHECKING:
    from elasticir.data.records import Passage, Run

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "EXITS_FILE",
    "KIND",
    "ElasticRanker",
    "ExitClassifier",
    "ExitHeads",
    "LayerRecords",
    "RankerNet",
    "RankerOutput",
    "RankerScorer",
    "UntrainedExitsWarning",
    "encode_pairs",
    "rerank_run",
    "write_ranker",
]

KIND = "elastic-ranker"
EXITS_FILE = "exits.safetensors"
DEFAULT_MAX_LENGTH = 256
HEADS = ("cls", "pooled")
HEAD_DESCRIPTIONS = {
    "cls": "per layer: Linear(hidden, 1)(tanh(Linear(hidden, hidden)(cls)))",
    "pooled": "per layer: Linear(hidden, 1)(normalize(mean(query tokens)) * "
    "normalize(mean(passage tokens))), cross-segment attention gated per layer and head",
}
CLASSIFIER_DESCRIPTION = (
    "per layer: Linear(hidden + 2, 1)([state, score, |2 sigmoid(score) - 1|]); state: the exit "
    "head's input"
)
DEFAULT_GATE_INIT = -8.0
POOLED_SCALE = 20.0  # initial pooled head: score = POOLED_SCALE * (cosine - POOLED_OFFSET)
POOLED_OFFSET = 0.4


class UntrainedExitsWarning(UserWarning):
    """A ranker was loaded from a checkpoint without trained exit heads."""


# --------------------------------------------------------------------------- modules


class ExitHeads(nn.Module):
    """One relevance head per layer on that layer's exit state (see the module docstring):
    ``kind="cls"`` reads the [CLS] state through a pooler-shaped layer, ``kind="pooled"`` is
    one linear layer on the product of the normalised mean-pooled query and passage states
    (a weighted cosine)."""

    def __init__(self, hidden: int, layers: int, kind: str = "cls") -> None:
        super().__init__()
        self.kind = kind
        dense = layers if kind == "cls" else 0
        self.dense = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(dense))
        self.out = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(layers))

    def forward(self, layer: int, state: torch.Tensor) -> torch.Tensor:
        """Scores ``(rows,)`` of exit ``layer`` (0-based) from ``state`` ``(rows, hidden)``."""
        if self.kind == "pooled":
            return self.out[layer](state).squeeze(-1)
        return self.out[layer](torch.tanh(self.dense[layer](state))).squeeze(-1)


class ExitClassifier(nn.Module):
    """CALM's learned exit classifier: per layer, a logit that this layer's score already
    agrees with the deepest exit's, from ``[cls, score, |2 sigmoid(score) - 1|]``."""

    def __init__(self, hidden: int, layers: int) -> None:
        super().__init__()
        self.linear = nn.ModuleList(nn.Linear(hidden + 2, 1) for _ in range(layers))

    @staticmethod
    def features(cls: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.to(cls.dtype)
        margin = (2 * torch.sigmoid(scores) - 1).abs()
        return torch.cat([cls, scores[:, None], margin[:, None]], dim=-1)

    def forward(self, layer: int, cls: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Logits ``(rows,)``; ``sigmoid`` of them is the exit confidence."""
        return self.linear[layer](self.features(cls, scores)).squeeze(-1)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; the gradient flowing back through it is multiplied by ``scale``."""
    return x if scale == 1.0 else _ScaleGrad.apply(x, scale)


@dataclass(frozen=True)
class PairMasks:
    """What the layers of one padded batch of pairs need besides the hidden states:
    ``mask`` ``(rows, tokens)``, nonzero on real tokens, and for the pooled head the
    boolean ``query`` and ``passage`` token masks of the two segments, ``cross``
    ``(rows, 1, tokens, tokens)``, 1.0 where a query token meets a passage token, and ``pad``
    ``(rows, 1, 1, tokens)``, ``-inf`` on padding keys and 0 elsewhere."""

    mask: torch.Tensor
    query: torch.Tensor | None = None
    passage: torch.Tensor | None = None
    cross: torch.Tensor | None = None
    pad: torch.Tensor | None = None

    @classmethod
    def segments(cls, mask: torch.Tensor, second: torch.Tensor, dtype: torch.dtype) -> PairMasks:
        """The pooled head's masks from ``mask`` and the passage-segment marks ``second``."""
        real = mask.to(torch.bool)
        query, passage = real & ~second, real & second
        cross = (query[:, :, None] ^ query[:, None, :])[:, None].to(dtype)
        pad = torch.zeros(real.shape, dtype=dtype, device=mask.device)
        pad = pad.masked_fill(~real, float("-inf"))[:, None, None, :]
        return cls(mask, query, passage, cross, pad)

    def select(self, rows: torch.Tensor) -> PairMasks:
        """The masks of ``rows`` only (an index tensor)."""
        parts = (self.mask, self.query, self.passage, self.cross, self.pad)
        return PairMasks(*(None if t is None else t.index_select(0, rows) for t in parts))

    def trim(self, tokens: int) -> PairMasks:
        """The masks of the first ``tokens`` columns only."""
        return PairMasks(
            self.mask[:, :tokens],
            None if self.query is None else self.query[:, :tokens],
            None if self.passage is None else self.passage[:, :tokens],
            None if self.cross is None else self.cross[:, :, :tokens, :tokens],
            None if self.pad is None else self.pad[..., :tokens],
        )


class RankerNet(nn.Module):
    """The trainable parts: ``encoder`` (a BERT-style Hugging Face model), ``heads`` (one
    relevance exit per layer), ``classifier`` (the CALM exit classifier) and, for the pooled
    head, ``gates`` ``(layers, heads)``: the bias added to every attention logit between a
    query token and a passage token (very negative: the segments barely see each other).

    ``head="pooled"`` reads pairs laid out as ``[CLS] query [SEP] [CLS] passage [SEP]``, each
    segment with its own positions from 0 and token type 0 (the token types passed in mark
    the segments: 0 query, 1 passage); its exit state is the product of the normalised
    mean-pooled query and passage token states. With the gates closed and the head a plain
    cosine this *is* the bi-encoder the encoder was trained as, so training starts from the
    bi-encoder's ranking and learns how far to open each head's cross attention.
    """

    def __init__(
        self, encoder: nn.Module, head: str = "cls", gate_init: float = DEFAULT_GATE_INIT
    ) -> None:
        super().__init__()
        check_model(encoder)
        if head not in HEADS:
            raise ValueError(f"unknown ranker head {head!r}; expected one of {', '.join(HEADS)}")
        self.encoder = encoder
        self.head = head
        self.gate_init = float(gate_init)
        config = encoder.config
        hidden, layers = int(config.hidden_size), int(config.num_hidden_layers)
        self.heads = ExitHeads(hidden, layers, head)
        self.classifier = ExitClassifier(hidden, layers)
        if head == "pooled":
            heads = int(config.num_attention_heads)
            self.gates: nn.Parameter | None = nn.Parameter(
                torch.full((layers, heads), self.gate_init)
            )
        else:
            self.register_parameter("gates", None)

    @property
    def pooled(self) -> bool:
        return self.head == "pooled"

    def start(
        self, input_ids: torch.Tensor, token_types: torch.Tensor | None, mask: torch.Tensor
    ) -> tuple[torch.Tensor, PairMasks]:
        """The embedding output of a padded batch of pairs and its :class:`PairMasks`."""
        if not self.pooled:
            return embed(self.encoder, input_ids, token_types), PairMasks(mask)
        if token_types is None:
            raise ValueError("the pooled head needs the segment marks (token types 0 / 1)")
        second = token_types.to(torch.bool)
        index = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
        offset = (mask.to(torch.bool) & ~second).sum(dim=1, keepdim=True)
        positions = torch.where(second, index - offset, index).clamp(min=0)
        hidden = embed(self.encoder, input_ids, torch.zeros_like(input_ids), positions)
        device = hidden.device.type
        # under autocast the attention runs in its lower dtype: build the bias in it too
        dtype = (
            torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        )
        return hidden, PairMasks.segments(mask, second, dtype)

    def step(
        self, index: int, hidden: torch.Tensor, masks: PairMasks, level: Level | str
    ) -> torch.Tensor:
        """Layer ``index`` at ``level``'s width (with the gated attention for the pooled
        head)."""
        bias = None
        if self.gates is not None and masks.cross is not None and masks.pad is not None:
            heads = sub_network(self.config, level).heads
            gate = self.gates[index, :heads].to(masks.cross.dtype).view(1, heads, 1, 1)
            bias = torch.addcmul(masks.pad, masks.cross, gate)  # one pass over (rows, heads, t, t)
        return layer_step(self.encoder, index, hidden, masks.mask, level, attention_bias=bias)

    def state(self, hidden: torch.Tensor, masks: PairMasks) -> torch.Tensor:
        """The exit state of each row: its [CLS] state, or the pooled head's product."""
        if masks.query is None or masks.passage is None:
            return hidden[:, 0]

        def mean(part: torch.Tensor) -> torch.Tensor:
            weight = part.to(hidden.dtype)[..., None]
            return (hidden * weight).sum(1) / weight.sum(1).clamp(min=1.0)

        return F.normalize(mean(masks.query), dim=-1) * F.normalize(mean(masks.passage), dim=-1)

    @property
    def config(self) -> Any:
        return self.encoder.config

    @property
    def num_layers(self) -> int:
        return int(self.encoder.config.num_hidden_layers)

    def init_exits_(self, source: str | None = None, seed: int = 0) -> None:
        """Initialise heads and classifier deterministically: head dense layers from the
        encoder's pooler (when it has one), head outputs from a one-logit ``classifier`` in
        the checkpoint at ``source`` (when there is one), else ``N(0, 0.02)``, biases 0."""
        generator = torch.Generator().manual_seed(seed)
        pooler = getattr(getattr(self.encoder, "pooler", None), "dense", None)
        logit = _checkpoint_classifier(source, int(self.config.hidden_size))
        with torch.no_grad():
            if self.gates is not None:
                self.gates.fill_(self.gate_init)
            if self.pooled:  # a scaled cosine: the bi-encoder's ranking
                for out in self.heads.out:
                    out.weight.fill_(POOLED_SCALE)
                    out.bias.fill_(-POOLED_SCALE * POOLED_OFFSET)
            for dense, out in zip(self.heads.dense, self.heads.out):
                if pooler is not None:
                    dense.weight.copy_(pooler.weight)
                    dense.bias.copy_(pooler.bias)
                else:
                    dense.weight.copy_(torch.randn(dense.weight.shape, generator=generator) * 0.02)
                    dense.bias.zero_()
                if logit is not None:
                    out.weight.copy_(logit[0])
                    out.bias.copy_(logit[1])
                else:
                    out.weight.copy_(torch.randn(out.weight.shape, generator=generator) * 0.02)
                    out.bias.zero_()
            for linear in self.classifier.linear:
                linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.02)
                linear.bias.zero_()

    def exit_state(self, classifier: bool) -> dict[str, torch.Tensor]:
        """What ``exits.safetensors`` holds: ``heads.*``, ``gates`` for the pooled head and,
        if asked, ``classifier.*``."""
        state = {f"heads.{k}": v for k, v in self.heads.state_dict().items()}
        if self.gates is not None:
            state["gates"] = self.gates
        if classifier:
            state.update({f"classifier.{k}": v for k, v in self.classifier.state_dict().items()})
        return {k: v.detach().contiguous().cpu() for k, v in state.items()}

    def load_exits(self, state: Mapping[str, torch.Tensor], path: str | Path = EXITS_FILE) -> bool:
        """Load an ``exit_state``; returns whether it had a classifier."""
        heads = {k[6:]: v for k, v in state.items() if k.startswith("heads.")}
        classifier = {k[11:]: v for k, v in state.items() if k.startswith("classifier.")}
        gates = state.get("gates")
        if (gates is None) != (self.gates is None):
            expected = "a pooled ranker's exits (with gates)" if self.pooled else "[CLS] exits"
            got = "gates" if gates is not None else "no gates"
            raise InputFormatError(path, None, expected, got=got)
        try:
            if gates is not None and self.gates is not None:
                if gates.shape != self.gates.shape:
                    raise RuntimeError(
                        f"gates of shape {tuple(gates.shape)}, expected {tuple(self.gates.shape)}"
                    )
                with torch.no_grad():
                    self.gates.copy_(gates)
            self.heads.load_state_dict(heads)
            if classifier:
                self.classifier.load_state_dict(classifier)
        except RuntimeError as err:
            raise InputFormatError(
                path, None, f"exit heads for {self.num_layers} layers of this encoder", str(err)
            ) from err
        return bool(classifier)

    def exit_outputs(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        level: Level | str = FULL,
        *,
        grad_rescale: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Every exit's scores ``(batch, depth)`` and the exit states (embeddings first, then
        each layer's: ``depth + 1`` tensors) of ``level``'s sub-network.

        ``grad_rescale`` applies COST-EFF's gradient equilibrium: at layer ``i`` (0-based) of
        ``L``, the gradient reaching the trunk from exit ``i`` is scaled by ``1 / (L - i)`` and
        the one coming back from the deeper layers by ``(L - i - 1) / (L - i)``, so each
        layer's trunk receives the *mean* of the gradients of the ``L - i`` exits at or above
        it rather than their sum (the heads' own gradients are not scaled).
        """
        depth = sub_network(self.config, level).depth
        hidden, masks = self.start(input_ids, token_type_ids, attention_mask)
        states, scores = [self.state(hidden, masks)], []
        for i in range(depth):
            hidden = self.step(i, hidden, masks, level)
            cls = self.state(hidden, masks)
            to_head = cls
            if grad_rescale:
                remaining = depth - i
                to_head = scale_grad(cls, 1.0 / remaining)
                if remaining > 1:
                    hidden = scale_grad(hidden, (remaining - 1) / remaining)
            scores.append(self.heads(i, to_head))
            states.append(cls)
        return torch.stack(scores, dim=1), states


def _checkpoint_classifier(
    source: str | None, hidden: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A one-logit sequence-classification layer (``classifier.weight`` ``(1, hidden)``)
    stored in the checkpoint at ``source``, if any."""
    if source is None:
        return None
    path = Path(source) / "model.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        keys = set(fh.keys())
        weight = next((k for k in keys if k.endswith("classifier.weight")), None)
        if weight is None:
            return None
        bias = weight[: -len("weight")] + "bias"
        w = fh.get_tensor(weight)
        if tuple(w.shape) != (1, hidden) or bias not in keys:
            return None
        return w.float(), fh.get_tensor(bias).float()


# --------------------------------------------------------------------------- inputs


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


def _batches(lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    # Longest first, stable (as ElasticDenser): each batch pads only to its own longest pair,
    # and the batches depend on nothing but the inputs.
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _pad(
    ids: list[list[int]], types: list[list[int]], rows: np.ndarray, pad_id: int, device: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class RankerOutput:
    """Scores of ``n`` pairs, where each exited and what it cost.

    ``scores`` ``(n,)`` float32 (the exit head's logit; higher is more relevant),
    ``exit_layers`` ``(n,)`` 1-based, ``flops`` ``(n,)`` the transformer FLOPs each pair really
    spent, ``full_flops`` ``(n,)`` what the full model (every layer, full width) costs on it.
    """

    scores: np.ndarray
    exit_layers: np.ndarray
    flops: np.ndarray
    full_flops: np.ndarray
    level: Level
    policy: Policy | None

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def total_flops(self) -> int:
        return int(self.flops.sum())

    @property
    def flops_ratio(self) -> float:
        """FLOPs spent over the full model's on the same pairs (1.0 for no pairs)."""
        full = float(self.full_flops.sum())
        return float(self.flops.sum()) / full if full else 1.0

    @property
    def speedup(self) -> float:
        """The full model's FLOPs over those spent: ``1 / flops_ratio``."""
        spent = float(self.flops.sum())
        return float(self.full_flops.sum()) / spent if spent else 1.0

    @property
    def mean_exit_layer(self) -> float:
        return float(self.exit_layers.mean()) if len(self) else 0.0


@dataclass(frozen=True)
class LayerRecords:
    """Every exit of a level for ``n`` pairs, recorded by running every layer (no exit).

    ``scores``, ``saturation`` (cosine of each layer's exit state -- [CLS], or the pooled
    head's product -- with the previous one's, the embeddings' for layer 1) and
    ``classifier`` (the exit classifier's probability, None when the ranker has none) are
    ``(n, depth)`` float32; ``layer_cost`` ``(n,)`` is one layer's FLOPs at the level's width
    for each pair, ``full_cost`` the full model's. ``states``, when
    asked for, is ``(n, depth + 1, hidden)`` float32: the exit state after the embeddings and
    after each layer (what the exit heads read), for diagnostics that refit heads.
    """

    scores: np.ndarray
    saturation: np.ndarray
    classifier: np.ndarray | None
    layer_cost: np.ndarray
    full_cost: np.ndarray
    level: Level
    num_layers: int
    states: np.ndarray | None = None

    @property
    def depth(self) -> int:
        return int(self.scores.shape[1])


# --------------------------------------------------------------------------- the ranker


class ElasticRanker:
    """A multi-exit cross-encoder over a Hugging Face encoder (see the module docstring).

    ``model``: a ranker directory, any BERT-style checkpoint (directory or hub name), or None
    for the packaged all-MiniLM-L6-v2. ``max_length`` defaults to the directory's (256).
    ``precision="bf16"`` runs the encoder under bfloat16 autocast: about twice the pairs/s on
    CPUs with AMX or AVX512-BF16, likely slower without (``benchmarks/rerank_precision.py``
    measures both speed and agreement with fp32). Its scores differ slightly from fp32's, so
    the fingerprint (and any calibration) is per precision.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        precision: str = "fp32",
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model_path(model)
        try:
            with quiet_loading():
                tokenizer = AutoTokenizer.from_pretrained(path)
                encoder = AutoModel.from_pretrained(path)
        except OSError as err:
            raise MissingResourceError(
                f"cannot load model {model!r}: not a local model directory, and not available "
                f"from the Hugging Face cache offline ({err.__class__.__name__}: {err})"
            ) from err
        manifest = read_manifest(path)
        exits_entry = manifest.get("exits")
        head = exits_entry.get("kind", "cls") if isinstance(exits_entry, dict) else "cls"
        if head not in HEADS:
            raise InputFormatError(
                Path(path) / "elasticir.json", None, f'"exits.kind": one of {HEADS}', got=head
            )
        net = RankerNet(encoder, head=head)
        net.init_exits_(path)  # deterministic, also for the parts a file does not hold
        exits = Path(path) / EXITS_FILE
        if manifest and exits.is_file():
            from safetensors.torch import load_file

            has_classifier = net.load_exits(load_file(str(exits)), exits)
            trained = True
        else:
            has_classifier, trained = False, False
            warnings.warn(
                f"{model or 'all-MiniLM-L6-v2'} has no trained exit heads ({EXITS_FILE}): they "
                "are initialised, not learned, so its scores mean nothing until it is trained "
                "(elasticir train ranker)",
                UntrainedExitsWarning,
                stacklevel=2,
            )
        self._setup(
            net,
            tokenizer,
            model_path=path,
            model_name=str(model) if model is not None else "all-MiniLM-L6-v2",
            levels=_manifest_levels(manifest, path, net.config),
            max_length=int(max_length or manifest.get("max_length", DEFAULT_MAX_LENGTH)),
            heads_trained=trained,
            has_classifier=has_classifier,
            manifest=manifest,
            device=device,
            batch_size=batch_size,
            precision=precision,
        )

    @classmethod
    def from_net(
        cls,
        net: RankerNet,
        tokenizer: Any,
        *,
        levels: Sequence[Level | str] | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        heads_trained: bool = True,
        has_classifier: bool = False,
        model_name: str = "in-memory ranker",
        device: str | None = None,
        batch_size: int = 32,
        precision: str = "fp32",
    ) -> ElasticRanker:
        """A ranker around modules already in memory (training uses this); no copy is made."""
        self = cls.__new__(cls)
        menu = level_menu(net.config, levels)
        self._setup(
            net,
            tokenizer,
            model_path=None,
            model_name=model_name,
            levels=menu,
            max_length=max_length,
            heads_trained=heads_trained,
            has_classifier=has_classifier,
            manifest={},
            device=device,
            batch_size=batch_size,
            precision=precision,
        )
        return self

    def _setup(
        self,
        net: RankerNet,
        tokenizer: Any,
        *,
        model_path: str | None,
        model_name: str,
        levels: tuple[Level, ...],
        max_length: int,
        heads_trained: bool,
        has_classifier: bool,
        manifest: dict[str, Any],
        device: str | None,
        batch_size: int,
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {max_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.net = net
        self.tokenizer = tokenizer
        self.model_path = model_path
        self.model_name = model_name
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net.to(self.device).eval()
        self.max_length = max_length
        self.batch_size = batch_size
        self.precision = precision
        self.heads_trained = heads_trained
        self.has_classifier = has_classifier
        self.manifest = manifest
        self._levels = levels
        self._types = int(getattr(net.config, "type_vocab_size", 1) or 1) > 1
        pad = tokenizer.pad_token_id
        self._pad_id = 0 if pad is None else int(pad)
        self._fingerprint: str | None = None

    # -- description -----------------------------------------------------------------------
    @property
    def config(self) -> Any:
        return self.net.config

    @property
    def fingerprint(self) -> str:
        """16 hex digits naming what decides this ranker's scores: every weight (trunk, exit
        heads, exit classifier), ``max_length`` and, when not fp32, the precision; equal
        fingerprints score alike."""
        if self._fingerprint is None:
            prefix = f"max_length={self.max_length}"
            if self.precision != "fp32":
                prefix += f";precision={self.precision}"
            digest = hashlib.sha256(prefix.encode())
            for name, tensor in sorted(self.net.state_dict().items()):
                data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(data.numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    @property
    def num_layers(self) -> int:
        return self.net.num_layers

    @property
    def levels(self) -> tuple[Level, ...]:
        """The menu of levels (``elasticir.json``'s), ``full`` first."""
        return self._levels

    @property
    def widths(self) -> tuple[int, ...]:
        """The widths the model was trained at (those of its levels), widest first."""
        return tuple(sorted({lv.width for lv in self._levels}, reverse=True))

    def check_level(self, level: Level | str) -> Level:
        """``level`` as a ``Level``; any depth at a trained width is offered (every layer has
        an exit). Raises ``ValueError`` otherwise."""
        level = Level(level)
        level.resolve(self.num_layers)  # raises when deeper than the model
        if level.width is None:
            raise ValueError(
                f"level {level} cuts heads and FFN neurons by different amounts; ElasticRanker "
                f"levels cut both alike (levels: {', '.join(map(str, self._levels))})"
            )
        if level.width not in self.widths:
            widths = ", ".join(f"W{w}" for w in self.widths)
            raise ValueError(
                f"level {level} runs width {level.width}%, which this ranker was not trained "
                f"at (widths: {widths}; levels: {', '.join(map(str, self._levels))})"
            )
        return level

    def level_flops(self, level: Level | str, seq_len: int = 32) -> int:
        return level_flops(self.config, level, seq_len)

    # -- scoring ---------------------------------------------------------------------------
    def score(
        self,
        query: str,
        passages: Sequence[str],
        level: Level | str = FULL,
        policy: Policy | str | None = None,
        batch_size: int | None = None,
        first_rank: int = 1,
    ) -> RankerOutput:
        """Scores of ``passages`` for one ``query`` (see :meth:`score_pairs`), given in
        first-stage order: a rank policy reads passage ``i``'s rank as ``first_rank + i``."""
        ranks = np.arange(first_rank, first_rank + len(passages), dtype=np.int64)
        return self.score_pairs(
            [query] * len(passages), passages, level, policy, batch_size, ranks=ranks
        )

    def score_pairs(
        self,
        queries: Sequence[str],
        passages: Sequence[str],
        level: Level | str = FULL,
        policy: Policy | str | None = None,
        batch_size: int | None = None,
        ranks: Sequence[int] | np.ndarray | None = None,
    ) -> RankerOutput:
        """Relevance scores of ``(queries[i], passages[i])`` at ``level``, under ``policy``.

        ``level`` gives the width and the deepest exit; ``policy`` (an exit policy or its
        spec) lets each pair exit earlier. A ``FixedLevel`` policy is the same as passing its
        level (``level`` must then be left at ``full`` or equal it). ``ranks``: each pair's
        1-based rank in its query's first stage, which rank policies read (and need).
        Under a pruning policy (:class:`~elasticir.rerank.policies.RankPolicy`) an exited
        pair's score is its exit's logit minus ``PRUNE_GAP`` per layer it skipped. Under a
        :class:`~elasticir.rerank.policies.CutoffPolicy` the pairs ranked below the cutoff are
        never encoded: exit layer 0, no FLOPs, ``skipped_scores`` (first-stage order, below
        every scored pair).
        """
        level, exit_policy = self._resolve(level, policy)
        queries, passages = list(queries), list(passages)
        rank_array = None
        if ranks is not None:
            rank_array = np.asarray(ranks, dtype=np.float64)
            if rank_array.shape != (len(queries),) or bool(np.any(rank_array < 1)):
                raise ValueError(
                    f"ranks: one 1-based first-stage rank per pair ({len(queries)}), got shape "
                    f"{rank_array.shape} with minimum {rank_array.min(initial=1):g}"
                )
        if exit_policy is not None and exit_policy.uses_ranks and rank_array is None:
            raise ValueError(
                f"policy {exit_policy.spec[:40]} reads each candidate's first-stage rank: pass "
                "ranks= (or use score(query, passages) with the passages in first-stage order)"
            )
        ids, types = self._encode(queries, passages)
        n = len(ids)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        scores = np.empty(n, dtype=np.float32)
        exits = np.empty(n, dtype=np.int64)
        depth = sub_network(self.config, level).depth
        scored = np.arange(n)
        if exit_policy is not None and rank_array is not None:
            skipped = exit_policy.skips(rank_array)
            if skipped is not None:  # a cutoff: these pairs are never encoded
                scores[skipped] = skipped_scores(rank_array[skipped], depth)
                exits[skipped] = 0
                scored = np.flatnonzero(~skipped)
        if exit_policy is not None and not exit_policy.exits_early:
            exit_policy = None  # every scored pair runs to the level's depth
        for batch_rows in _batches(lengths[scored], batch_size or self.batch_size):
            rows = scored[batch_rows]
            batch = _pad(ids, types, rows, self._pad_id, self.device)
            batch_ranks = None
            if rank_array is not None:
                batch_ranks = torch.from_numpy(rank_array[rows]).to(self.device)
            with torch.inference_mode(), self._autocast():
                batch_scores, batch_exits = self._run(
                    *batch, level, depth, exit_policy, batch_ranks
                )
            scores[rows] = batch_scores.float().cpu().numpy()
            exits[rows] = batch_exits.cpu().numpy()
        cost = self._layer_costs(lengths, level.width)
        full = self._layer_costs(lengths, 100) * self.num_layers
        return RankerOutput(
            scores=scores,
            exit_layers=exits,
            flops=exits * cost,
            full_flops=full,
            level=level,
            policy=None if policy is None else parse_policy(policy),
        )

    def _encode(
        self, queries: Sequence[str], passages: Sequence[str]
    ) -> tuple[list[list[int]], list[list[int]]]:
        return encode_pairs(
            self.tokenizer, queries, passages, self.max_length, self._types, self.net.pooled
        )

    def _resolve(
        self, level: Level | str, policy: Policy | str | None
    ) -> tuple[Level, ExitPolicy | None]:
        level = Level(level)
        if policy is None:
            return self.check_level(level), None
        policy = parse_policy(policy)
        if isinstance(policy, FixedLevel):
            if not level.is_full and level != policy.level:
                raise ValueError(f"level {level} and policy {policy.spec} name two levels")
            return self.check_level(policy.level), None
        level = self.check_level(level)
        depth = sub_network(self.config, level).depth
        policy.check(depth)
        if policy.uses_classifier and not self.has_classifier:
            raise ValueError(
                f"policy {policy.spec} needs a learned exit classifier; this ranker has none "
                "(train one with elasticir train ranker)"
            )
        return level, policy

    def _run(
        self,
        input_ids: torch.Tensor,
        token_types: torch.Tensor,
        mask: torch.Tensor,
        level: Level,
        depth: int,
        policy: ExitPolicy | None,
        ranks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        rows = input_ids.shape[0]
        out_scores = torch.empty(rows, device=input_ids.device)
        out_exits = torch.full((rows,), depth, dtype=torch.long, device=input_ids.device)
        active = torch.arange(rows, device=input_ids.device)
        hidden, masks = net.start(input_ids, token_types, mask)
        saturation = policy is not None and policy.uses_saturation
        previous = net.state(hidden, masks) if saturation else None
        for i in range(depth):
            hidden = net.step(i, hidden, masks, level)
            layer = i + 1
            last = layer == depth
            if not last and (policy is None or layer < policy.min_layer):
                if saturation:
                    previous = net.state(hidden, masks)
                continue
            cls = net.state(hidden, masks)
            scores = net.heads(i, cls)
            if last:
                out_scores[active] = scores.float()
                break
            assert policy is not None
            cosine = F.cosine_similarity(cls, previous, dim=-1) if saturation else None
            probability = (
                torch.sigmoid(net.classifier(i, cls, scores)) if policy.uses_classifier else None
            )
            done = policy.exits(layer, scores, cosine, probability, ranks)
            if bool(done.any()):
                exited = scores[done].float()
                if policy.prunes:  # below every candidate that goes deeper
                    exited = exited - PRUNE_GAP * (depth - layer)
                out_scores[active[done]] = exited
                out_exits[active[done]] = layer
                if bool(done.all()):
                    break
                keep = torch.nonzero(~done).squeeze(1)
                if ranks is not None:
                    ranks = ranks.index_select(0, keep)
                hidden = hidden.index_select(0, keep)
                masks = masks.select(keep)
                active = active.index_select(0, keep)
                cls = cls.index_select(0, keep)
                longest = int(masks.mask.sum(dim=1).max())
                if longest < masks.mask.shape[1]:  # columns of padding in every remaining row
                    hidden, masks = hidden[:, :longest], masks.trim(longest)
            if saturation:
                previous = cls
        return out_scores, out_exits

    def layer_records(
        self,
        queries: Sequence[str],
        passages: Sequence[str],
        level: Level | str = FULL,
        batch_size: int | None = None,
        classifier: bool = True,
        progress: bool = False,
        states: bool = False,
    ) -> LayerRecords:
        """Run every layer of ``level`` on every pair (no exit), recording each exit's score
        and signals: what calibration simulates every threshold from (``progress``: a bar
        over the pairs; ``states``: keep every layer's exit state too)."""
        from elasticir.progress import progress_bar

        level = self.check_level(level)
        depth = sub_network(self.config, level).depth
        ids, types = self._encode(list(queries), list(passages))
        n = len(ids)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        scores = np.empty((n, depth), dtype=np.float32)
        saturation = np.empty((n, depth), dtype=np.float32)
        use_classifier = classifier and self.has_classifier
        probabilities = np.empty((n, depth), dtype=np.float32) if use_classifier else None
        kept = None
        with progress_bar(progress, n, f"ranker exits at {level}") as advance:
            for rows in _batches(lengths, batch_size or self.batch_size):
                cls = self._record(
                    ids, types, rows, level, scores, saturation, probabilities, states
                )
                if cls is not None:
                    if kept is None:
                        kept = np.empty((n, depth + 1, cls.shape[-1]), dtype=np.float32)
                    kept[rows] = cls
                advance(len(rows))
        return LayerRecords(
            scores=scores,
            saturation=saturation,
            classifier=probabilities,
            layer_cost=self._layer_costs(lengths, level.width),
            full_cost=self._layer_costs(lengths, 100) * self.num_layers,
            level=level,
            num_layers=self.num_layers,
            states=kept,
        )

    def _record(
        self,
        ids: list[list[int]],
        types: list[list[int]],
        rows: np.ndarray,
        level: Level,
        scores: np.ndarray,
        saturation: np.ndarray,
        probabilities: np.ndarray | None,
        keep_states: bool = False,
    ) -> np.ndarray | None:
        """One batch of :meth:`layer_records`: fills its rows of the arrays; with
        ``keep_states`` returns the batch's exit states ``(rows, depth + 1, hidden)``."""
        depth = scores.shape[1]
        input_ids, token_types, mask = _pad(ids, types, rows, self._pad_id, self.device)
        with torch.inference_mode(), self._autocast():
            layer_scores, states = self.net.exit_outputs(input_ids, token_types, mask, level)
            cosines = [F.cosine_similarity(states[i + 1], states[i], dim=-1) for i in range(depth)]
            scores[rows] = layer_scores.float().cpu().numpy()
            saturation[rows] = torch.stack(cosines, 1).float().cpu().numpy()
            if probabilities is not None:
                probs = [
                    torch.sigmoid(self.net.classifier(i, states[i + 1], layer_scores[:, i]))
                    for i in range(depth)
                ]
                probabilities[rows] = torch.stack(probs, 1).float().cpu().numpy()
            return torch.stack(states, 1).float().cpu().numpy() if keep_states else None

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast for ``precision="bf16"`` (scores come back as float32)."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _layer_costs(self, lengths: np.ndarray, width: int) -> np.ndarray:
        level = Level(depth=1, width=width)
        costs = {int(t): layer_flops(self.config, level, int(t)) for t in np.unique(lengths)}
        return np.fromiter((costs[int(t)] for t in lengths), dtype=np.int64, count=len(lengths))

    # -- saving ----------------------------------------------------------------------------
    def save(self, output: str | Path, training: dict[str, Any] | None = None) -> Path:
        """Write this ranker as a directory (see the module docstring); returns it."""
        return write_ranker(
            output,
            self.net,
            self.tokenizer,
            levels=self._levels,
            max_length=self.max_length,
            classifier=self.has_classifier,
            training=training if training is not None else self.manifest.get("training"),
            source_model=self.manifest.get("source_model", self.model_name),
        )


# --------------------------------------------------------------------------- files


def read_manifest(model_path: str) -> dict[str, Any]:
    """A ranker directory's ``elasticir.json``; ``{}`` when there is none or it describes
    another kind of model (an ElasticDenser checkpoint, say)."""
    path = Path(model_path) / "elasticir.json"
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputFormatError(path, err.lineno, "a JSON object", err.msg) from err
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        return {}
    return manifest


def _manifest_levels(manifest: dict[str, Any], path: str, config: Any) -> tuple[Level, ...]:
    raw = manifest.get("levels")
    if raw is None:
        return default_levels(config)
    where = Path(path) / "elasticir.json"
    if not isinstance(raw, list) or not all(isinstance(spec, str) for spec in raw):
        raise InputFormatError(where, None, '"levels": a list of level strings', got=repr(raw))
    try:
        return level_menu(config, raw)
    except ValueError as err:
        raise InputFormatError(where, None, '"levels": compute levels', got=str(err)) from err


def write_ranker(
    output: str | Path,
    net: RankerNet,
    tokenizer: Any,
    *,
    levels: Sequence[Level | str],
    max_length: int,
    classifier: bool,
    training: dict[str, Any] | None = None,
    source_model: str | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write a ranker directory: encoder, tokenizer, ``exits.safetensors`` and
    ``extra_files`` (name -> text) first, each renamed into place; ``elasticir.json`` (the
    mark of a complete ranker, removed first when overwriting) last."""
    from safetensors.torch import save_file

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "elasticir.json").unlink(missing_ok=True)
    staging = out / f".tmp-ranker.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    was_training = net.training
    net.eval()
    try:
        net.encoder.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        save_file(
            net.exit_state(classifier),
            str(staging / EXITS_FILE),
            metadata={"format": "elasticir-exits", "layers": str(net.num_layers)},
        )
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
        for item in staging.iterdir():
            item.chmod(0o644)  # some writers leave 0600 temporary files
            os.replace(item, out / item.name)
    finally:
        net.train(was_training)
        shutil.rmtree(staging, ignore_errors=True)
    manifest: dict[str, Any] = {
        "kind": KIND,
        "levels": [str(Level(level)) for level in levels],
        "max_length": int(max_length),
        "exits": {
            "kind": net.head,
            "head": HEAD_DESCRIPTIONS[net.head],
            "classifier": bool(classifier),
        },
    }
    if classifier:
        manifest["exits"]["classifier_features"] = CLASSIFIER_DESCRIPTION
    if source_model is not None:
        manifest["source_model"] = source_model
    if training is not None:
        manifest["training"] = training
    with atomic_file(out / "elasticir.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o644)
    return out


# --------------------------------------------------------------------------- reranking a run


def rerank_run(
    ranker: ElasticRanker,
    run: Run,
    queries: Mapping[str, str],
    passages: Mapping[str, str] | Callable[[str], str],
    *,
    depth: int = 100,
    level: Level | str = FULL,
    policy: Policy | str | None = None,
    batch_size: int | None = None,
) -> tuple[Run, RankerOutput]:
    """Rerank each query's top ``depth`` candidates of ``run`` (ties by doc id).

    ``queries``: query id -> text (queries without text are left out); ``passages``: doc id
    -> text, or a function of the doc id. Returns the reranked run (query id -> {doc id:
    score}, the ``depth`` reranked candidates only) and the scoring output (pairs in the
    order of the run's queries, then of their first-stage ranks).
    """
    if depth < 1:
        raise ValueError(f"depth must be positive, got {depth}")
    lookup = passages if callable(passages) else passages.__getitem__
    pairs: list[tuple[str, str]] = []
    texts_q: list[str] = []
    texts_p: list[str] = []
    ranks: list[int] = []
    for qid, docs in run.items():
        if qid not in queries:
            continue
        ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]
        for rank, (doc, _) in enumerate(ranked, start=1):
            pairs.append((qid, doc))
            texts_q.append(queries[qid])
            texts_p.append(lookup(doc))
            ranks.append(rank)
    output = ranker.score_pairs(
        texts_q, texts_p, level=level, policy=policy, batch_size=batch_size, ranks=ranks
    )
    reranked: dict[str, dict[str, float]] = {}
    for (qid, doc), score in zip(pairs, output.scores.tolist()):
        reranked.setdefault(qid, {})[doc] = float(score)
    return reranked, output


class RankerScorer(Reranker):
    """An :class:`ElasticRanker` as a cascade stage's scorer (``elasticir.rerank.pipeline``):
    ``score(query, passages) -> float32 scores`` at ``level`` under ``policy``, so
    ``dense % 100 >> RankerScorer(ranker, policy=calibration.policy)`` reranks.

    Passages may be ``Passage`` records (their ``encoder_text()``) or strings. ``stats``
    totals what the calls cost (pairs, FLOPs spent and the full model's, exit layers), kept
    under a lock so threads may share the scorer.
    """

    def __init__(
        self,
        ranker: ElasticRanker,
        level: Level | str = FULL,
        policy: Policy | str | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.ranker = ranker
        self.level = ranker.check_level(level)
        self.policy = None if policy is None else parse_policy(policy)
        ranker._resolve(self.level, self.policy)  # fail now, not at the first query
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._totals = {"pairs": 0, "flops": 0, "full_flops": 0, "exit_layers": 0}

    @property
    def fingerprint(self) -> str:
        """The ranker's fingerprint with the level and exit policy: what lets a distillation
        run (``elasticir train dipair --teacher``) cache this scorer's scores on disk."""
        policy = "none" if self.policy is None else self.policy.spec
        return f"ranker-{self.ranker.fingerprint}-{self.level}-{policy}"

    @property
    def reads_ranks(self) -> bool:
        """Whether the policy reads first-stage ranks (a cascade then passes ``first_rank``)."""
        return self.policy is not None and getattr(self.policy, "uses_ranks", False)

    def score(
        self, query: str, passages: Sequence[Passage | str], first_rank: int = 1
    ) -> np.ndarray:
        """Scores of ``passages`` (in first-stage order; a rank policy reads passage ``i``'s
        rank as ``first_rank + i``)."""
        texts = [p if isinstance(p, str) else p.encoder_text() for p in passages]
        output = self.ranker.score(
            query, texts, self.level, self.policy, self.batch_size, first_rank=first_rank
        )
        with self._lock:
            self._totals["pairs"] += len(output)
            self._totals["flops"] += output.total_flops
            self._totals["full_flops"] += int(output.full_flops.sum())
            self._totals["exit_layers"] += int(output.exit_layers.sum())
        return output.scores

    @property
    def stats(self) -> dict[str, float]:
        """Pairs scored, FLOPs spent, the full model's FLOPs, speedup and mean exit layer."""
        with self._lock:
            totals = dict(self._totals)
        pairs, spent = totals["pairs"], totals["flops"]
        return {
            "pairs": pairs,
            "flops": spent,
            "full_flops": totals["full_flops"],
            "speedup": totals["full_flops"] / spent if spent else 1.0,
            "mean_exit_layer": totals["exit_layers"] / pairs if pairs else 0.0,
        }

    def __repr__(self) -> str:
        policy = "" if self.policy is None else f", policy={self.policy.spec!r}"
        precision = "" if self.ranker.precision == "fp32" else f", {self.ranker.precision}"
        return (
            f"RankerScorer({self.ranker.model_name!r}, level={str(self.level)!r}{policy}"
            f"{precision})"
        )
