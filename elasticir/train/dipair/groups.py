"""DiPair's training groups: :func:`read_groups` and the selection of a config's groups.

Training material (``<data_root>/train``, never an evaluation set; the files are parsed by
:mod:`elasticir.train.data`): groups of one query, its positive passage(s) and negatives, from

* ``msmarco-teacher-scored-{a,b,c}.jsonl`` and ``nq-train-teacher-scored.jsonl``: hard
  negatives with a strong teacher's scores;
* ``msmarco-triples-100.tsv``: official MS MARCO training triples (one positive, one negative);
* ``wikiqa-train.tsv`` and ``trecqa-train.jsonl``: labelled answer sentences, grouped by
  question (questions with no positive or no negative are dropped).

A group whose query equals a DL19 query or an nq-open question is dropped all the same
(``elasticir.train.data.evaluation_questions``).

With ``anchor_queries > 0``, unlabelled *anchor* groups are added (:mod:`elasticir.train.anchor`:
MS MARCO dev queries, never their qrels, each with its top passages of a corpus as a first
stage ranks them). They have no positive: only the KL term reads them, with the ``teacher``'s
scores (or, without one, the first stage's own), so the head learns the cross-encoder on
candidate lists like those it reranks, not only on the few labelled training queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from elasticir.data.errors import MissingResourceError
from elasticir.train.anchor import ANCHOR_SOURCE, anchor_data, anchor_groups
from elasticir.train.data import (
    LabelledSentence,
    evaluation_questions,
    read_scored,
    read_trecqa,
    read_triples,
    read_wikiqa,
)
from elasticir.train.dipair.config import SOURCES, DiPairTrainConfig

__all__ = ["TrainingGroup", "kept_members", "read_groups", "select_groups"]


@dataclass(frozen=True)
class TrainingGroup:
    """One query with labelled passages (1 = positive) and, when the source has them, the
    source teacher's scores (same order). An unlabelled group (``labelled=False``, the anchor
    groups; every label 0) enters only the teacher term."""

    source: str
    query: str
    passages: tuple[str, ...]
    labels: tuple[int, ...]
    scores: tuple[float, ...] | None = None
    labelled: bool = True


def read_groups(train_dir: str | Path, sources: Sequence[str] | None = None) -> list[TrainingGroup]:
    """Every usable group of the named ``sources`` (default all) in ``train_dir``, in file
    order: a group has a non-empty query, at least one positive and one negative, and no
    passage twice. Malformed records raise :class:`~elasticir.data.errors.InputFormatError`
    naming file and line."""
    train_dir = Path(train_dir)
    groups: list[TrainingGroup] = []
    for name in sources if sources is not None else SOURCES:
        path = train_dir / SOURCES[name]
        if not path.is_file():
            raise MissingResourceError(f"{path}: training file of source {name!r} not found")
        if path.suffix == ".jsonl":
            reader = _trecqa if name == "trecqa" else _scored
        else:
            reader = _wikiqa if name == "wikiqa" else _triples
        for group in reader(path, name):
            cleaned = _clean_group(group)
            if cleaned is not None:
                groups.append(cleaned)
    return groups


def _clean_group(group: TrainingGroup) -> TrainingGroup | None:
    query = " ".join(group.query.split())
    seen: dict[str, int] = {}
    for i, text in enumerate(group.passages):
        text = text.strip()
        if text and text not in seen:
            seen[text] = i
    keep = list(seen.values())
    labels = tuple(group.labels[i] for i in keep)
    if not query or len(keep) < 2:
        return None
    if group.labelled and (1 not in labels or 0 not in labels):
        return None
    scores = None if group.scores is None else tuple(group.scores[i] for i in keep)
    return TrainingGroup(group.source, query, tuple(seen), labels, scores, group.labelled)


def _scored(path: Path, name: str) -> Iterator[TrainingGroup]:
    """One group per line: its positives, then its negatives, with the line's teacher scores."""
    for record in read_scored(path):
        yield TrainingGroup(
            name,
            record.query,
            record.positives + record.negatives,
            (1,) * len(record.positives) + (0,) * len(record.negatives),
            record.scores,
        )


def _triples(path: Path, name: str) -> Iterator[TrainingGroup]:
    for triple in read_triples(path):
        yield TrainingGroup(name, triple.query, (triple.positive, triple.negative), (1, 0))


def _wikiqa(path: Path, name: str) -> Iterator[TrainingGroup]:
    """Grouped by question text (WikiQA's question ids are per row)."""
    return _by_question(name, read_wikiqa(path), lambda row: row.question)


