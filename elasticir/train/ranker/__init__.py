"""Training ElasticRanker: every exit, at every trained width, on labelled ranking groups.

:func:`train_ranker` (``elasticir train ranker``) does it, in these modules:

* :mod:`~elasticir.train.ranker.config`: :class:`RankerTrainConfig`, what decides a run, and
  the training sources;
* :mod:`~elasticir.train.ranker.sources`: the training files as ranking groups
  (:class:`~elasticir.train.groups.RankingGroup`: one query, one positive, its negatives,
  teacher scores where the source has them);
* :mod:`~elasticir.train.ranker.data`: the groups of a config (sources, plus the judged folds
  of :mod:`elasticir.train.judged` and the anchor groups of :mod:`elasticir.train.anchor`) and
  each step's batch;
* :mod:`~elasticir.train.ranker.net`: the start, the base encoder reordered by importance
  (each width a prefix) with exit heads from its pooler, or a trained ranker;
* :mod:`elasticir.train.losses.ranker`: every exit's loss at a width (labels, teacher,
  self-distillation, pointwise);
* :mod:`~elasticir.train.ranker.loop`: the sandwich over widths, checkpoints, the model written;
* :mod:`~elasticir.train.ranker.exit_classifier`: the CALM exit classifier, fitted after
  training on held-out queries;
* :mod:`~elasticir.train.ranker.interpolate`: WiSE-FT, the trained weights mixed with the
  run's start (:func:`interpolate_ranker`).

Seeded and resumable: rerunning the same config resumes from the last checkpoint and ends with
the weights an uninterrupted run ends with (same device and thread count).
"""

from elasticir.train.groups import RankingGroup
from elasticir.train.losses.ranker import LOSS_NAMES, ExitLoss, exit_weights, group_losses
from elasticir.train.ranker.config import (
    DEFAULT_SOURCES,
    JUDGED_FIELDS,
    SOURCES,
    WEIGHTINGS,
    RankerTrainConfig,
)
from elasticir.train.ranker.data import GroupBatch, TrainingGroups, batch_tensors, load_groups
from elasticir.train.ranker.exit_classifier import exit_agreement, fit_exit_classifier
from elasticir.train.ranker.interpolate import INTERPOLATION_FORMAT, interpolate_ranker
from elasticir.train.ranker.loop import CHECKPOINT_FORMAT, train_ranker, width_plan
from elasticir.train.ranker.net import initial_net, start_net
from elasticir.train.ranker.sources import read_source

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_SOURCES",
    "INTERPOLATION_FORMAT",
    "JUDGED_FIELDS",
    "LOSS_NAMES",
    "SOURCES",
    "WEIGHTINGS",
    "ExitLoss",
    "GroupBatch",
    "RankerTrainConfig",
    "RankingGroup",
    "TrainingGroups",
    "batch_tensors",
    "exit_agreement",
    "exit_weights",
    "fit_exit_classifier",
    "group_losses",
    "initial_net",
    "interpolate_ranker",
    "load_groups",
    "read_source",
    "start_net",
    "train_ranker",
    "width_plan",
]
