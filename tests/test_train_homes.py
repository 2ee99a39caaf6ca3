"""The split training modules keep their old import paths: every name the old single modules
defined is still there, and is the very object of its new home."""

from __future__ import annotations

import importlib

import pytest

# the public names the old single modules defined; where each now lives
OLD_NAMES = {
    "elasticir.train.denser": {
        "elasticir.train.denser.config": "CORPUS_DATASETS DenserTrainConfig",
        "elasticir.train.denser.texts": "PSEUDO_QUERY_WORDS pseudo_queries",
        "elasticir.train.denser.distillation": "QUERY_PART Distillation pool prepare_distillation",
        "elasticir.train.denser.student": "initial_student query_agreement",
        "elasticir.train.denser.loop": "CHECKPOINT_FORMAT train_denser",
        "elasticir.train.losses.listwise": "LevelLoss",
        "elasticir.models.elastic": "level_menu",
    },
    "elasticir.train.ranker": {
        "elasticir.train.ranker.config": (
            "DEFAULT_SOURCES JUDGED_FIELDS SOURCES WEIGHTINGS RankerTrainConfig"
        ),
        "elasticir.train.groups": "RankingGroup",
        "elasticir.train.ranker.sources": "read_source",
        "elasticir.train.ranker.data": "GroupBatch TrainingGroups batch_tensors load_groups",
        "elasticir.train.ranker.net": "initial_net",
        "elasticir.train.losses.ranker": "LOSS_NAMES ExitLoss exit_weights group_losses",
        "elasticir.train.ranker.exit_classifier": "exit_agreement fit_exit_classifier",
        "elasticir.train.ranker.loop": "CHECKPOINT_FORMAT train_ranker width_plan",
        "elasticir.train.ranker.interpolate": "INTERPOLATION_FORMAT interpolate_ranker",
    },
    "elasticir.train.dipair": {
        "elasticir.train.dipair.config": "SOURCES DiPairTrainConfig",
        "elasticir.train.dipair.groups": "TrainingGroup read_groups",
        "elasticir.train.dipair.teacher": "Teacher export_teacher_inputs",
        "elasticir.train.dipair.data": "DiPairData StepBatch prepare_dipair_data",
        "elasticir.train.dipair.loop": "CHECKPOINT_FORMAT initial_dipair train_dipair",
    },
    "elasticir.train.projection": {
        "elasticir.train.corpora": "corpus_file default_cache file_sha256 teacher_corpus_store",
    },
}


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_old_paths_keep_every_name_as_the_same_object(old: str) -> None:
    module = importlib.import_module(old)
    for home, names in OLD_NAMES[old].items():
        new = importlib.import_module(home)
        for name in names.split():
            assert getattr(module, name) is getattr(new, name), f"{old}.{name}"
    assert all(hasattr(module, name) for name in getattr(module, "__all__", ()))


def test_one_digest_keys_every_run() -> None:
    from elasticir.train.keys import digest

    # the key of a run is this exact hash: resuming existing runs depends on it
    assert digest({"b": [1, 2], "a": "x"}) == digest({"a": "x", "b": [1, 2]})
    assert digest({"a": 1}) == "f9d86028c6e0d64e"
