"""ElasticRanker: an elastic multi-exit cross-encoder with per-candidate early exit.

The model reads ``[CLS] query [SEP] passage [SEP]`` (token types 0 / 1) through a BERT-style
encoder whose heads and FFN neurons are stored most-important-first
(:func:`elasticir.models.elastic.reorder_`), so a level's width is a prefix of the weights,
and puts a **relevance head on every layer** (multi-exit). A level ``L<d>-W<w>`` exits at
layer ``d`` running the first ``w``% of the heads and neurons; every depth works at every
trained width, since every layer has an exit. Each pair may exit earlier under an exit policy
(:mod:`elasticir.compute.exits`).

The parts, each re-exported here:

* :mod:`.net`: the trainable modules -- exit heads ([CLS] or pooled), the CALM exit
  classifier, :class:`RankerNet`;
* :mod:`.inputs`: pairs as token ids (:func:`encode_pairs`), in padded batches;
* :mod:`.outputs`: :class:`RankerOutput` (scores, exit layers, FLOPs) and
  :class:`LayerRecords` (every exit, for calibration);
* :mod:`.scoring`: one padded batch, one layer at a time, with early exit or every exit
  recorded, and what each pair costs;
* :mod:`.model`: :class:`ElasticRanker`, which loads a ranker and scores pairs;
* :mod:`.files`: ranker directories (``elasticir.json``, ``exits.safetensors``).
"""

from __future__ import annotations

from elasticir.models.elastic import layer_step  # noqa: F401  (the old module's name)
from elasticir.models.ranker.files import KIND, manifest_levels, read_manifest, write_ranker
from elasticir.models.ranker.inputs import (
    DEFAULT_MAX_LENGTH,
    batches_by_length,
    encode_pairs,
    pad_batch,
)
from elasticir.models.ranker.model import ElasticRanker, UntrainedExitsWarning
from elasticir.models.ranker.net import (
    CLASSIFIER_DESCRIPTION,
    DEFAULT_GATE_INIT,
    EXITS_FILE,
    HEAD_DESCRIPTIONS,
    HEADS,
    POOLED_OFFSET,
    POOLED_SCALE,
    ExitClassifier,
    ExitHeads,
    PairMasks,
    RankerNet,
    scale_grad,
)
from elasticir.models.ranker.outputs import LayerRecords, RankerOutput
from elasticir.models.ranker.scoring import layer_costs, record_batch, score_batch

# ``layer_step`` above is the same function the old single module imported; RankerNet.step
# calls it as ``elasticir.models.ranker.net.layer_step``: patch it there.

__all__ = [
    "CLASSIFIER_DESCRIPTION",
    "DEFAULT_GATE_INIT",
    "DEFAULT_MAX_LENGTH",
    "EXITS_FILE",
    "HEADS",
    "HEAD_DESCRIPTIONS",
    "KIND",
    "POOLED_OFFSET",
    "POOLED_SCALE",
    "ElasticRanker",
    "ExitClassifier",
    "ExitHeads",
    "LayerRecords",
    "PairMasks",
    "RankerNet",
    "RankerOutput",
    "UntrainedExitsWarning",
    "batches_by_length",
    "encode_pairs",
    "layer_costs",
    "manifest_levels",
    "pad_batch",
    "read_manifest",
    "record_batch",
    "scale_grad",
    "score_batch",
    "write_ranker",
]