def _trecqa(path: Path, name: str) -> Iterator[TrainingGroup]:
    """Grouped by question id."""
    return _by_question(name, read_trecqa(path), lambda row: row.qid)


def _by_question(
    name: str, rows: Iterable[LabelledSentence], key: Callable[[LabelledSentence], str | None]
) -> Iterator[TrainingGroup]:
    """One group per ``key`` (in order of first appearance), under its first row's question."""
    by_key: dict[str | None, list[LabelledSentence]] = {}
    for row in rows:
        by_key.setdefault(key(row), []).append(row)
    for members in by_key.values():
        yield TrainingGroup(
            name,
            members[0].question,
            tuple(row.sentence for row in members),
            tuple(row.label for row in members),
        )


def select_groups(
    config: DiPairTrainConfig, root: Path, progress: bool = False
) -> tuple[list[TrainingGroup], dict[str, Any]]:
    """The groups of the configured sources, minus evaluation questions, capped per source."""
    banned, checked = _evaluation_questions(root)
    groups = read_groups(root / "train", config.source_names())
    by_source: dict[str, list[TrainingGroup]] = {name: [] for name in config.source_names()}
    excluded: dict[str, int] = dict.fromkeys(by_source, 0)
    for group in groups:
        if " ".join(group.query.lower().split()) in banned:
            excluded[group.source] += 1
        else:
            by_source[group.source].append(group)
    selected: list[TrainingGroup] = []
    sources: dict[str, dict[str, int]] = {}
    for number, (name, items) in enumerate(by_source.items()):
        available = len(items)
        if config.max_groups is not None and len(items) > config.max_groups:
            rng = np.random.default_rng([config.seed, 5, number])
            chosen = np.sort(rng.choice(len(items), size=config.max_groups, replace=False))
            items = [items[int(i)] for i in chosen]
        selected.extend(items)
        sources[name] = {
            "file": SOURCES[name],
            "groups_available": available,
            "groups": len(items),
            "excluded_eval_overlap": excluded[name],
        }
    if not selected:
        raise ValueError(f"no training groups found in {root / 'train'}")
    stats: dict[str, Any] = {"sources": sources, "eval_overlap_checked": checked}
    if config.anchor_queries:
        anchors, stats["anchor"] = _anchor_groups(config, root, banned, progress)
        selected.extend(anchors)
        sources[ANCHOR_SOURCE] = {"groups": len(anchors), "labelled": False}
    return selected, stats


def _anchor_groups(
    config: DiPairTrainConfig, root: Path, banned: set[str], progress: bool
) -> tuple[list[TrainingGroup], dict[str, Any]]:
    """The unlabelled anchor groups (:mod:`elasticir.train.anchor`) as training groups, and
    their record (the query ids included)."""
    spec = anchor_data(config, root, config.anchor_cache)
    mined, record = anchor_groups(spec, banned, progress=progress, threads=config.threads)
    groups = []
    for group in mined:
        passages = (group.positive, *group.negatives)
        cleaned = _clean_group(
            TrainingGroup(
                group.source,
                group.query,
                passages,
                (0,) * len(passages),
                group.teacher,
                labelled=False,
            )
        )
        if cleaned is not None:
            groups.append(cleaned)
    if not groups:
        raise ValueError(f"anchor_queries={config.anchor_queries} gave no usable anchor group")
    return groups, record


def _evaluation_questions(root: Path) -> tuple[set[str], bool]:
    try:
        return evaluation_questions(root), True
    except (MissingResourceError, FileNotFoundError):
        return set(), False  # a data folder without the evaluation sets: nothing to exclude


def kept_members(config: DiPairTrainConfig, group: TrainingGroup, number: int) -> list[int]:
    """Indices of the passages kept of a group: positives first (at most half of
    ``max_passages``), then negatives, each a seeded sample in file order."""
    positives = [i for i, label in enumerate(group.labels) if label == 1]
    negatives = [i for i, label in enumerate(group.labels) if label == 0]
    rng = np.random.default_rng([config.seed, 7, number])

    def sample(items: list[int], cap: int) -> list[int]:
        if len(items) <= cap:
            return items
        return [items[int(i)] for i in np.sort(rng.choice(len(items), size=cap, replace=False))]

    kept_pos = sample(positives, max(1, config.max_passages // 2))
    return kept_pos + sample(negatives, config.max_passages - len(kept_pos))
