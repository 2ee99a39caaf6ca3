"""The split modules keep their old import paths: every name is the object at its new home."""

from __future__ import annotations

import importlib

import pytest

OLD_NAMES = {
    # the names the old single modules defined (or others imported from them)
    "elasticir.rerank.policies": (
        "BOUNDS CUTOFFS FAMILIES LOSSES MEASURES PRUNE_GAP Calibration CalibrationQuery "
        "ConfidencePolicy CutoffPolicy EntropyPolicy ExitPolicy FixedLevel Policy "
        "PolicyEvaluation PolicyFamily RankPolicy RankWeights Thresholds binary_entropy "
        "calibrate calibrate_families calibrate_records calibration_queries consistency_grades "
        "evaluate_policy first_stage_ranks fit_rank_exits hoeffding_bentkus_pvalue "
        "hoeffding_pvalue learn_then_test ndcg_at_k parse_policy query_losses simulate "
        "skipped_scores"
    ),
    "elasticir.models.ranker": (
        "CLASSIFIER_DESCRIPTION DEFAULT_GATE_INIT DEFAULT_MAX_LENGTH EXITS_FILE HEADS "
        "HEAD_DESCRIPTIONS KIND POOLED_OFFSET POOLED_SCALE ElasticRanker ExitClassifier "
        "ExitHeads LayerRecords PairMasks RankerNet RankerOutput UntrainedExitsWarning "
        "encode_pairs layer_step pad_batch read_manifest scale_grad write_ranker"
    ),
    "elasticir.models.dipair": (
        "DIPAIR_KIND ENCODER_DIR MANIFEST_FILE WEIGHTS_FILE DiPair DiPairConfig DiPairHead "
        "EncodedTexts encoder_token_outputs read_manifest resolve_config token_states"
    ),
}
NEW_HOMES = {
    "elasticir.rerank.policies": ("elasticir.rerank.calibration", "elasticir.compute.exits"),
}


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_old_paths_keep_every_name(old: str) -> None:
    module = importlib.import_module(old)
    missing = [name for name in OLD_NAMES[old].split() if not hasattr(module, name)]
    assert missing == []
    assert all(hasattr(module, name) for name in getattr(module, "__all__", ()))


@pytest.mark.parametrize("old", sorted(NEW_HOMES))
def test_old_paths_re_export_the_same_objects(old: str) -> None:
    module = importlib.import_module(old)
    homes = [importlib.import_module(home) for home in NEW_HOMES[old]]
    for name in OLD_NAMES[old].split():
        home = next(h for h in homes if hasattr(h, name))
        assert getattr(module, name) is getattr(home, name), name
