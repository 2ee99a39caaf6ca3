"""ElasticDenser: the dual encoder's inference path, query side and passage side.

Every encode call takes a compute level. A plain checkpoint offers ``full`` only; an elastic
checkpoint (see ``elasticir.models.elastic.make_elastic``) lists its levels -- nested
depth/width sub-networks -- in ``elasticir.json``, and they run behind the same calls.

A checkpoint trained by ``elasticir train denser`` (``elasticir.train.denser``) also names a
``"passage_encoder"`` in ``elasticir.json``: its query levels were trained into the vector
space of that frozen model at full compute. Such an ``ElasticDenser`` encodes passages with
the frozen model (loaded on first use) and queries with the trained weights, and its
fingerprint is the passage encoder's, so an index built with the original model is searched
by every query level of the trained one.

Every encode call also takes a ``dim``: the encoder's own dimension (``None``) or one of its
learned projections (``elasticir.models.projection``; ``dims`` lists what it offers). An
index built at a dimension is searched at that dimension.

Passage-side levels (cheap indexing) are a second mode: ``encode_passages(texts, level)``
below ``full`` runs the passages through that sub-network. For a trained query encoder those
are its own (query-trained) weights rather than the frozen passage encoder, so an index built
that way records the level and the weights in its ``meta.json`` (``describe(level=...)``) and is
never taken for a full-compute index.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from elasticir.compute.levels import FULL, Level
from elasticir.data.errors import MissingResourceError
from elasticir.models import elastic
from elasticir.models.loading import (
    EncoderSettings,
    PassageEncoderSpec,
    model_fingerprint,
    quiet_loading,
    read_levels,
    read_passage_encoder,
    read_settings,
    resolve_model_path,
)
from elasticir.models.projection import Projection, find_projections

PRECISIONS = ("fp32", "bf16")


class ElasticDenser:
    """A bi-encoder over a Hugging Face encoder: texts in, ``(n, dim)`` float32 vectors out.

    Fast on CPU without changing the vectors: texts are tokenized once, sorted by token
    length so each batch pads only to its own longest text, and run under inference mode.
    ``precision="bf16"`` adds bfloat16 autocast (fast only on CPUs with native bf16, such as
    AVX512-BF16/AMX; the benchmark reports its agreement with fp32).

    The object holds no per-call state, so threads may share it.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str | None = None,
        precision: str = "fp32",
        batch_size: int = 16,
        query_max_length: int = 64,
        passage_max_length: int | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.model_path = resolve_model_path(model)
        self.model_name = str(model) if model is not None else "all-MiniLM-L6-v2"
        self.settings: EncoderSettings = read_settings(self.model_path)
        try:
            with quiet_loading():
                self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
                self.model = AutoModel.from_pretrained(self.model_path)
        except OSError as err:
            raise MissingResourceError(
                f"cannot load model {model!r}: not a local model directory, and not available "
                f"from the Hugging Face cache offline ({err.__class__.__name__}: {err})"
            ) from err
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.precision = precision
        self.batch_size = batch_size
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length or self.settings.max_length
        self._fingerprint: str | None = None
        self._levels = self._read_levels()
        # A query encoder trained into another model's passage space: that model (frozen,
        # full compute) encodes the passages, loaded on first use.
        self.passage_encoder_spec: PassageEncoderSpec | None = read_passage_encoder(self.model_path)
        self._passage_side: ElasticDenser | None = None
        self._passage_lock = threading.Lock()
        self._projections: dict[int, Projection] | None = None
        self._own_fingerprint: str | None = None

    # -- description -----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def dims(self) -> tuple[int, ...]:
        """The output dimensions offered: the model's own, then its projections, largest first."""
        return (self.dim, *(d for d in self.projections if d != self.dim))

    @property
    def projections(self) -> dict[int, Projection]:
        """The learned projections of this encoder's passage space, by dimension (read once)."""
        if self._projections is None:
            self._projections = find_projections(self.model_path, self.fingerprint)
        return self._projections

    def projection(self, dim: int | None) -> Projection | None:
        """The projection to ``dim`` dims; ``None`` for the model's own dimension."""
        if dim is None or int(dim) == self.dim:
            return None
        found = self.projections.get(int(dim))
        if found is None:
            offered = ", ".join(str(d) for d in self.dims)
            hint = (
                "" if len(self.dims) > 1 else "; fit projections with `elasticir train projection`"
            )
            raise ValueError(
                f"{self.model_name} offers no {dim}-d projection (dims: {offered}){hint}"
            )
        return found

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def levels(self) -> tuple[Level, ...]:
        """The compute levels this model offers, ``full`` first (``elasticir.json``'s menu).

        With a separate passage encoder (see the module docstring) these are query levels;
        passages are encoded at ``full`` only.
        """
        return self._levels

    def _read_levels(self) -> tuple[Level, ...]:
        offered: dict[Level, Level] = {}
        for level in read_levels(self.model_path):
            try:
                offered.setdefault(level.resolve(self.num_layers), level)
            except ValueError as err:
                raise ValueError(f"{self.model_path}/elasticir.json: {err}") from err
        if len(offered) > 1:
            elastic.check_model(self.model)  # a clear error now if the architecture cannot slice
        return tuple(offered.values())

    def level_flops(self, level: Level | str, seq_len: int = 32) -> int:
        """FLOPs of one ``seq_len``-token text through ``level`` (see ``elastic.level_flops``).

        Any level the model's depth allows, offered or not.
        """
        return elastic.level_flops(self.model.config, level, seq_len)

    def flops_ratio(self, level: Level | str, seq_len: int = 32) -> float:
        """``level``'s FLOPs as a fraction of the full model's, for ``seq_len`` tokens."""
        return elastic.flops_ratio(self.model.config, level, seq_len)

    @property
    def fingerprint(self) -> str:
        """Identifies the passage space: an index built with one fingerprint needs it to search.

        For a query encoder trained into a frozen passage encoder's space, the fingerprint
        recorded for that passage encoder (searching needs no passage model at all).
        """
        if self._fingerprint is None:
            if self.passage_encoder_spec is not None:
                self._fingerprint = self.passage_encoder_spec.fingerprint
            else:
                self._fingerprint = model_fingerprint(self.model_path, self.settings)
        return self._fingerprint

    def passage_encoder(self) -> ElasticDenser:
        """The encoder of the passage side: ``self``, or the frozen model named in
        ``elasticir.json``'s ``"passage_encoder"`` (loaded on first call, then kept).

        Raises ``ValueError`` when that model's weights are not the ones the query encoder was
        trained against (its fingerprint differs from the recorded one).
        """
        spec = self.passage_encoder_spec
        if spec is None:
            return self
        with self._passage_lock:
            if self._passage_side is None:
                side = ElasticDenser(
                    self._passage_model_location(spec.model),
                    device=str(self.device),
                    precision=self.precision,
                    batch_size=self.batch_size,
                    passage_max_length=self.passage_max_length,
                )
                if side.fingerprint != spec.fingerprint:
                    raise ValueError(
                        f"{self.model_path}: its queries were trained for passage encoder "
                        f"{spec.model!r} with fingerprint {spec.fingerprint}, but that model now "
                        f"has fingerprint {side.fingerprint} (other weights or pooling): its "
                        "passage vectors are in another space"
                    )
                if side.dim != self.dim:
                    raise ValueError(
                        f"{self.model_path}: passage encoder {spec.model!r} gives {side.dim} "
                        f"dims, the query encoder {self.dim}"
                    )
                self._passage_side = side
            return self._passage_side

    def _passage_model_location(self, model: str) -> str:
        beside = Path(self.model_path) / model
        if not Path(model).is_absolute() and (beside / "config.json").is_file():
            return str(beside)  # a path relative to this checkpoint
        return model  # a name, or a path as written

    def check_level(self, level: Level | str) -> Level:
        level = Level(level)
        if level.resolve(self.num_layers) not in [
            lv.resolve(self.num_layers) for lv in self.levels
        ]:
            offered = ", ".join(str(lv) for lv in self.levels)
            raise ValueError(f"level {level} is not offered by this model (levels: {offered})")
        return level

    # -- encoding --------------------------------------------------------------------------
    def encode_queries(
        self,
        texts: Sequence[str],
        level: Level | str = FULL,
        batch_size: int | None = None,
        dim: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Encode queries at ``level``: returns ``(len(texts), dim)`` float32.

        ``dim`` picks a learned projection (``dims``); ``None`` is the model's own dimension.
        ``progress`` is called with the number of texts finished after each batch.
        """
        projection = self.projection(dim)
        vectors = self._encode(
            texts, self.query_max_length, self.check_level(level), batch_size, progress
        )
        return vectors if projection is None else projection.apply(vectors, side="query")

    def encode_passages(
        self,
        texts: Sequence[str],
        level: Level | str = FULL,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
        dim: int | None = None,
    ) -> np.ndarray:
        """Encode passages at ``level``: returns ``(len(texts), dim)`` float32.

        ``progress`` is called with the number of texts finished after each batch; ``dim``
        picks a learned projection. A query encoder trained into a frozen passage encoder's
        space encodes passages with that model at ``full``; at a lower ``level`` (the cheap
        indexing mode) with its own sub-network of that level.
        """
        projection = self.projection(dim)
        level = self.check_level(level)
        if self.passage_encoder_spec is not None and self._is_full(level):
            side = self.passage_encoder()
            vectors = side._encode(
                texts, self.passage_max_length, FULL, batch_size or self.batch_size, progress
            )
        else:
            vectors = self._encode(texts, self.passage_max_length, level, batch_size, progress)
        return vectors if projection is None else projection.apply(vectors, side="passage")

    def _is_full(self, level: Level) -> bool:
        return level.resolve(self.num_layers) == FULL.resolve(self.num_layers)

    def _encode(
        self,
        texts: Sequence[str],
        max_length: int,
        level: Level,
        batch_size: int | None,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if len(texts) == 0:
            return out
        features = self.tokenizer(list(texts), truncation=True, max_length=max_length)
        # The whole model takes the fast Hugging Face path; sub-networks run on weight slices.
        whole = level.resolve(self.num_layers) == FULL.resolve(self.num_layers)
        input_ids = features["input_ids"]
        for rows in self._batches(input_ids, batch_size or self.batch_size):
            batch = self.tokenizer.pad(
                {"input_ids": [input_ids[i] for i in rows]}, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode(), self._autocast():
                if whole:
                    hidden = self.model(**batch).last_hidden_state
                else:
                    hidden = elastic.elastic_forward(
                        self.model,
                        batch["input_ids"],
                        batch["attention_mask"],
                        level,
                        token_type_ids=batch.get("token_type_ids"),
                    )
                vectors = self._pool(hidden.float(), batch["attention_mask"])
            out[rows] = vectors.cpu().numpy()
            if progress is not None:
                progress(len(rows))
        return out

    @staticmethod
    def _batches(input_ids: list[list[int]], batch_size: int) -> Iterator[np.ndarray]:
        # Longest first, stable: batches pad only to their own longest text, and the order
        # (hence every vector, bit for bit) does not depend on anything but the inputs.
        lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=len(input_ids))
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return pool(hidden, mask, self.settings.pooling, self.settings.normalize)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self, dim: int | None = None, level: Level | str = FULL) -> dict[str, object]:
        """What an index's meta.json records about the encoder that built it.

        ``dim`` adds the projection (its fingerprint); a passage ``level`` below full adds
        ``passage_level`` and the fingerprint of the weights that ran it.
        """
        projection = self.projection(dim)
        described: dict[str, object] = {
            "model": self.model_name,
            "model_fingerprint": self.fingerprint,
            "pooling": self.settings.pooling,
            "normalize": self.settings.normalize,
            "passage_max_length": self.passage_max_length,
            "dim": self.dim if projection is None else projection.dim,
        }
        if self.passage_encoder_spec is not None:
            described["passage_encoder"] = self.passage_encoder_spec.model
        if projection is not None:
            described["projection"] = projection.describe()
        level = Level(level)
        if not self._is_full(level):
            described["passage_level"] = str(level)
            described["passage_weights_fingerprint"] = self.own_fingerprint
        return described

    @property
    def own_fingerprint(self) -> str:
        """The fingerprint of this checkpoint's own weights (differs from ``fingerprint`` for
        a query encoder trained into another model's passage space)."""
        if self._own_fingerprint is None:
            self._own_fingerprint = model_fingerprint(self.model_path, self.settings)
        return self._own_fingerprint


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """Sentence vectors ``(B, H)`` of token outputs ``hidden`` ``(B, T, H)`` under ``mask``
    ``(B, T)``: the [CLS] output (``pooling == "cls"``) or the mean over real tokens, then
    L2-normalised when ``normalize``."""
    if pooling == "cls":
        vectors = hidden[:, 0]
    else:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        vectors = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if normalize:
        vectors = torch.nn.functional.normalize(vectors, dim=-1)
    return vectors
