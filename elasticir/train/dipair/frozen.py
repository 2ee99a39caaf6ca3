"""DiPair's frozen base encoder and its cached token outputs, what stage 1 trains on.

Stage 1 trains the projections and the head with the encoder frozen: the encoder's first token
outputs of every training text are computed once and cached (a resumable token cache of
unprojected outputs, float16, with the sentence embeddings too for a residual head), so a step
costs only the head::

    cache/dipair/<key>/{queries,passages}/   the frozen encoder's token outputs
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from elasticir.data.files import atomic_file
from elasticir.models.dipair import DiPairConfig
from elasticir.train.core import choose_device
from elasticir.train.dipair.config import DiPairTrainConfig
from elasticir.train.keys import digest, texts_digest

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser

__all__ = ["base_encoder", "frozen_states", "resolved_config"]


def base_encoder(config: DiPairTrainConfig) -> ElasticDenser:
    """The config's base encoder (an ElasticDenser at full compute) on the run's device."""
    from elasticir.models.denser import ElasticDenser

    return ElasticDenser(
        config.base_model,
        device=str(choose_device(config.device)),
        batch_size=32,
        query_max_length=config.query_max_length,
        passage_max_length=config.passage_max_length,
    )


def resolved_config(config: DiPairTrainConfig, encoder: ElasticDenser) -> DiPairConfig:
    """The config's model shape with every default resolved (the passage length from
    ``encoder``, the FFN size)."""
    from elasticir.models.dipair import resolve_config

    return resolve_config(config.model_config(), encoder)


def frozen_states(
    encoder: ElasticDenser,
    texts: list[str],
    cache: Path,
    max_length: int,
    keep: int,
    side: str,
    progress: bool,
    vectors: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The frozen encoder's first ``keep`` token outputs of ``texts`` (float16, cached), their
    lengths and, with ``vectors``, their sentence embeddings (else None)."""
    from elasticir.index.token_cache import TokenCache, write_token_cache
    from elasticir.models.dipair import EncodedTexts, encoder_token_outputs

    fingerprint = encoder.own_fingerprint
    described: dict[str, Any] = {
        "encoder": fingerprint,
        "max_length": max_length,
        "keep": keep,
        "raw": True,
    }
    if vectors:
        described["vectors"] = True  # without it: the key of caches made before vectors
    key = digest({**described, "texts": texts_digest(texts)})
    directory = cache / side / key
    corpus = directory / "texts.jsonl"
    if not corpus.is_file():
        with atomic_file(corpus) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for i, text in enumerate(texts):
                fh.write(json.dumps({"id": f"t{i}", "contents": text}, ensure_ascii=False) + "\n")

    def encode(batch: Sequence[str], advance: Callable[[int], None]) -> EncodedTexts:
        return encoder_token_outputs(
            encoder, batch, max_length=max_length, keep=keep, vectors=vectors, progress=advance
        )

    hidden = int(encoder.model.config.hidden_size)
    write_token_cache(
        corpus,
        directory / "tokens",
        encode,
        model={**described, "model_fingerprint": digest(described)},
        k=keep,
        dim=hidden,
        vector_dim=hidden if vectors else 0,
        shard_size=1024,
        progress=progress,
        label=f"encoder tokens ({side})",
    )
    ids, stored = TokenCache(directory / "tokens").load()
    if ids != [f"t{i}" for i in range(len(texts))]:
        raise ValueError(f"{directory}: cached token outputs do not match the texts; delete it")
    return (
        torch.from_numpy(stored.tokens),
        torch.from_numpy(stored.lengths.astype(np.int64)),
        None if stored.vectors is None else torch.from_numpy(stored.vectors),
    )
