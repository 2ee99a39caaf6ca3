"""ElasticRanker's losses: every exit of one width on one batch of ranking groups.

For every exit ``i`` of ``L`` (weights ``w_i``: ``i`` normalised to sum 1 by default, or
uniform), summed over the widths of the step (:mod:`elasticir.train.ranker.loop`)::

    w_i * ( listwise_weight * CE(softmax over the group of s_i, positive)     [labelled]
          + teacher_weight  * KL(softmax(z(teacher) / teacher_temperature) || softmax(s_i))
          + self_weight     * KL(softmax(s_L at full width, detached) || softmax(s_i))
          + pointwise_weight * BCE(sigmoid(s_i), positive = 1, negatives = 0) )  [labelled]

``z(teacher)`` standardises a group's teacher scores (the sources' scales differ by 100x); the
self-distillation term skips the full width's own deepest exit; the small pointwise term pins
the scores' offset, which the listwise terms leave free, so ``sigmoid(score)`` is a relevance
probability (what the entropy and margin exit policies read). With ``grad_rescale`` (COST-EFF's
gradient equilibrium, :meth:`elasticir.models.ranker.RankerNet.exit_outputs`) the trunk below
layer ``i`` gets the *mean* of the ``L - i`` exit gradients above it instead of their sum.
The label terms skip unlabelled groups (the anchor groups), the teacher term the groups
without teacher scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from elasticir.compute.levels import Level

if TYPE_CHECKING:
    from elasticir.models.ranker import RankerNet
    from elasticir.train.ranker.config import RankerTrainConfig
    from elasticir.train.ranker.data import GroupBatch

__all__ = ["LOSS_NAMES", "ExitLoss", "exit_weights", "group_losses"]

LOSS_NAMES = ("listwise", "teacher", "self_distill", "pointwise", "total")


@dataclass(frozen=True)
class ExitLoss:
    """One width's loss on one batch: weighted sums over the exits, and ``per_exit`` totals."""

    listwise: torch.Tensor
    teacher: torch.Tensor
    self_distill: torch.Tensor
    pointwise: torch.Tensor
    total: torch.Tensor
    per_exit: torch.Tensor  # (layers,) unweighted total of each exit
    deepest_scores: torch.Tensor  # (size, group) the deepest exit's scores (graph kept)

    def values(self) -> dict[str, float]:
        out = {name: float(getattr(self, name).item()) for name in LOSS_NAMES}
        out["deepest_exit"] = float(self.per_exit[-1].item())
        return out


def exit_weights(layers: int, weighting: str) -> torch.Tensor:
    """Per-exit weights summing to 1: proportional to the layer number, or uniform."""
    if weighting == "uniform":
        weights = torch.ones(layers)
    else:
        weights = torch.arange(1, layers + 1, dtype=torch.float32)
    return weights / weights.sum()


def group_losses(
    net: RankerNet,
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    batch: GroupBatch,
    width: int,
    config: RankerTrainConfig,
    reference: torch.Tensor | None = None,
) -> ExitLoss:
    """Every exit's loss at ``width`` (see the module docstring); ``reference`` is the full
    width's deepest-exit scores ``(size, group)`` (detached here); None at full width, where
    this call's own deepest exit is the reference."""
    input_ids, token_types, mask = tensors
    layers = net.num_layers
    level = Level(depth=layers, width=width)
    scores, _ = net.exit_outputs(
        input_ids, token_types, mask, level, grad_rescale=config.grad_rescale
    )
    scores = scores.float().view(batch.size, batch.group, layers)  # (B, G, L)
    log_p = F.log_softmax(scores, dim=1)
    device = scores.device
    labels = torch.zeros(batch.size, batch.group, layers, device=device)
    labels[:, 0, :] = 1.0
    bce = F.binary_cross_entropy_with_logits(scores, labels, reduction="none").mean(1)  # (B, L)
    judged = batch.labelled.to(device)
    listwise = _group_mean(-log_p[:, 0, :], judged)  # (L,)
    pointwise = _group_mean(bce, judged)
    target = F.log_softmax(batch.teacher.to(device) / config.teacher_temperature, dim=1)
    kl = (target.exp()[..., None] * (target[..., None] - log_p)).sum(1)  # (B, L)
    teacher = _group_mean(kl, batch.has_teacher.to(device))
    own_reference = reference is None
    ref = (scores[:, :, -1] if own_reference else reference).detach()
    ref_log = F.log_softmax(ref, dim=1)
    self_kl = (ref_log.exp()[..., None] * (ref_log[..., None] - log_p)).sum(1).mean(0)  # (L,)
    if own_reference:
        self_kl = torch.cat([self_kl[:-1], torch.zeros(1, device=device)])
    per_exit = (
        config.listwise_weight * listwise
        + config.teacher_weight * teacher
        + config.self_weight * self_kl
        + config.pointwise_weight * pointwise
    )
    w = exit_weights(layers, config.exit_weighting).to(device)
    return ExitLoss(
        listwise=(w * listwise).sum(),
        teacher=(w * teacher).sum(),
        self_distill=(w * self_kl).sum(),
        pointwise=(w * pointwise).sum(),
        total=(w * per_exit).sum(),
        per_exit=per_exit.detach(),
        deepest_scores=scores[:, :, -1],
    )


def _group_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` ``(B, L)`` over the groups where ``keep`` ``(B,)`` is set; 0 where
    none is."""
    return (values * keep[:, None]).sum(0) / keep.sum().clamp(min=1)
