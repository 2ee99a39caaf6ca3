"""Two-stage training of the DiPair head (``elasticir.models.dipair``), distilled from teachers.

:func:`train_dipair` (``elasticir train dipair``) does it, in these modules:

* :mod:`~elasticir.train.dipair.config`: :class:`DiPairTrainConfig`, what decides a run;
* :mod:`~elasticir.train.dipair.groups`: the training groups of the labelled files (and the
  unlabelled anchor groups of :mod:`elasticir.train.anchor`);
* :mod:`~elasticir.train.dipair.teacher`: the teacher targets (a teacher model, a scores file
  or the files' own scores) and :func:`export_teacher_inputs`;
* :mod:`~elasticir.train.dipair.frozen`: the frozen base encoder's cached token outputs;
* :mod:`~elasticir.train.dipair.data`: the training problem of a run and each step's batch;
* :mod:`elasticir.train.losses.dipair`: ``ce_weight * CE + kl_weight * KL`` over a group;
* :mod:`~elasticir.train.dipair.loop`: stage 1 (head on the frozen encoder's outputs), stage 2
  (end to end), checkpoints and the model written.

A rerun of the same config after a kill resumes from the last checkpoint and ends with the
weights an uninterrupted run ends with (same device and thread count).
"""

from elasticir.train.dipair.config import SOURCES, DiPairTrainConfig
from elasticir.train.dipair.data import DiPairData, StepBatch, prepare_dipair_data
from elasticir.train.dipair.groups import TrainingGroup, read_groups
from elasticir.train.dipair.loop import CHECKPOINT_FORMAT, initial_dipair, train_dipair
from elasticir.train.dipair.teacher import Teacher, export_teacher_inputs

__all__ = [
    "CHECKPOINT_FORMAT",
    "SOURCES",
    "DiPairData",
    "DiPairTrainConfig",
    "StepBatch",
    "Teacher",
    "TrainingGroup",
    "export_teacher_inputs",
    "initial_dipair",
    "prepare_dipair_data",
    "read_groups",
    "train_dipair",
]
