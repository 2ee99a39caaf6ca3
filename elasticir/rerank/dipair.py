"""DiPair in a cascade: the model with its passage-token cache, and its scorer.

The model itself (:class:`elasticir.models.dipair.DiPair`) knows nothing of caches on disk;
this :class:`DiPair` adds what reads and writes them (:mod:`elasticir.index.token_cache`),
and :class:`DiPairScorer` makes it a ``Rerank`` stage's scorer. Old imports of
``elasticir.rerank.dipair`` keep working: every model name is re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from elasticir.index.token_cache import DEFAULT_SHARD_SIZE, TokenCache, build_token_cache
from elasticir.models import dipair as model
from elasticir.models.dipair import (
    DIPAIR_KIND,
    ENCODER_DIR,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    DiPairConfig,
    DiPairHead,
    EncodedTexts,
    encoder_token_outputs,
    read_manifest,
    resolve_config,
    token_states,
)
from elasticir.pipeline import Reranker

if TYPE_CHECKING:
    from elasticir.data.records import Passage, Query, Run
    from elasticir.index.store import EncodeReport

__all__ = [
    "DIPAIR_KIND",
    "ENCODER_DIR",
    "MANIFEST_FILE",
    "WEIGHTS_FILE",
    "DiPair",
    "DiPairConfig",
    "DiPairHead",
    "DiPairScorer",
    "EncodedTexts",
    "check_cache",
    "encoder_token_outputs",
    "read_manifest",
    "resolve_config",
    "token_states",
]


class DiPair(model.DiPair):
    """:class:`elasticir.models.dipair.DiPair` with its passage-token cache on disk."""

    def score(
        self, query: str, doc_ids: Sequence[str], cache: TokenCache | str | Path
    ) -> np.ndarray:
        """Scores of ``doc_ids`` for ``query``, the passages read from a token cache.

        Raises ``ValueError`` when the cache was built by another DiPair model and
        :class:`~elasticir.index.token_cache.MissingTokensError` listing ids it lacks.
        """
        cache = self.check_cache(cache)
        return self.score_encoded(self.encode_queries([query]), 0, cache.lookup(doc_ids))

    def rerank(
        self,
        queries: Sequence[Query],
        run: Run,
        cache: TokenCache | str | Path,
        depth: int | None = None,
    ) -> Run:
        """Rescore each query's candidates in ``run`` (its top ``depth``, default all) from
        ``cache``; returns ``{qid: {doc_id: score}}`` for the rescored documents."""
        cache = self.check_cache(cache)
        texts = {q.query_id: q.text for q in queries}
        unknown = sorted(set(run) - texts.keys())
        if unknown:
            raise ValueError(
                f"{len(unknown)} quer{'y' if len(unknown) == 1 else 'ies'} of the run are not in "
                f"the topics (e.g. {unknown[:3]})"
            )
        order = [qid for qid in texts if qid in run]
        encoded = self.encode_queries([texts[qid] for qid in order])
        out: Run = {}
        for row, qid in enumerate(order):
            ranked = sorted(run[qid].items(), key=lambda item: (-item[1], item[0]))
            docs = [doc for doc, _ in (ranked if depth is None else ranked[:depth])]
            scores = self.score_encoded(encoded, row, cache.lookup(docs))
            out[qid] = dict(zip(docs, scores.tolist()))
        return out

    def check_cache(self, cache: TokenCache | str | Path) -> TokenCache:
        """``cache`` opened, and checked to hold this model's passage tokens."""
        return check_cache(self, cache)

    def build_cache(
        self,
        corpus: str | Path,
        cache_dir: str | Path,
        *,
        shard_size: int | None = None,
        shard: tuple[int, int] = (0, 1),
        batch_size: int | None = None,
        progress: bool = True,
    ) -> EncodeReport:
        """Encode ``corpus`` into a token cache at ``cache_dir`` (resumable; see
        :func:`elasticir.index.token_cache.build_token_cache`)."""
        return build_token_cache(
            corpus,
            cache_dir,
            self,
            shard_size=shard_size or DEFAULT_SHARD_SIZE,
            shard=shard,
            batch_size=batch_size,
            progress=progress,
        )

    def scorer(self, cache: TokenCache | str | Path | None = None) -> DiPairScorer:
        """This model as a ``Rerank`` stage's scorer (:mod:`elasticir.pipeline`)."""
        return DiPairScorer(self, cache)


def check_cache(dipair: model.DiPair, cache: TokenCache | str | Path) -> TokenCache:
    """``cache`` opened, and checked to hold the passage tokens of ``dipair``."""
    if not isinstance(cache, TokenCache):
        cache = TokenCache(cache)
    if cache.model_fingerprint != dipair.fingerprint:
        raise ValueError(
            f"{cache.path} holds passage tokens of DiPair model {cache.meta.get('model')!r} "
            f"(fingerprint {cache.model_fingerprint}); this model's fingerprint is "
            f"{dipair.fingerprint}: rebuild the cache with this model"
        )
    if dipair.config.residual and cache.vector_dim != dipair.encoder.dim:
        raise ValueError(
            f"{cache.path} holds no {dipair.encoder.dim}-d sentence embeddings, which this "
            "residual DiPair model scores with: rebuild the cache with this model"
        )
    return cache


class DiPairScorer(Reranker):
    """A DiPair model as a ``Rerank`` stage's scorer: ``score(query, passages)``.

    With a token cache, passages are looked up by ``doc_id`` (their text is not read);
    without, they are encoded on the fly. The last query's tokens are kept, so a query whose
    candidates come in several calls is encoded once.
    """

    stage_name = "dipair"

    def __init__(self, dipair: model.DiPair, cache: TokenCache | str | Path | None = None) -> None:
        self.dipair = dipair
        self.cache = None if cache is None else check_cache(dipair, cache)
        self._last: tuple[str, EncodedTexts] | None = None  # a cache of one query's tokens

    def score(self, query: str, passages: Sequence[Passage]) -> np.ndarray:
        last = self._last
        if last is None or last[0] != query:
            last = self._last = (query, self.dipair.encode_queries([query]))
        if self.cache is not None:
            encoded = self.cache.lookup([p.doc_id for p in passages])
        else:
            encoded = self.dipair.encode_passages([p.encoder_text() for p in passages])
        return self.dipair.score_encoded(last[1], 0, encoded)
