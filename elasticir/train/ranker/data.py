"""The ranker's training groups (:func:`load_groups`) and each step's batch of them.

**Groups** come from the configured sources (:mod:`elasticir.train.ranker.sources`; never the
DL19 judgements nor the nq-open questions, except the cross-validation folds of ``judged``
below, and any group of these files whose query text equals an evaluation question is dropped
all the same), each source capped by a seeded sample of ``max_groups_per_source``.

With ``judged`` set (a dataset with qrels, e.g. ``msmarco-dl19``), :mod:`elasticir.train.judged`
adds that benchmark's own judgements for cross-validation: the queries are split into
``judged_folds`` folds, every fold but ``judged_fold`` gives labelled groups (source ``judged``;
the grades are the teacher scores), and the model records the training and held-out query ids,
so it is only ever evaluated on its held-out fold (``benchmarks/rerank_cv.py``). With
``init_from`` a trained ranker is fine-tuned instead of starting from the base encoder; an
empty ``sources`` list trains on the judged and/or anchor groups alone.

With ``anchor_queries > 0``, :mod:`elasticir.train.anchor` adds that many *unlabelled* groups
(source ``msmarco-dev-anchor``): MS MARCO dev queries over ``anchor_corpus``'s passages, the
base bi-encoder's top ``anchor_depth`` with its cosines as teacher scores. They enter only the
teacher term (their first passage is not a judged positive), and keep a ranker that starts as
the bi-encoder (``head="pooled"``) near it where the labelled sources say nothing. With
``anchor_bm25_weight > 0`` their passages and teacher scores come from the min-max fusion of
BM25 and the bi-encoder instead (a fused first stage), so the ranker is also taught lexical
evidence.

``exit_holdout`` whole queries (a seeded choice) are held out of training for the exit
classifier (:mod:`elasticir.train.ranker.exit_classifier`).

**Batches**: every step draws ``batch_size`` groups (seeded per-epoch shuffles) and, for each,
the positive and ``group_size - 1`` negatives (seeded per step); a group with too few negatives
of its own is filled with random passages of the same source, and then has no teacher term.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elasticir.models.ranker import encode_pairs, pad_batch
from elasticir.train.anchor import ANCHOR_SOURCE, anchor_data, anchor_groups
from elasticir.train.core import shuffled_rows
from elasticir.train.groups import RankingGroup
from elasticir.train.judged import JUDGED_SOURCE, JudgedData, judged_groups
from elasticir.train.keys import digest
from elasticir.train.ranker.config import SOURCES, RankerTrainConfig
from elasticir.train.ranker.sources import read_source

__all__ = ["GroupBatch", "TrainingGroups", "batch_tensors", "load_groups"]


@dataclass
class GroupBatch:
    """One step's groups as ``size`` x ``group`` pairs (positive first in each group)."""

    queries: list[str]
    passages: list[str]
    teacher: torch.Tensor  # (size, group) standardised teacher scores (0 where absent)
    has_teacher: torch.Tensor  # (size,) bool
    labelled: torch.Tensor  # (size,) bool: the first passage is a judged positive
    size: int
    group: int


