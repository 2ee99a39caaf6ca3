"""Elastic optimization of ElasticDenser's query encoder: every level distilled into one space.

The index space is fixed by the *full* passage encoder: the passage side stays the frozen
original model, and the query side is trained so that every compute level lands in that
space. One index then serves every query level.

:func:`train_denser` (``elasticir train denser``) does it, in these modules:

* :mod:`~elasticir.train.denser.config`: :class:`DenserTrainConfig`, what decides a run;
* :mod:`~elasticir.train.denser.texts`: the training queries and the passage pool;
* :mod:`~elasticir.train.denser.distillation`: the teacher's vectors of both and the mined
  candidates (:func:`prepare_distillation`, cached and resumable);
* :mod:`~elasticir.train.denser.student`: the student, the base model reordered by importance
  so that every level is a nested sub-network (:func:`initial_student`);
* :mod:`elasticir.train.losses.listwise`: each level's loss, listwise distillation over own and
  in-batch candidates plus alignment to the teacher's query vector;
* :mod:`~elasticir.train.denser.loop`: the sandwich-rule loop, its checkpoints and the model
  written (:func:`train_denser`).

Everything is seeded and resumable: a rerun of the same config after a kill resumes from the
last checkpoint and ends with the weights an uninterrupted run ends with (same device and
thread count).
"""

from elasticir.models.elastic import level_menu
from elasticir.train.denser.config import CORPUS_DATASETS, DenserTrainConfig, check_focus
from elasticir.train.denser.distillation import (
    QUERY_PART,
    Distillation,
    pool,
    prepare_distillation,
)
from elasticir.train.denser.loop import (
    CHECKPOINT_FORMAT,
    denser_optimizer,
    level_plan,
    train_denser,
)
from elasticir.train.denser.student import initial_student, query_agreement
from elasticir.train.denser.texts import PSEUDO_QUERY_WORDS, pseudo_queries
from elasticir.train.losses.listwise import LevelLoss

__all__ = [
    "CHECKPOINT_FORMAT",
    "CORPUS_DATASETS",
    "PSEUDO_QUERY_WORDS",
    "QUERY_PART",
    "DenserTrainConfig",
    "Distillation",
    "LevelLoss",
    "check_focus",
    "denser_optimizer",
    "initial_student",
    "level_menu",
    "level_plan",
    "pool",
    "prepare_distillation",
    "pseudo_queries",
    "query_agreement",
    "train_denser",
]
