"""Nested sub-networks of a BERT-style encoder: importance, reordering, sliced forward, FLOPs.

A compute level (``Level("L4-W75")``) names a sub-network of one checkpoint: the first
``depth`` transformer layers, and in each of them the first ``heads`` attention heads and the
first ``neurons`` feed-forward neurons, where::

    heads   = max(1, round(num_attention_heads * level.heads / 100))
    neurons = max(1, round(intermediate_size   * level.ffn   / 100))

(``L4-W75`` cuts both to 75%; ``L6-H100-F23`` keeps every head and 23% of the neurons.)

("round" is half-up on exact integers, so it never depends on float rounding.)

"The first" only makes sense once heads and neurons are ranked, so, as in COST-EFF and
ElasticLM, a checkpoint is made elastic by scoring every head and neuron on unlabelled text
(:func:`compute_importance`) and permuting each layer's weights so they are stored
most-important-first (:func:`reorder_`). The permutation is function-preserving -- the full
model computes exactly what it did before -- and afterwards *every prefix is a sub-network*:
a level is a slice of the stored weights, never a copy.

:func:`elastic_forward` runs such a prefix with ``F.linear`` on weight views and
``scaled_dot_product_attention``. It mutates no module and keeps nothing between calls: a pure
function of its inputs and the (read-only) weights, so two threads may run two levels of one
model at once. At ``Level("full")`` it computes what the Hugging Face forward computes.

:func:`level_flops` counts what a level costs; :func:`default_levels` derives a menu of levels
from full down to under 20% of full FLOPs; :func:`make_elastic` writes an elastic checkpoint
(the "plain truncation of the pretrained model" baseline: ranked and reordered, not trained)
that ``ElasticDenser`` loads with its menu of levels.

Supported: BERT-style post-LayerNorm encoders with absolute positions (``BertModel`` and its
look-alikes: ``model.embeddings``, ``model.encoder.layer[i].attention.self.{query,key,value}``,
``.attention.output.{dense,LayerNorm}``, ``.intermediate.dense``, ``.output.{dense,LayerNorm}``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from elasticir.compute.flops import (
    DEFAULT_LEVELS,
    SubNetwork,
    default_levels,
    flops_ratio,
    layer_flops,
    level_flops,
    level_menu,
    sub_network,
)
from elasticir.compute.levels import FULL, Level
from elasticir.data.manifest import MODEL_MANIFEST, write_json
from elasticir.models.loading import quiet_loading, read_settings, resolve_model_path

__all__ = [
    "DEFAULT_LEVELS",
    "Importance",
    "SubNetwork",
    "check_model",
    "compute_importance",
    "default_levels",
    "elastic_forward",
    "embed",
    "extract_sub_network",
    "flops_ratio",
    "layer_flops",
    "layer_step",
    "level_flops",
    "level_menu",
    "make_elastic",
    "reorder_",
    "sub_network",
]

# --------------------------------------------------------------------------- the model


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The BERT-style base model inside ``model`` (itself, or ``model.base_model``)."""
    base = model
    if not hasattr(base, "encoder"):
        base = getattr(model, "base_model", model)
    config = getattr(base, "config", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    ok = config is not None and hasattr(base, "embeddings") and layers is not None
    if ok:
        try:
            layer = layers[0]
            layer.attention.self.query, layer.attention.output.dense  # noqa: B018
            layer.intermediate.dense, layer.output.dense  # noqa: B018
        except (AttributeError, IndexError, TypeError):
            ok = False
    if not ok:
        raise TypeError(
            f"elastic levels need a BERT-style encoder (embeddings + encoder.layer[i] with "
            f"attention.self.query/key/value, intermediate, output); got {type(model).__name__}"
        )
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise TypeError("elastic levels support bidirectional encoders only, not decoders")
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise TypeError(
            f"elastic levels support absolute position embeddings only, "
            f"not {config.position_embedding_type!r}"
        )
    return base


def check_model(model: torch.nn.Module) -> None:
    """Raise ``TypeError`` unless ``model`` is an encoder whose levels can be sliced."""
    _backbone(model)


def _head_dim(config: Any) -> int:
    return int(config.hidden_size) // int(config.num_attention_heads)


def _layer_forward(
    layer: torch.nn.Module,
    x: torch.Tensor,
    keep: torch.Tensor,
    heads: int,
    neurons: int,
    head_dim: int,
    record: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One post-LN BertLayer restricted to its first ``heads`` heads and ``neurons`` neurons.

    Same operations as Hugging Face's BertLayer (including its dropouts, which are no-ops in
    eval mode), on slices of the stored weights; ``keep`` is the boolean key mask, broadcast
    as ``(batch, 1, 1, keys)``, True where a token takes part (or a float bias added to the
    attention logits, see :func:`layer_step`).
    """
    attention, width = layer.attention, heads * head_dim
    self_att, att_out = attention.self, attention.output
    batch, tokens, _ = x.shape

    def project(linear: torch.nn.Linear) -> torch.Tensor:
        bias = None if linear.bias is None else linear.bias[:width]
        y = F.linear(x, linear.weight[:width], bias)
        return y.view(batch, tokens, heads, head_dim).transpose(1, 2)

    dropout = self_att.dropout.p if self_att.training else 0.0
    context = F.scaled_dot_product_attention(
        project(self_att.query),
        project(self_att.key),
        project(self_att.value),
        attn_mask=keep,
        dropout_p=dropout,
    )  # scale defaults to 1/sqrt(head_dim), as in BERT
    context = context.transpose(1, 2).reshape(batch, tokens, width)
    projected = F.linear(context, att_out.dense.weight[:, :width], att_out.dense.bias)
    attended = att_out.LayerNorm(att_out.dropout(projected) + x)

    inner, outer = layer.intermediate, layer.output
    bias = None if inner.dense.bias is None else inner.dense.bias[:neurons]
    activation = inner.intermediate_act_fn(F.linear(attended, inner.dense.weight[:neurons], bias))
    ffn = F.linear(activation, outer.dense.weight[:, :neurons], outer.dense.bias)
    if record is not None:
        record["context"], record["activation"] = context, activation
    return outer.LayerNorm(outer.dropout(ffn) + attended)


def elastic_forward(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    level: Level | str = FULL,
    *,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``last_hidden_state`` ``(batch, tokens, hidden)`` of ``model``'s sub-network ``level``.

    Runs the embeddings, then the first ``depth`` layers on the first ``heads`` heads and
    ``neurons`` FFN neurons of each (see :func:`sub_network`), by slicing the stored weights:
    no module is changed and nothing is kept, so concurrent calls at different levels are
    safe. Grad mode is the caller's (wrap in ``torch.inference_mode()`` to encode; gradients
    flow to the kept slices when training). Meaningful for narrow levels once the model's
    heads and neurons are sorted by importance (:func:`reorder_`).
    """
    base = _backbone(model)
    config = base.config
    sub = sub_network(config, level)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    keep = attention_mask.to(torch.bool)[:, None, None, :]
    hidden = base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    head_dim = _head_dim(config)
    for layer in base.encoder.layer[: sub.depth]:
        hidden = _layer_forward(layer, hidden, keep, sub.heads, sub.neurons, head_dim)
    return hidden


def extract_sub_network(model: torch.nn.Module, level: Level | str) -> torch.nn.Module:
    """A standalone copy of ``model`` that is only the sub-network ``level`` names.

    The copy is a plain Hugging Face model with fewer layers, heads and FFN neurons (the
    first ones, which :func:`reorder_` made the most important, exactly those
    :func:`elastic_forward` keeps): it runs with no elastic code at all. So it checks that a
    level's outputs are its sub-network's (the contract tests do), and a level can be saved
    with ``save_pretrained`` and served alone. ``model`` is not changed.
    """
    import copy

    source = _backbone(model)
    sub = sub_network(source.config, level)
    head_dim = _head_dim(source.config)
    width = sub.heads * head_dim
    small = copy.deepcopy(model)
    base = _backbone(small)
    base.encoder.layer = base.encoder.layer[: sub.depth]
    for layer in base.encoder.layer:
        attention = layer.attention.self
        for name in ("query", "key", "value"):
            setattr(attention, name, _rows(getattr(attention, name), width))
        attention.num_attention_heads, attention.all_head_size = sub.heads, width
        layer.attention.output.dense = _columns(layer.attention.output.dense, width)
        layer.intermediate.dense = _rows(layer.intermediate.dense, sub.neurons)
        layer.output.dense = _columns(layer.output.dense, sub.neurons)
    config = base.config
    config.num_hidden_layers, config.intermediate_size = sub.depth, sub.neurons
    config.num_attention_heads = sub.heads
    config.head_dim = head_dim  # hidden_size / heads no longer gives it
    return small


def _rows(linear: torch.nn.Linear, keep: int) -> torch.nn.Linear:
    out = torch.nn.Linear(linear.in_features, keep, bias=linear.bias is not None)
    out.weight.data.copy_(linear.weight.data[:keep])
    if linear.bias is not None:
        out.bias.data.copy_(linear.bias.data[:keep])
    return out.to(linear.weight.device, linear.weight.dtype)


def _columns(linear: torch.nn.Linear, keep: int) -> torch.nn.Linear:
    out = torch.nn.Linear(keep, linear.out_features, bias=linear.bias is not None)
    out.weight.data.copy_(linear.weight.data[:, :keep])
    if linear.bias is not None:
        out.bias.data.copy_(linear.bias.data)
    return out.to(linear.weight.device, linear.weight.dtype)


# --------------------------------------------------------------------------- importance


@dataclass(frozen=True)
class Importance:
    """Label-free importance of every attention head and FFN neuron, layer by layer.

    ``heads[i]`` is ``(num_heads,)`` and ``neurons[i]`` ``(intermediate_size,)``, float64 on CPU;
    higher is more important. ``num_texts`` / ``num_tokens``: what the scores averaged over.
    """

    heads: tuple[torch.Tensor, ...]
    neurons: tuple[torch.Tensor, ...]
    num_texts: int
    num_tokens: int

    @property
    def num_layers(self) -> int:
        return len(self.heads)

    def head_order(self, layer: int) -> torch.Tensor:
        """Head indices of ``layer``, most important first (ties: lower index first)."""
        return torch.argsort(self.heads[layer], descending=True, stable=True)

    def neuron_order(self, layer: int) -> torch.Tensor:
        """FFN neuron indices of ``layer``, most important first (ties: lower index first)."""
        return torch.argsort(self.neurons[layer], descending=True, stable=True)


def compute_importance(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int = 128,
    batch_size: int = 32,
) -> Importance:
    """Score heads and FFN neurons on unlabelled ``texts``; deterministic for fixed inputs.

    Both scores measure how much a unit writes into the residual stream, averaged over every
    (non-padding) token of ``texts`` under the full model:

    * head ``h``: the mean L2 norm of its contribution after the attention output
      projection, ``context_h @ W_o[:, h-slice].T`` -- how far the head moves the token;
    * neuron ``j``: the mean ``|GELU activation|`` times the L2 norm of column ``j`` of the
      FFN output weight -- its mean output magnitude.

    Magnitude-based and label-free (no loss, no gradients), in the spirit of COST-EFF and
    ElasticLM, which rank heads and neurons by importance and reorder them so that any prefix
    is a sub-network. The model is put in eval mode for the pass and restored after.
    """
    base = _backbone(model)
    config = base.config
    layers, num_heads = int(config.num_hidden_layers), int(config.num_attention_heads)
    head_dim, intermediate = _head_dim(config), int(config.intermediate_size)
    texts = list(texts)
    if not texts:
        raise ValueError("compute_importance needs at least one text")
    device = next(model.parameters()).device
    head_sum = torch.zeros(layers, num_heads, dtype=torch.float64)
    neuron_sum = torch.zeros(layers, intermediate, dtype=torch.float64)
    num_tokens = 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                features = tokenizer(
                    texts[start : start + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(device)
                mask = features["attention_mask"].to(torch.bool)
                keep = mask[:, None, None, :]
                hidden = base.embeddings(
                    input_ids=features["input_ids"],
                    token_type_ids=features.get("token_type_ids"),
                )
                for i, layer in enumerate(base.encoder.layer):
                    record: dict[str, torch.Tensor] = {}
                    hidden = _layer_forward(
                        layer, hidden, keep, num_heads, intermediate, head_dim, record
                    )
                    # |context_h @ W_o[:, h].T| via the head's 32x32 Gram matrix W_h^T W_h:
                    # the same number as the norm of the projected contribution, 12x cheaper
                    context = record["context"][mask].float().view(-1, num_heads, head_dim)
                    w_out = layer.attention.output.dense.weight.float()
                    w_out = w_out.view(-1, num_heads, head_dim).transpose(0, 1)  # (heads, hid, hd)
                    gram = w_out.transpose(1, 2) @ w_out  # (heads, hd, hd)
                    squared = (torch.einsum("nhd,hde->nhe", context, gram) * context).sum(-1)
                    head_sum[i] += squared.clamp(min=0).sqrt().sum(0).double().cpu()
                    neuron_sum[i] += record["activation"][mask].abs().sum(0).double().cpu()
                num_tokens += int(mask.sum())
    finally:
        model.train(was_training)
    column_norms = [
        layer.output.dense.weight.detach().double().norm(dim=0).cpu()
        for layer in base.encoder.layer
    ]
    return Importance(
        heads=tuple(head_sum[i] / num_tokens for i in range(layers)),
        neurons=tuple(neuron_sum[i] / num_tokens * column_norms[i] for i in range(layers)),
        num_texts=len(texts),
        num_tokens=num_tokens,
    )


def reorder_(model: torch.nn.Module, importance: Importance) -> Importance:
    """Permute ``model``'s weights in place so heads and neurons are most-important-first.

    Per layer: the Q/K/V rows (and biases) by head block and the attention output
    projection's columns by the same head order; the FFN input rows (and bias) and the FFN
    output columns by the neuron order. Every output of the full model is unchanged (up to
    float summation order). Returns ``importance`` in the new order (descending scores).
    """
    base = _backbone(model)
    config = base.config
    head_dim = _head_dim(config)
    layers = base.encoder.layer
    if importance.num_layers != len(layers) or any(
        importance.heads[i].numel() != config.num_attention_heads
        or importance.neurons[i].numel() != config.intermediate_size
        for i in range(len(layers))
    ):
        raise ValueError("importance scores do not match this model's layers, heads or neurons")
    heads, neurons = [], []
    with torch.no_grad():
        for i, layer in enumerate(layers):
            head_order, neuron_order = importance.head_order(i), importance.neuron_order(i)
            rows = (head_order[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)
            attention = layer.attention
            for linear in (attention.self.query, attention.self.key, attention.self.value):
                _permute_rows_(linear, rows)
            _permute_columns_(attention.output.dense, rows)
            _permute_rows_(layer.intermediate.dense, neuron_order)
            _permute_columns_(layer.output.dense, neuron_order)
            heads.append(importance.heads[i][head_order])
            neurons.append(importance.neurons[i][neuron_order])
    return Importance(tuple(heads), tuple(neurons), importance.num_texts, importance.num_tokens)


def _permute_rows_(linear: torch.nn.Linear, index: torch.Tensor) -> None:
    index = index.to(linear.weight.device)
    linear.weight.copy_(linear.weight[index])  # advanced indexing copies first: safe in place
    if linear.bias is not None:
        linear.bias.copy_(linear.bias[index])


def _permute_columns_(linear: torch.nn.Linear, index: torch.Tensor) -> None:
    linear.weight.copy_(linear.weight[:, index.to(linear.weight.device)])


# --------------------------------------------------------------------------- checkpoints


def make_elastic(
    model_path: str | Path | None,
    output_dir: str | Path,
    texts: Sequence[str],
    levels: Iterable[Level | str] | None = None,
    *,
    max_length: int = 128,
    batch_size: int = 32,
) -> Path:
    """Write an elastic checkpoint of ``model_path`` to ``output_dir``; returns ``output_dir``.

    Loads the model (a directory, hub name, or None for the packaged default), scores heads
    and neurons on ``texts`` (:func:`compute_importance`), reorders them (:func:`reorder_`),
    and saves weights and tokenizer with ``save_pretrained`` plus an ``elasticir.json``::

        {"levels": ["full", ...], "pooling": ..., "normalize": ..., "max_length": ...,
         "elastic": {"reordered": true, "importance_texts": n, ...}}

    ``levels`` defaults to :func:`default_levels` of the model (:data:`DEFAULT_LEVELS` for
    six layers). This is the no-training baseline: plain truncation of the pretrained model.
    """
    from transformers import AutoModel, AutoTokenizer

    source = resolve_model_path(model_path)
    settings = read_settings(source)
    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source).eval()
    _backbone(model)
    config = model.config
    menu = level_menu(config, levels)
    importance = reorder_(
        model, compute_importance(model, tokenizer, texts, max_length, batch_size)
    )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_loading():  # transformers draws a progress bar for the one shard it writes
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    manifest = {
        "levels": [str(level) for level in menu],
        "pooling": settings.pooling,
        "normalize": settings.normalize,
        "max_length": settings.max_length,
        "elastic": {
            "reordered": True,
            "importance_texts": importance.num_texts,
            "importance_tokens": importance.num_tokens,
            "importance_max_length": max_length,
            "source_model": "all-MiniLM-L6-v2" if model_path is None else str(model_path),
        },
    }
    write_json(out / MODEL_MANIFEST, manifest)
    return out


# --------------------------------------------------------------------------- layer by layer


def embed(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The embedding output ``(batch, tokens, hidden)``: the input of layer 0 (``position_ids``
    default to ``0 .. tokens - 1`` in every row).

    With :func:`layer_step` this runs a sub-network one layer at a time; ``embed`` followed by
    ``layer_step`` for ``i = 0 .. depth - 1`` computes exactly :func:`elastic_forward`.
    """
    base = _backbone(model)
    return base.embeddings(
        input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids
    )


def layer_step(
    model: torch.nn.Module,
    index: int,
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    level: Level | str = FULL,
    attention_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run layer ``index`` (0-based) of ``model`` at ``level``'s width on ``hidden``.

    ``attention_mask`` is ``(batch, tokens)``, nonzero where a token takes part.
    ``attention_bias``, if given, replaces it inside the attention: a float tensor added to
    the attention logits, broadcastable to ``(batch, heads of the level, tokens, tokens)``,
    ``-inf`` where a key must not be attended (padding included). The width
    (heads and FFN neurons kept) is ``level``'s; ``index`` must lie inside its depth. Like
    :func:`elastic_forward`, a pure function of its inputs and the weights: callers may drop
    rows (``index_select``) or trailing padding columns between steps, which is how a
    multi-exit model stops computing for inputs that have already exited.
    """
    base = _backbone(model)
    config = base.config
    sub = sub_network(config, level)
    if not 0 <= index < sub.depth:
        raise ValueError(f"layer {index} is outside level {Level(level)} (depth {sub.depth})")
    keep = attention_bias
    if keep is None:
        keep = attention_mask.to(torch.bool)[:, None, None, :]
    layer = base.encoder.layer[index]
    return _layer_forward(layer, hidden, keep, sub.heads, sub.neurons, _head_dim(config))
