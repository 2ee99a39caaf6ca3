"""Listwise distillation of a fixed teacher, and alignment to the teacher's query vectors.

For ElasticDenser (``elasticir train denser``) each trained level adds, per batch,

* listwise distillation: ``KL(teacher || student)`` of the softmax over ``score / tau`` where a
  query's candidates are its own mined top-k *and* every other batch query's (in-batch
  negatives), scored by dot product with the **fixed** teacher passage vectors;
* embedding alignment: ``align_weight * (1 - cos(student query, teacher query))``, which pulls
  each level's query vector toward the full model's, i.e. into the passage space.

The learned projections (``elasticir train projection``) are fitted with the same listwise
term, the projected scores as the student's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LevelLoss", "alignment", "level_loss", "listwise_kl"]


@dataclass(frozen=True)
class LevelLoss:
    """One level's loss on one batch: ``total = kl + align_weight * align`` (a tensor)."""

    kl: torch.Tensor
    align: torch.Tensor
    total: torch.Tensor

    def values(self) -> dict[str, float]:
        return {
            "kl": self.kl.item(),
            "align": self.align.item(),
            "total": self.total.item(),
        }


def listwise_kl(
    student_scores: torch.Tensor, teacher_scores: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``KL(teacher || student)`` of the row softmaxes over ``scores / temperature`` ``(B, C)``,
    summed over a row's candidates and averaged over the rows."""
    teacher_log = F.log_softmax(teacher_scores / temperature, dim=-1)
    student_log = F.log_softmax(student_scores / temperature, dim=-1)
    return F.kl_div(student_log, teacher_log, log_target=True, reduction="batchmean")


def alignment(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos`` between each student query vector and its teacher's ``(B, dim)``."""
    return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def level_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    passages: torch.Tensor,
    temperature: float,
    align_weight: float,
) -> LevelLoss:
    """A level's loss: listwise KL of the student and teacher query vectors ``(B, dim)``
    scored against the teacher ``passages`` ``(C, dim)``, plus weighted alignment."""
    kl = listwise_kl(student @ passages.T, teacher @ passages.T, temperature)
    align = alignment(student, teacher)
    return LevelLoss(kl, align, kl + align_weight * align)