@dataclass
class TrainingGroups:
    """The training groups of a config, the held-out ones, and what was read."""

    config: RankerTrainConfig
    train: list[RankingGroup]
    holdout: list[RankingGroup]
    pools: dict[str, tuple[str, ...]]  # file -> every passage of that file (filler negatives)
    data: dict[str, Any]
    key: str
    _orders: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict, repr=False)

    def rows(self, step: int) -> np.ndarray:
        """Group rows of 1-based ``step``: consecutive slices of seeded per-epoch shuffles."""
        config = self.config
        return shuffled_rows(
            len(self.train), config.batch_size, step, (config.seed, 101), self._orders
        )

    def batch(self, step: int) -> GroupBatch:
        """Step ``step``'s groups, negatives sampled with a generator seeded by the step."""
        rng = np.random.default_rng([self.config.seed, 307, step])
        return self.make_batch([self.train[int(r)] for r in self.rows(step)], rng)

    def make_batch(self, groups: Sequence[RankingGroup], rng: np.random.Generator) -> GroupBatch:
        g = self.config.group_size
        queries, passages, teachers, has, labelled = [], [], [], [], []
        for group in groups:
            own = len(group.negatives)
            if own >= g - 1:
                picked = rng.choice(own, size=g - 1, replace=False)
                negatives = [group.negatives[int(i)] for i in picked]
                if group.teacher is not None:
                    scores = np.array(
                        [group.teacher[0], *(group.teacher[1 + int(i)] for i in picked)]
                    )
                    teachers.append((scores - scores.mean()) / (scores.std() + 1e-6))
                    has.append(True)
                else:
                    teachers.append(np.zeros(g))
                    has.append(False)
            else:
                negatives = list(group.negatives) + self._fillers(group, g - 1 - own, rng)
                teachers.append(np.zeros(g))
                has.append(False)
            queries.extend([group.query] * g)
            passages.extend([group.positive, *negatives])
            labelled.append(group.labelled)
        teacher = torch.tensor(np.stack(teachers), dtype=torch.float32)
        return GroupBatch(
            queries,
            passages,
            teacher,
            torch.tensor(has),
            torch.tensor(labelled),
            size=len(groups),
            group=g,
        )

    def _fillers(self, group: RankingGroup, count: int, rng: np.random.Generator) -> list[str]:
        pool = self.pools[group.source]
        taken = {group.positive, *group.negatives}
        out: list[str] = []
        for _ in range(count * 20):
            if len(out) == count:
                break
            text = pool[int(rng.integers(len(pool)))]
            if text not in taken:
                taken.add(text)
                out.append(text)
        while len(out) < count:  # a source with almost no passages: repeat rather than fail
            out.append(pool[int(rng.integers(len(pool)))])
        return out


