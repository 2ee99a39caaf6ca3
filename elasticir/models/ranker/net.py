"""The ranker's trainable modules: exit heads, the exit classifier and :class:`RankerNet`.

Exit head ``i`` reads layer ``i``'s [CLS] state: ``Linear(hidden, 1)(tanh(Linear(hidden,
hidden)(cls)))`` -- the shape of BERT's pooler + a sequence-classification layer, initialised
from the checkpoint's own pooler (and from its ``classifier`` when it is a one-logit
cross-encoder). The exit classifier is CALM's: per layer, a logit that this layer's score
already agrees with the deepest exit's.

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

``exits.safetensors`` (``EXITS_FILE``) holds what :meth:`RankerNet.exit_state` gives:
``heads.*``, the exit heads; ``gates``, the pooled head's attention gates; ``classifier.*``,
the learned exit classifier, when trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from elasticir.compute.levels import FULL, Level
from elasticir.data.errors import InputFormatError
from elasticir.models.elastic import check_model, embed, layer_step, sub_network

__all__ = [
    "CLASSIFIER_DESCRIPTION",
    "DEFAULT_GATE_INIT",
    "EXITS_FILE",
    "HEADS",
    "HEAD_DESCRIPTIONS",
    "POOLED_OFFSET",
    "POOLED_SCALE",
    "ExitClassifier",
    "ExitHeads",
    "PairMasks",
    "RankerNet",
    "scale_grad",
]

EXITS_FILE = "exits.safetensors"
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
