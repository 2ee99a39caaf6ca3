"""The CALM exit classifier of a trained ranker: :func:`fit_exit_classifier`.

After the last training step, the classifier is fitted on ``exit_holdout`` held-out training
queries (never trained on): for each layer, at every trained width, the target is whether the
candidate's layer-``i`` score sits in the same place among its group's deepest-exit scores as
its own deepest-exit score (no pair of the group changes order), :func:`exit_agreement`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from elasticir.compute.levels import Level
from elasticir.models.ranker import RankerNet
from elasticir.train.ranker.data import GroupBatch, batch_tensors

if TYPE_CHECKING:
    from elasticir.train.ranker.config import RankerTrainConfig
    from elasticir.train.ranker.data import TrainingGroups

__all__ = ["exit_agreement", "fit_exit_classifier"]


def exit_agreement(scores: torch.Tensor) -> torch.Tensor:
    """Targets of the exit classifier from ``scores`` ``(size, group, layers)``: ``[b, c, i]``
    is 1 when candidate ``c``'s layer-``i`` score sits where its deepest score does among the
    group's other deepest scores (no pair changes order), else 0."""
    deepest = scores[:, :, -1]  # (B, G)
    others = deepest[:, None, :, None]  # (B, 1, G', 1)
    mine = deepest[:, :, None, None]  # (B, G, 1, 1)
    layer = scores[:, :, None, :]  # (B, G, 1, L)
    same_side = (layer > others) == (mine > others)  # (B, G, G', L)
    group = scores.shape[1]
    eye = torch.eye(group, dtype=torch.bool, device=scores.device)[None, :, :, None]
    return (same_side | eye).all(dim=2).float()


def fit_exit_classifier(
    net: RankerNet,
    tokenizer: Any,
    groups: TrainingGroups,
    widths: Sequence[int],
    config: RankerTrainConfig,
    device: Any,
) -> dict[str, Any]:
    """Fit ``net.classifier`` on the held-out groups (trunk and heads frozen): features and
    targets from every exit at every width, full-batch Adam with BCE for
    ``classifier_steps`` steps. Returns per-layer statistics for the model card."""
    holdout = groups.holdout
    rng = np.random.default_rng([config.seed, 503])
    batch = groups.make_batch(holdout, rng)
    types = int(getattr(net.config, "type_vocab_size", 1) or 1) > 1
    layers = net.num_layers
    features: list[list[torch.Tensor]] = [[] for _ in range(layers)]
    targets: list[list[torch.Tensor]] = [[] for _ in range(layers)]
    net.eval()
    chunk = max(1, config.batch_size)
    with torch.no_grad():
        for width in widths:
            level = Level(depth=layers, width=width)
            for start in range(0, batch.size, chunk):
                size = min(chunk, batch.size - start)
                g = batch.group
                part = GroupBatch(
                    batch.queries[start * g : (start + size) * g],
                    batch.passages[start * g : (start + size) * g],
                    batch.teacher[start : start + size],
                    batch.has_teacher[start : start + size],
                    batch.labelled[start : start + size],
                    size,
                    g,
                )
                input_ids, token_types, mask = batch_tensors(part, tokenizer, config, device, types)
                scores, states = net.exit_outputs(input_ids, token_types, mask, level)
                agree = exit_agreement(scores.float().view(size, g, layers)).view(-1, layers)
                for i in range(layers):
                    features[i].append(net.classifier.features(states[i + 1], scores[:, i]).float())
                    targets[i].append(agree[:, i])
    stats: dict[str, Any] = {"examples_per_layer": 0, "layers": []}
    for i in range(layers):  # full-batch Adam from the seeded init: deterministic
        x, y = torch.cat(features[i]), torch.cat(targets[i])
        linear = net.classifier.linear[i]
        linear.requires_grad_(True)
        optimizer = torch.optim.Adam(linear.parameters(), lr=config.classifier_lr)
        for _ in range(config.classifier_steps):
            optimizer.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(linear(x).squeeze(-1), y)
            loss.backward()
            optimizer.step()
        linear.requires_grad_(False)
        with torch.no_grad():
            predicted = linear(x).squeeze(-1) > 0
            accuracy = float((predicted == (y > 0.5)).float().mean())
        stats["examples_per_layer"] = len(y)
        stats["layers"].append(
            {
                "layer": i + 1,
                "agree_rate": round(float(y.mean()), 4),
                "accuracy": round(accuracy, 4),
                "bce": round(float(loss.item()), 4),
            }
        )
    stats["groups"] = batch.size
    stats["widths"] = list(widths)
    return stats
