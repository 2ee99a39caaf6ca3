"""ElasticRanker: load a ranker, and score pairs at a level under an exit policy.

Any plain BERT-style checkpoint loads too (the packaged all-MiniLM-L6-v2 by default): its exit
heads are then *untrained* -- initialised, not learned -- and an :class:`UntrainedExitsWarning`
(a ``UserWarning``) says so; that is how ``elasticir train ranker`` starts. The object keeps no
per-call state and scores under ``torch.inference_mode()``, so threads may share one ranker at
different levels. It encodes and batches the pairs (:mod:`~elasticir.models.ranker.inputs`);
the layers run in :mod:`~elasticir.models.ranker.scoring`.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elasticir.compute.exits import ExitPolicy, FixedLevel, Policy, parse_policy, skipped_scores
from elasticir.compute.levels import FULL, Level
from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.manifest import MODEL_MANIFEST
from elasticir.models.denser import PRECISIONS
from elasticir.models.elastic import level_flops, level_menu, sub_network
from elasticir.models.loading import quiet_loading, resolve_model_path
from elasticir.models.ranker.files import manifest_levels, read_manifest, write_ranker
from elasticir.models.ranker.inputs import (
    DEFAULT_MAX_LENGTH,
    batches_by_length,
    encode_pairs,
    pad_batch,
)
from elasticir.models.ranker.net import EXITS_FILE, HEADS, RankerNet
from elasticir.models.ranker.outputs import LayerRecords, RankerOutput
from elasticir.models.ranker.scoring import layer_costs, record_batch, score_batch

__all__ = ["ElasticRanker", "UntrainedExitsWarning"]


class UntrainedExitsWarning(UserWarning):
    """A ranker was loaded from a checkpoint without trained exit heads."""


class ElasticRanker:
    """A multi-exit cross-encoder over a Hugging Face encoder (see :mod:`elasticir.models.ranker`).

    ``model``: a ranker directory, any BERT-style checkpoint (directory or hub name), or None
    for the packaged all-MiniLM-L6-v2. ``max_length`` defaults to the directory's (256).
    ``precision="bf16"`` runs the encoder under bfloat16 autocast: about twice the pairs/s on
    CPUs with AMX or AVX512-BF16, likely slower without (``benchmarks/rerank_precision.py``
    measures both speed and agreement with fp32). Its scores differ slightly from fp32's, so
    the fingerprint (and any calibration) is per precision.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        precision: str = "fp32",
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model_path(model)
        try:
            with quiet_loading():
                tokenizer = AutoTokenizer.from_pretrained(path)
                encoder = AutoModel.from_pretrained(path)
        except OSError as err:
            raise MissingResourceError(
                f"cannot load model {model!r}: not a local model directory, and not available "
                f"from the Hugging Face cache offline ({err.__class__.__name__}: {err})"
            ) from err
        manifest = read_manifest(path)
        exits_entry = manifest.get("exits")
        head = exits_entry.get("kind", "cls") if isinstance(exits_entry, dict) else "cls"
        if head not in HEADS:
            raise InputFormatError(
                Path(path) / MODEL_MANIFEST, None, f'"exits.kind": one of {HEADS}', got=head
            )
        net = RankerNet(encoder, head=head)
        net.init_exits_(path)  # deterministic, also for the parts a file does not hold
        exits = Path(path) / EXITS_FILE
        if manifest and exits.is_file():
            from safetensors.torch import load_file

            has_classifier = net.load_exits(load_file(str(exits)), exits)
            trained = True
        else:
            has_classifier, trained = False, False
            warnings.warn(
                f"{model or 'all-MiniLM-L6-v2'} has no trained exit heads ({EXITS_FILE}): they "
                "are initialised, not learned, so its scores mean nothing until it is trained "
                "(elasticir train ranker)",
                UntrainedExitsWarning,
                stacklevel=2,
            )
        self._setup(
            net,
            tokenizer,
            model_path=path,
            model_name=str(model) if model is not None else "all-MiniLM-L6-v2",
            levels=manifest_levels(manifest, path, net.config),
            max_length=int(max_length or manifest.get("max_length", DEFAULT_MAX_LENGTH)),
            heads_trained=trained,
            has_classifier=has_classifier,
            manifest=manifest,
            device=device,
            batch_size=batch_size,
            precision=precision,
        )

    @classmethod
    def from_net(
        cls,
        net: RankerNet,
        tokenizer: Any,
        *,
        levels: Sequence[Level | str] | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        heads_trained: bool = True,
        has_classifier: bool = False,
        model_name: str = "in-memory ranker",
        device: str | None = None,
        batch_size: int = 32,
        precision: str = "fp32",
    ) -> ElasticRanker:
        """A ranker around modules already in memory (training uses this); no copy is made."""
        self = cls.__new__(cls)
        menu = level_menu(net.config, levels)
        self._setup(
            net,
            tokenizer,
            model_path=None,
            model_name=model_name,
            levels=menu,
            max_length=max_length,
            heads_trained=heads_trained,
            has_classifier=has_classifier,
            manifest={},
            device=device,
            batch_size=batch_size,
            precision=precision,
        )
        return self

    def _setup(
        self,
        net: RankerNet,
        tokenizer: Any,
        *,
        model_path: str | None,
        model_name: str,
        levels: tuple[Level, ...],
        max_length: int,
        heads_trained: bool,
        has_classifier: bool,
        manifest: dict[str, Any],
        device: str | None,
        batch_size: int,
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {max_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.net = net
        self.tokenizer = tokenizer
        self.model_path = model_path
        self.model_name = model_name
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net.to(self.device).eval()
        self.max_length = max_length
        self.batch_size = batch_size
        self.precision = precision
        self.heads_trained = heads_trained
        self.has_classifier = has_classifier
        self.manifest = manifest
        self._levels = levels
        self._types = int(getattr(net.config, "type_vocab_size", 1) or 1) > 1
        pad = tokenizer.pad_token_id
        self._pad_id = 0 if pad is None else int(pad)
        self._fingerprint: str | None = None

    # -- description -----------------------------------------------------------------------
    @property
    def config(self) -> Any:
        return self.net.config

    @property
    def fingerprint(self) -> str:
        """16 hex digits naming what decides this ranker's scores: every weight (trunk, exit
        heads, exit classifier), ``max_length`` and, when not fp32, the precision; equal
        fingerprints score alike."""
        if self._fingerprint is None:
            prefix = f"max_length={self.max_length}"
            if self.precision != "fp32":
                prefix += f";precision={self.precision}"
            digest = hashlib.sha256(prefix.encode())
            for name, tensor in sorted(self.net.state_dict().items()):
                data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(data.numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    @property
    def num_layers(self) -> int:
        return self.net.num_layers

    @property
    def levels(self) -> tuple[Level, ...]:
        """The menu of levels (``elasticir.json``'s), ``full`` first."""
        return self._levels

    @property
    def widths(self) -> tuple[int, ...]:
        """The widths the model was trained at (those of its levels), widest first."""
        return tuple(sorted({lv.width for lv in self._levels}, reverse=True))

    def check_level(self, level: Level | str) -> Level:
        """``level`` as a ``Level``; any depth at a trained width is offered (every layer has
        an exit). Raises ``ValueError`` otherwise."""
        level = Level(level)
        level.resolve(self.num_layers)  # raises when deeper than the model
        if level.width is None:
            raise ValueError(
                f"level {level} cuts heads and FFN neurons by different amounts; ElasticRanker "
                f"levels cut both alike (levels: {', '.join(map(str, self._levels))})"
            )
        if level.width not in self.widths:
            widths = ", ".join(f"W{w}" for w in self.widths)
            raise ValueError(
                f"level {level} runs width {level.width}%, which this ranker was not trained "
                f"at (widths: {widths}; levels: {', '.join(map(str, self._levels))})"
            )
        return level

    def level_flops(self, level: Level | str, seq_len: int = 32) -> int:
        return level_flops(self.config, level, seq_len)

    # -- scoring ---------------------------------------------------------------------------
    def score(
        self,
        query: str,
        passages: Sequence[str],
        level: Level | str = FULL,
        policy: Policy | str | None = None,
        batch_size: int | None = None,
        first_rank: int = 1,
    ) -> RankerOutput:
        """Scores of ``passages`` for one ``query`` (see :meth:`score_pairs`), given in
        first-stage order: a rank policy reads passage ``i``'s rank as ``first_rank + i``."""
        ranks = np.arange(first_rank, first_rank + len(passages), dtype=np.int64)
        return self.score_pairs(
            [query] * len(passages), passages, level, policy, batch_size, ranks=ranks
        )

    def score_pairs(
        self,
        queries: Sequence[str],
        passages: Sequence[str],
        level: Level | str = FULL,
        policy: Policy | str | None = None,
        batch_size: int | None = None,
        ranks: Sequence[int] | np.ndarray | None = None,
    ) -> RankerOutput:
        """Relevance scores of ``(queries[i], passages[i])`` at ``level``, under ``policy``.

        ``level`` gives the width and the deepest exit; ``policy`` (an exit policy or its
        spec) lets each pair exit earlier. A ``FixedLevel`` policy is the same as passing its
        level (``level`` must then be left at ``full`` or equal it). ``ranks``: each pair's
        1-based rank in its query's first stage, which rank policies read (and need).
        Under a pruning policy (:class:`~elasticir.compute.exits.RankPolicy`) an exited
        pair's score is its exit's logit minus ``PRUNE_GAP`` per layer it skipped. Under a
        :class:`~elasticir.compute.exits.CutoffPolicy` the pairs ranked below the cutoff are
        never encoded: exit layer 0, no FLOPs, ``skipped_scores`` (first-stage order, below
        every scored pair).
        """
        level, exit_policy = self.resolve(level, policy)
        queries, passages = list(queries), list(passages)
        rank_array = None
        if ranks is not None:
            rank_array = np.asarray(ranks, dtype=np.float64)
            if rank_array.shape != (len(queries),) or bool(np.any(rank_array < 1)):
                raise ValueError(
                    f"ranks: one 1-based first-stage rank per pair ({len(queries)}), got shape "
                    f"{rank_array.shape} with minimum {rank_array.min(initial=1):g}"
                )
        if exit_policy is not None and exit_policy.uses_ranks and rank_array is None:
            raise ValueError(
                f"policy {exit_policy.spec[:40]} reads each candidate's first-stage rank: pass "
                "ranks= (or use score(query, passages) with the passages in first-stage order)"
            )
        ids, types = self._encode(queries, passages)
        n = len(ids)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        scores = np.empty(n, dtype=np.float32)
        exits = np.empty(n, dtype=np.int64)
        depth = sub_network(self.config, level).depth
        scored = np.arange(n)
        if exit_policy is not None and rank_array is not None:
            skipped = exit_policy.skips(rank_array)
            if skipped is not None:  # a cutoff: these pairs are never encoded
                scores[skipped] = skipped_scores(rank_array[skipped], depth)
                exits[skipped] = 0
                scored = np.flatnonzero(~skipped)
        if exit_policy is not None and not exit_policy.exits_early:
            exit_policy = None  # every scored pair runs to the level's depth
        for batch_rows in batches_by_length(lengths[scored], batch_size or self.batch_size):
            rows = scored[batch_rows]
            batch = pad_batch(ids, types, rows, self._pad_id, self.device)
            batch_ranks = None
            if rank_array is not None:
                batch_ranks = torch.from_numpy(rank_array[rows]).to(self.device)
            with torch.inference_mode(), self._autocast():
                batch_scores, batch_exits = score_batch(
                    self.net, *batch, level, depth, exit_policy, batch_ranks
                )
            scores[rows] = batch_scores.float().cpu().numpy()
            exits[rows] = batch_exits.cpu().numpy()
        cost = layer_costs(self.config, lengths, level.width)
        full = layer_costs(self.config, lengths, 100) * self.num_layers
        return RankerOutput(
            scores=scores,
            exit_layers=exits,
            flops=exits * cost,
            full_flops=full,
            level=level,
            policy=None if policy is None else parse_policy(policy),
        )

    def _encode(
        self, queries: Sequence[str], passages: Sequence[str]
    ) -> tuple[list[list[int]], list[list[int]]]:
        return encode_pairs(
            self.tokenizer, queries, passages, self.max_length, self._types, self.net.pooled
        )

    def resolve(
        self, level: Level | str, policy: Policy | str | None
    ) -> tuple[Level, ExitPolicy | None]:
        level = Level(level)
        if policy is None:
            return self.check_level(level), None
        policy = parse_policy(policy)
        if isinstance(policy, FixedLevel):
            if not level.is_full and level != policy.level:
                raise ValueError(f"level {level} and policy {policy.spec} name two levels")
            return self.check_level(policy.level), None
        level = self.check_level(level)
        depth = sub_network(self.config, level).depth
        policy.check(depth)
        if policy.uses_classifier and not self.has_classifier:
            raise ValueError(
                f"policy {policy.spec} needs a learned exit classifier; this ranker has none "
                "(train one with elasticir train ranker)"
            )
        return level, policy

    def layer_records(
        self,
        queries: Sequence[str],
        passages: Sequence[str],
        level: Level | str = FULL,
        batch_size: int | None = None,
        classifier: bool = True,
        progress: bool = False,
        states: bool = False,
    ) -> LayerRecords:
        """Run every layer of ``level`` on every pair (no exit), recording each exit's score
        and signals: what calibration simulates every threshold from (``progress``: a bar
        over the pairs; ``states``: keep every layer's exit state too)."""
        from elasticir.progress import progress_bar

        level = self.check_level(level)
        depth = sub_network(self.config, level).depth
        ids, types = self._encode(list(queries), list(passages))
        n = len(ids)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        scores = np.empty((n, depth), dtype=np.float32)
        saturation = np.empty((n, depth), dtype=np.float32)
        use_classifier = classifier and self.has_classifier
        probabilities = np.empty((n, depth), dtype=np.float32) if use_classifier else None
        kept = None
        with progress_bar(progress, n, f"ranker exits at {level}") as advance:
            for rows in batches_by_length(lengths, batch_size or self.batch_size):
                cls = self._record(
                    ids, types, rows, level, scores, saturation, probabilities, states
                )
                if cls is not None:
                    if kept is None:
                        kept = np.empty((n, depth + 1, cls.shape[-1]), dtype=np.float32)
                    kept[rows] = cls
                advance(len(rows))
        return LayerRecords(
            scores=scores,
            saturation=saturation,
            classifier=probabilities,
            layer_cost=layer_costs(self.config, lengths, level.width),
            full_cost=layer_costs(self.config, lengths, 100) * self.num_layers,
            level=level,
            num_layers=self.num_layers,
            states=kept,
        )

    def _record(
        self,
        ids: list[list[int]],
        types: list[list[int]],
        rows: np.ndarray,
        level: Level,
        scores: np.ndarray,
        saturation: np.ndarray,
        probabilities: np.ndarray | None,
        keep_states: bool = False,
    ) -> np.ndarray | None:
        """One batch of :meth:`layer_records`: fills its rows of the arrays; with
        ``keep_states`` returns the batch's exit states ``(rows, depth + 1, hidden)``."""
        batch = pad_batch(ids, types, rows, self._pad_id, self.device)
        with torch.inference_mode(), self._autocast():
            batch_scores, cosines, probs, batch_states = record_batch(
                self.net, *batch, level, probabilities is not None, keep_states
            )
        scores[rows], saturation[rows] = batch_scores, cosines
        if probabilities is not None:
            probabilities[rows] = probs
        return batch_states

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast for ``precision="bf16"`` (scores come back as float32)."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- saving ----------------------------------------------------------------------------
    def save(self, output: str | Path, training: dict[str, Any] | None = None) -> Path:
        """Write this ranker as a directory (:mod:`elasticir.models.ranker.files`); returns it."""
        return write_ranker(
            output,
            self.net,
            self.tokenizer,
            levels=self._levels,
            max_length=self.max_length,
            classifier=self.has_classifier,
            training=training if training is not None else self.manifest.get("training"),
            source_model=self.manifest.get("source_model", self.model_name),
        )
