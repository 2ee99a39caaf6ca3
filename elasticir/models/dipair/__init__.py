"""DiPair: a fast pair scorer over truncated, projected token outputs (EMNLP 2020, adapted).

Both texts are encoded *independently* by the bi-encoder's Hugging Face model at full
compute; of each output only the first few token vectors are kept, projected to a small
dimension, and a small Transformer head reads the query's and the passage's together and
gives the pair's score (optionally on top of the bi-encoder's own similarity: a *residual*
model). Passages are encoded once, at indexing time, into a token cache, so scoring a
candidate costs a tiny fraction of a cross-encoder's forward pass.

The parts, each re-exported here:

* :mod:`.config`: :class:`DiPairConfig`, the shape of a model;
* :mod:`.head`: :class:`DiPairHead`, the projections and the Transformer head;
* :mod:`.encoding`: the encoder's truncated token outputs (:class:`EncodedTexts`);
* :mod:`.model`: :class:`DiPair`, the model ready to score;
* :mod:`.files`: model directories (``elasticir.json``, ``dipair.safetensors``, ``encoder/``).
"""

from __future__ import annotations

from elasticir.models.dipair.config import DiPairConfig, check_lengths, resolve_config
from elasticir.models.dipair.encoding import EncodedTexts, encoder_token_outputs, token_states
from elasticir.models.dipair.files import (
    DIPAIR_KIND,
    ENCODER_DIR,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    config_from_manifest,
    describe_encoder,
    encoder_location,
    read_manifest,
)
from elasticir.models.dipair.head import DiPairHead
from elasticir.models.dipair.model import DiPair

__all__ = [
    "DIPAIR_KIND",
    "ENCODER_DIR",
    "MANIFEST_FILE",
    "WEIGHTS_FILE",
    "DiPair",
    "DiPairConfig",
    "DiPairHead",
    "EncodedTexts",
    "check_lengths",
    "config_from_manifest",
    "describe_encoder",
    "encoder_location",
    "encoder_token_outputs",
    "read_manifest",
    "resolve_config",
    "token_states",
]