def load_groups(config: RankerTrainConfig, progress: bool = False) -> TrainingGroups:
    """Read the configured sources, drop evaluation overlaps, cap, add the anchor groups
    (``anchor_queries``; mining them may encode the anchor corpus once, into ``cache``), and
    hold out the exit classifier's queries (a seeded choice of whole queries)."""
    from elasticir.data.datasets import data_root as find_data_root
    from elasticir.train.data import evaluation_questions

    root = Path(config.data_root if config.data_root is not None else find_data_root()).resolve()
    banned = evaluation_questions(root)  # lower-cased, whitespace-normalised
    groups: list[RankingGroup] = []
    pools: dict[str, tuple[str, ...]] = {}
    counts: dict[str, dict[str, int]] = {}
    for source in config.sources:
        for name in SOURCES[source]:
            path = root / "train" / name
            if not path.is_file():
                raise FileNotFoundError(f"training source {source}: {path} not found")
            found = read_source(path)
            kept = [g for g in found if g.query.lower() not in banned]
            excluded = len(found) - len(kept)
            cap = config.max_groups_per_source
            if cap is not None and len(kept) > cap:
                rng = np.random.default_rng([config.seed, 17, _stable_hash(name)])
                kept = [kept[int(i)] for i in np.sort(rng.choice(len(kept), cap, replace=False))]
            pools[name] = tuple(dict.fromkeys(p for g in found for p in (g.positive, *g.negatives)))
            counts[name] = {
                "groups": len(kept),
                "pairs_available": sum(1 + len(g.negatives) for g in kept),
                "with_teacher": sum(g.teacher is not None for g in kept),
                "excluded_eval_overlap": excluded,
            }
            groups.extend(kept)
    anchor = None
    if config.anchor_queries:
        spec = anchor_data(config, root, config.cache)
        mined, anchor = anchor_groups(spec, banned, progress=progress, threads=config.threads)
        counts[ANCHOR_SOURCE] = _added_counts(mined)
        groups.extend(mined)
    judged = None
    if config.judged is not None:
        judged_spec = JudgedData(
            dataset=config.judged,
            folds=config.judged_folds,
            fold=config.judged_fold,
            fold_seed=config.judged_fold_seed,
            relevance=config.judged_relevance,
            per_query=config.judged_per_query,
            seed=config.seed,
            data_root=root,
            negatives_depth=config.judged_negatives_depth,
            min_negatives=config.group_size - 1,
            base_model=config.base_model,
            cache=config.cache,
        )
        # deliberately not filtered by ``banned``: these are the benchmark's own queries, and
        # only the training folds' (the held-out fold is recorded and never read)
        found, judged = judged_groups(judged_spec, progress=progress)
        counts[JUDGED_SOURCE] = _added_counts(found)
        groups.extend(found)
    if not groups:
        raise ValueError("no training groups found in the configured sources")
    queries = sorted({g.query for g in groups})
    rng = np.random.default_rng([config.seed, 401])
    holdout_queries = set()
    if config.exit_holdout:
        if config.exit_holdout >= len(queries):
            raise ValueError(
                f"exit_holdout={config.exit_holdout} queries, but only {len(queries)} training "
                "queries exist"
            )
        picked = rng.choice(len(queries), size=config.exit_holdout, replace=False)
        holdout_queries = {queries[int(i)] for i in picked}
    train = [g for g in groups if g.query not in holdout_queries]
    holdout = [g for g in groups if g.query in holdout_queries]
    for name in counts:
        counts[name]["held_out_groups"] = sum(g.source == name for g in holdout)
    hashed = hashlib.sha256()
    for g in groups:  # a labelled group hashes as it did before groups had the flag
        fields = dataclasses.astuple(g)
        hashed.update(json.dumps(fields[:-1] if g.labelled else fields).encode())
    data_digest = hashed.hexdigest()[:16]
    data = {
        "root": str(root),
        "sources": counts,
        "groups": len(train),
        "held_out_groups": len(holdout),
        "held_out_queries": len(holdout_queries),
        "digest": data_digest,
    }
    if anchor is not None:
        data["anchor"] = anchor
    if judged is not None:
        data["judged"] = judged
    if config.init_from is not None:
        data["init_from"] = _init_record(config)
    key = digest({"data": data_digest, "config": config.training_fields()})
    return TrainingGroups(config, train, holdout, pools, data, key)


def _added_counts(groups: list[RankingGroup]) -> dict[str, int]:
    """The data record's counts for groups that carry teacher scores and are never filtered
    by the evaluation-question ban (anchor and judged groups)."""
    return {
        "groups": len(groups),
        "pairs_available": sum(1 + len(g.negatives) for g in groups),
        "with_teacher": len(groups),
        "excluded_eval_overlap": 0,
    }


def _init_record(config: RankerTrainConfig) -> dict[str, Any]:
    """What a fine-tuning run starts from: the ranker's path and weight fingerprint (checked
    here, before any training data is mined, to have the config's head kind)."""
    from elasticir.models.ranker import ElasticRanker

    ranker = ElasticRanker(config.init_from, device="cpu")
    if ranker.net.head != config.head:
        raise ValueError(
            f"init_from={config.init_from} has a {ranker.net.head!r} head, but the config "
            f"says head={config.head!r}"
        )
    return {"path": str(Path(config.init_from).resolve()), "fingerprint": ranker.fingerprint}


def _stable_hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def batch_tensors(
    batch: GroupBatch, tokenizer: Any, config: RankerTrainConfig, device: Any, types: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input ids, token types, attention mask)`` of a batch's pairs, as the ranker encodes
    them (``types``: the encoder has token types)."""
    pooled = config.head == "pooled"
    ids, token_types = encode_pairs(
        tokenizer, batch.queries, batch.passages, config.max_length, types, pooled
    )
    return pad_batch(ids, token_types, np.arange(len(ids)), tokenizer.pad_token_id or 0, device)
