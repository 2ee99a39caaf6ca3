"""ElasticDenser's student: where training starts, and how far its levels land from the teacher.

The student is a copy of the base model with heads and neurons ranked by importance on
training queries and reordered (:func:`elasticir.models.elastic.reorder_`), so every level
is a nested sub-network of one set of weights (:func:`elasticir.models.elastic.elastic_forward`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from elasticir.compute.levels import Level
from elasticir.models.elastic import Importance, compute_importance, reorder_
from elasticir.models.loading import quiet_loading

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser
    from elasticir.train.denser.config import DenserTrainConfig
    from elasticir.train.denser.distillation import Distillation

__all__ = ["initial_student", "query_agreement"]


def initial_student(
    config: DenserTrainConfig, distillation: Distillation
) -> tuple[torch.nn.Module, Importance]:
    """A copy of the base model, heads and neurons reordered by importance on training queries.

    The importance texts are the first ``importance_queries`` training queries of a seeded
    shuffle; the result is deterministic for a config.
    """
    from transformers import AutoModel

    with quiet_loading():
        model = AutoModel.from_pretrained(distillation.base_path)
    model.to(distillation.device).eval()
    rng = np.random.default_rng([config.seed, 3])
    picked = rng.permutation(len(distillation.queries))[: config.importance_queries]
    texts = [distillation.queries[int(i)] for i in picked]
    importance = compute_importance(
        model, distillation.tokenizer, texts, max_length=config.max_query_length
    )
    return model, reorder_(model, importance)


def query_agreement(
    student: ElasticDenser,
    teacher: ElasticDenser,
    queries: Sequence[str],
    levels: Sequence[Level | str] | None = None,
) -> dict[str, float]:
    """Mean cosine between ``student``'s query vectors at each level and ``teacher``'s at full.

    The teacher is the model whose full-compute space the index lives in (for a trained
    model, its passage encoder). 1.0 means a level's queries land where the full model's do.
    """
    reference = torch.from_numpy(teacher.encode_queries(list(queries)))
    out: dict[str, float] = {}
    for level in levels if levels is not None else student.levels:
        vectors = torch.from_numpy(student.encode_queries(list(queries), level=level))
        out[str(Level(level))] = float(F.cosine_similarity(vectors, reference, dim=-1).mean())
    return out
