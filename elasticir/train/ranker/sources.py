"""The ranker's training files as ranking groups: :func:`read_source`.

Each source (``<data_root>/train``; the files are parsed by :mod:`elasticir.train.data`, the
groups are built here) becomes *groups* of one query, one positive and its negatives, with
teacher scores where the source has them:

=================== ============================================ =========================
source              file(s)                                      negatives / teacher
=================== ============================================ =========================
``msmarco-triples`` ``msmarco-triples-100.tsv``                  the triple's (merged per
                                                                 query and positive); no
``msmarco-teacher`` ``msmarco-teacher-scored-{a,b,c}.jsonl``     25-100 hard; yes (one
                                                                 scale per file)
``nq-teacher``      ``nq-train-teacher-scored.jsonl``            ~99; yes
``wikiqa``          ``wikiqa-train.tsv`` (CSV-quoted sentences)  the question's other
                                                                 sentences; no
``trecqa``          ``trecqa-train.jsonl``                       the question's label-0
                                                                 sentences; no
``medquad``         ``medquad-qa.jsonl.gz`` (optional, weak)     none; no
=================== ============================================ =========================

Texts are whitespace-normalised (:func:`elasticir.train.groups.clean_text`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from elasticir.data.errors import InputFormatError
from elasticir.train.data import (
    LabelledSentence,
    read_medquad,
    read_scored,
    read_trecqa,
    read_triples,
    read_wikiqa,
)
from elasticir.train.groups import RankingGroup, clean_text

__all__ = ["read_source"]


def read_source(path: Path) -> list[RankingGroup]:
    """The groups of one training file (format by name; see the module docstring)."""
    name = path.name
    if name.startswith("msmarco-triples"):
        return _read_triples(path)
    if name.startswith(("msmarco-teacher-scored", "nq-train-teacher-scored")):
        return _read_scored(path)
    if name.startswith("wikiqa"):
        return _read_labelled(path, read_wikiqa(path))
    if name.startswith("trecqa"):
        return _read_labelled(path, read_trecqa(path))
    if name.startswith("medquad"):
        return _read_medquad(path)
    raise ValueError(f"{path}: not a known training file")


def _read_triples(path: Path) -> list[RankingGroup]:
    merged: dict[tuple[str, str], list[str]] = {}
    for triple in read_triples(path):
        query, positive, negative = (
            clean_text(t) for t in (triple.query, triple.positive, triple.negative)
        )
        negatives = merged.setdefault((query, positive), [])
        if negative not in negatives:
            negatives.append(negative)
    return [RankingGroup(path.name, q, p, tuple(n)) for (q, p), n in merged.items()]


def _read_scored(path: Path) -> list[RankingGroup]:
    """One group per positive, with all the line's negatives; every line needs teacher scores."""
    groups = []
    for record in read_scored(path):
        if record.scores is None:
            raise InputFormatError(
                path,
                record.line,
                'teacher scores ("pos_scores" + "neg_scores" or "teacher_scores")',
            )
        query = clean_text(record.query)
        negatives = tuple(clean_text(n) for n in record.negatives)
        neg_scores = record.scores[len(record.positives) :]
        for positive, score in zip(record.positives, record.scores):
            groups.append(
                RankingGroup(
                    path.name, query, clean_text(positive), negatives, (score, *neg_scores)
                )
            )
    return groups


def _read_labelled(path: Path, rows: Iterable[LabelledSentence]) -> list[RankingGroup]:
    """Question-sentence pairs with 0/1 labels: one group per positive, the question's label-0
    sentences as its negatives."""
    questions: dict[str, tuple[list[str], list[str]]] = {}
    for row in rows:
        positives, negatives = questions.setdefault(clean_text(row.question), ([], []))
        text = clean_text(row.sentence)
        if text:
            (positives if row.label > 0 else negatives).append(text)
    return [
        RankingGroup(path.name, question, positive, tuple(dict.fromkeys(negatives)))
        for question, (positives, negatives) in questions.items()
        for positive in dict.fromkeys(positives)
    ]


def _read_medquad(path: Path) -> list[RankingGroup]:
    groups = []
    for pair in read_medquad(path):
        if clean_text(pair.answer):
            groups.append(
                RankingGroup(
                    path.name, clean_text(pair.question), clean_text(pair.answer)[:2000], ()
                )
            )
    return groups
