"""DiPair: a fast pair scorer over truncated, projected token outputs (EMNLP 2020, adapted).

The model holds the encoder (the bi-encoder's, at full compute), the two projections and the
head (:mod:`~elasticir.models.dipair.head`). Passages are encoded once, at indexing time, into
a token cache (:mod:`elasticir.index.token_cache`: ``(k, dim)`` float16 per passage). At query
time the query is encoded once and every candidate is scored from the cache in one batched
call of the head, which costs a tiny fraction of a cross-encoder's forward pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.manifest import write_json
from elasticir.models.dipair.config import DiPairConfig, check_lengths, resolve_config
from elasticir.models.dipair.encoding import EncodedTexts, encoder_token_outputs
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

if TYPE_CHECKING:
    from elasticir.models.denser import ElasticDenser

__all__ = ["DiPair"]


class DiPair:
    """A DiPair model ready to score: the encoder, the projections and the head.

    Create an untrained one with :meth:`create`, read a trained one with :meth:`load`. The
    object holds no per-call state; scoring runs under ``torch.inference_mode``.
    """

    def __init__(
        self,
        encoder: ElasticDenser,
        head: DiPairHead,
        config: DiPairConfig,
        *,
        encoder_spec: Mapping[str, Any] | None = None,
        manifest: Mapping[str, Any] | None = None,
        path: Path | None = None,
        batch_size: int = 1024,
    ) -> None:
        if config.passage_max_length is None:
            raise ValueError("DiPair needs a resolved passage_max_length (use DiPair.create)")
        self.encoder = encoder
        self.head = head.to(encoder.device).eval()
        self.config = config
        self.encoder_spec = dict(encoder_spec or describe_encoder(encoder))
        self.manifest = dict(manifest or {})
        self.path = path
        self.batch_size = batch_size
        self._fingerprint: str | None = None

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        config: DiPairConfig | None = None,
        encoder: ElasticDenser | None = None,
        *,
        seed: int = 13,
        device: str | None = None,
    ) -> DiPair:
        """An untrained DiPair over ``encoder`` (default: the packaged all-MiniLM-L6-v2),
        head weights drawn from ``seed``."""
        from elasticir.models.denser import ElasticDenser

        config = config or DiPairConfig()
        if encoder is None:
            encoder = ElasticDenser(device=device)
        config = resolve_config(config, encoder)
        check_lengths(encoder, config)
        generator_state = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            head = DiPairHead(int(encoder.model.config.hidden_size), config)
        finally:
            torch.set_rng_state(generator_state)
        return cls(encoder, head, config)

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None, batch_size: int = 1024) -> DiPair:
        """Read a DiPair directory (see :mod:`elasticir.models.dipair.files`)."""
        from safetensors.torch import load_file

        from elasticir.models.denser import ElasticDenser
        from elasticir.models.shipped import local_model

        path = Path(local_model(path) or path)  # a shipped name: its rebuilt directory
        manifest = read_manifest(path)
        config = config_from_manifest(path, manifest)
        spec = manifest["encoder"]
        location = encoder_location(path, spec["model"])
        encoder = ElasticDenser(
            location,
            device=device,
            query_max_length=config.query_max_length,
            passage_max_length=config.passage_max_length,
        )
        if encoder.own_fingerprint != spec["fingerprint"]:
            raise ValueError(
                f"{path}: the DiPair head was trained on encoder {spec['model']!r} with "
                f"fingerprint {spec['fingerprint']}, but that model now has fingerprint "
                f"{encoder.own_fingerprint} (other weights)"
            )
        head = DiPairHead(int(encoder.model.config.hidden_size), config)
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise MissingResourceError(f"{path}: no {WEIGHTS_FILE}; the model is incomplete")
        state = load_file(str(weights))
        try:
            head.load_state_dict(state)
        except RuntimeError as err:
            raise InputFormatError(
                weights, None, "the weights of this DiPair head", str(err)
            ) from err
        return cls(
            encoder,
            head,
            config,
            encoder_spec=spec,
            manifest=manifest,
            path=path,
            batch_size=batch_size,
        )

    # -- description -----------------------------------------------------------------------
    @property
    def k(self) -> int:
        return self.config.k

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def query_tokens(self) -> int:
        return self.config.query_tokens

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    @property
    def fingerprint(self) -> str:
        """Identifies what a token cache depends on: encoder weights, lengths, projection.

        Computed once; the object is not meant to change after creation (training writes a
        new directory, read back with :meth:`load`).
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            config = dataclasses.replace(self.config, ffn=self.config.ffn_size).identity()
            digest.update(
                json.dumps(
                    {"config": config, "encoder": self.encoder_spec["fingerprint"]},
                    sort_keys=True,
                ).encode()
            )
            for name, tensor in sorted(self.head.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        """What a token cache's ``meta.json`` records about the model that wrote it."""
        return {
            "model": str(self.path.resolve()) if self.path is not None else "<in memory>",
            "model_fingerprint": self.fingerprint,
            "encoder": dict(self.encoder_spec),
            "k": self.config.k,
            "dim": self.config.dim,
            "passage_max_length": self.config.passage_max_length,
        }

    # -- encoding --------------------------------------------------------------------------
    def encode_queries(self, queries: Sequence[str], batch_size: int | None = None) -> EncodedTexts:
        """Projected query tokens ``(n, query_tokens, dim)`` float32, their lengths, and (for a
        residual model) the queries' sentence embeddings."""
        return encoder_token_outputs(
            self.encoder,
            queries,
            max_length=self.config.query_max_length,
            keep=self.config.query_tokens,
            project=self.head.query_projection,
            vectors=self.config.residual,
            batch_size=batch_size,
        )

    def encode_passages(
        self,
        passages: Sequence[str],
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> EncodedTexts:
        """Projected passage tokens ``(n, k, dim)`` float32, their lengths and (for a residual
        model) sentence embeddings: what the token cache stores, before its float16
        rounding."""
        return encoder_token_outputs(
            self.encoder,
            passages,
            max_length=int(self.config.passage_max_length or 0),
            keep=self.config.k,
            project=self.head.passage_projection,
            vectors=self.config.residual,
            batch_size=batch_size,
            progress=progress,
        )

    # -- scoring ---------------------------------------------------------------------------
    def score_tokens(
        self,
        query: np.ndarray,
        query_length: int,
        passages: np.ndarray,
        passage_lengths: np.ndarray,
        query_vector: np.ndarray | None = None,
        passage_vectors: np.ndarray | None = None,
    ) -> np.ndarray:
        """Scores ``(n,)`` float32 of one projected query ``(query_tokens, dim)`` against
        projected passages ``(n, k, dim)`` (any float dtype), in head batches of
        ``batch_size``. A residual model also needs the query's sentence embedding
        ``(hidden,)`` and the passages' ``(n, hidden)``."""
        similarity = None
        if self.config.residual:
            if query_vector is None or passage_vectors is None:
                raise ValueError(
                    "a residual DiPair model scores with the texts' sentence embeddings"
                )
            similarity = np.asarray(passage_vectors, dtype=np.float32) @ np.asarray(
                query_vector, dtype=np.float32
            )
        query_t = torch.as_tensor(np.asarray(query, dtype=np.float32), device=self.device)
        query_t = query_t.reshape(1, self.config.query_tokens, self.config.dim)
        q_len = torch.tensor([int(query_length)], device=self.device)
        out = np.empty(len(passages), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(passages), self.batch_size):
                stop = start + self.batch_size
                chunk = torch.as_tensor(
                    np.asarray(passages[start:stop], dtype=np.float32), device=self.device
                )
                lengths = torch.as_tensor(
                    np.asarray(passage_lengths[start:stop], dtype=np.int64), device=self.device
                )
                sim = None
                if similarity is not None:
                    sim = torch.as_tensor(similarity[start:stop], device=self.device)
                scores = self.head(query_t, q_len, chunk, lengths, sim)
                out[start:stop] = scores.float().cpu().numpy()
        return out

    def score_encoded(self, query: EncodedTexts, row: int, passages: EncodedTexts) -> np.ndarray:
        """Scores of encoded ``passages`` (from :meth:`encode_passages` or a cache lookup)
        for row ``row`` of encoded queries ``query``."""
        return self.score_tokens(
            query.tokens[row],
            int(query.lengths[row]),
            passages.tokens,
            passages.lengths,
            None if query.vectors is None else query.vectors[row],
            passages.vectors,
        )

    def score_texts(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Scores of passage texts encoded on the fly (the cached path, in float32)."""
        return self.score_encoded(self.encode_queries([query]), 0, self.encode_passages(passages))

    # -- saving ----------------------------------------------------------------------------
    def save(
        self,
        path: str | Path,
        *,
        training: Mapping[str, Any] | None = None,
        save_encoder: bool = False,
    ) -> Path:
        """Write the model directory; ``elasticir.json`` last, every file renamed into place.

        ``save_encoder`` copies the encoder's weights into ``encoder/`` (needed once training
        changed them); otherwise the manifest names the base model and its fingerprint.
        """
        from safetensors.torch import save_file

        from elasticir.models.loading import model_fingerprint, read_settings

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / MANIFEST_FILE).unlink(missing_ok=True)  # unfinished until the new one is in
        staging = path / f".tmp-dipair.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
            save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": "elasticir-dipair"})
            spec = dict(self.encoder_spec)
            save_encoder = save_encoder or spec["model"] == ENCODER_DIR  # lives in a model dir
            if save_encoder:
                target = staging / ENCODER_DIR
                self.encoder.model.save_pretrained(target)
                self.encoder.tokenizer.save_pretrained(target)
                spec = {
                    "model": ENCODER_DIR,
                    "fingerprint": model_fingerprint(str(target), read_settings(str(target))),
                    "base_model": spec.get("base_model", spec["model"]),
                    "base_fingerprint": spec.get("base_fingerprint", spec["fingerprint"]),
                }
            for item in staging.iterdir():
                final = path / item.name
                if final.is_dir():
                    shutil.rmtree(final)
                os.replace(item, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not save_encoder and (path / ENCODER_DIR).is_dir():
            shutil.rmtree(path / ENCODER_DIR)  # left by an earlier save: not this model's
        config = self.config
        manifest = {
            "kind": DIPAIR_KIND,
            "format_version": 1,
            "k": config.k,
            "query_tokens": config.query_tokens,
            "dim": config.dim,
            "head": config.head_dict(),
            "query_max_length": config.query_max_length,
            "passage_max_length": config.passage_max_length,
            "residual": config.residual,
            "encoder": spec,
            "training": dict(training) if training is not None else None,
        }
        write_json(path / MANIFEST_FILE, manifest)
        return path
