"""DiPair's loss on one batch of groups: ``ce_weight * CE + kl_weight * KL``.

* CE: listwise cross-entropy of the student's softmax over the group against the positive
  (slot 0), for the labelled groups;
* KL: ``KL(teacher || student)`` over the group, for the groups with teacher logits (already
  standardised per group and divided by the temperature, :mod:`elasticir.train.dipair.teacher`).

Padding slots (``-inf`` student scores) take no part in either.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["dipair_losses"]


def dipair_losses(
    scores: torch.Tensor,
    teacher: np.ndarray,
    mask: np.ndarray,
    labelled: np.ndarray | None,
    ce_weight: float,
    kl_weight: float,
) -> dict[str, torch.Tensor]:
    """``{"ce", "kl", "total"}`` of student ``scores`` ``(B, G)`` (tensors; ``kl`` is 0
    without teachers, ``ce`` 0 without labelled groups; each is a mean over the groups it
    covers). ``teacher`` ``(B, G)`` holds the teacher logits (NaN rows: no teacher), ``mask``
    ``(B, G)`` the real slots, ``labelled`` ``(B,)`` which groups have a positive (None:
    all)."""
    log_p = F.log_softmax(scores, dim=-1)
    if labelled is None:
        ce = -log_p[:, 0].mean()
    elif labelled.any():
        rows = torch.from_numpy(np.nonzero(labelled)[0]).to(scores.device)
        ce = -log_p[rows, 0].mean()
    else:
        ce = scores.new_zeros(())
    has_teacher = ~np.isnan(teacher[:, 0])
    if has_teacher.any():
        rows = torch.from_numpy(np.nonzero(has_teacher)[0]).to(scores.device)
        target_logits = torch.from_numpy(teacher).to(scores.device)[rows]
        valid = torch.from_numpy(mask).to(scores.device)[rows]
        target_logits = target_logits.masked_fill(~valid, float("-inf"))
        target = F.softmax(target_logits, dim=-1)
        student = log_p[rows].masked_fill(~valid, 0.0)
        target_log = torch.log(target.clamp_min(1e-30)).masked_fill(~valid, 0.0)
        kl = (target * (target_log - student)).sum(-1).mean()
    else:
        kl = scores.new_zeros(())
    total = ce_weight * ce + kl_weight * kl
    return {"ce": ce, "kl": kl, "total": total}
