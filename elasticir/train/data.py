"""Training material, kept apart from everything we evaluate on: the readers of the labelled
training files, and the text for self-distillation.

**Training files** (``<data_root>/train``). Each format is parsed here, once, into records that
hold the texts as the file has them; the trainers (``elasticir.train.ranker``,
``elasticir.train.dipair``) build their own groups from those records. A malformed line raises
:class:`~elasticir.data.errors.InputFormatError` naming the file, the line and what was expected.

* ``msmarco-triples-100.tsv`` (:func:`read_triples`): ``query<TAB>positive<TAB>negative``;
* ``msmarco-teacher-scored-{a,b,c}.jsonl``, ``nq-train-teacher-scored.jsonl``
  (:func:`read_scored`): ``{"query", "pos": [...], "neg": [...]}`` and the teacher's scores,
  ``"pos_scores"`` + ``"neg_scores"`` or ``"teacher_scores"`` (the positives' first);
* ``wikiqa-train.tsv`` (:func:`read_wikiqa`): tab-separated, CSV-quoted sentences, under the
  header ``QuestionID Question SentenceID Sentence Label``;
* ``trecqa-train.jsonl`` (:func:`read_trecqa`): ``{"qid", "question", "sentence", "label"}``;
* ``medquad-qa.jsonl.gz`` (:func:`read_medquad`): ``{"question", "answer"}``.

**Self-distillation text** (:func:`training_text`). Queries come from the unlabelled topic
files (MS MARCO dev subset, DPR NQ dev, DPR TriviaQA dev); passages from the training files
above and the DPR samples in ``train/``. None of those are the DL19 queries or the nq-open (NQ
test) questions we report on, and any training query whose text equals an evaluation question
is dropped all the same.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elasticir.data.datasets import get_dataset
from elasticir.data.errors import InputFormatError
from elasticir.data.topics import read_qas, read_topics

TOPIC_FILES = (
    "topics/topics.msmarco-passage.dev-subset.txt",
    "topics/topics.dpr.nq.dev.txt",
    "topics/topics.dpr.trivia.dev.txt",
)


@dataclass(frozen=True)
class TrainingText:
    """Where training text came from, so a model card can say exactly what was used."""

    queries: list[str]
    passages: list[str]
    sources: dict[str, int]  # file -> number of texts taken
    excluded_eval_overlap: int


def evaluation_questions(root: Path) -> set[str]:
    """Normalised texts of every query we report on (DL19 queries, nq-open questions)."""
    texts: set[str] = set()
    for name in ("msmarco-dl19", "nq-open"):
        dataset = get_dataset(name, root=root)
        if dataset.queries is not None:
            texts.update(norm_text(q.text) for q in read_topics(dataset.queries))
        if dataset.qas is not None:
            texts.update(norm_text(qa.question) for qa in read_qas(dataset.qas))
    return texts


def training_text(root: Path, max_passage_chars: int = 1500) -> TrainingText:
    """Unlabelled queries and a passage pool for distillation (see the module docstring)."""
    banned = evaluation_questions(root)
    sources: dict[str, int] = {}
    queries: list[str] = []
    seen: set[str] = set()
    excluded = 0
    for relative in TOPIC_FILES:
        path = root / relative
        items = read_qas(path) if "dpr" in relative else read_topics(path)
        count = 0
        for item in items:
            text = getattr(item, "question", None) or item.text
            key = norm_text(text)
            if key in banned:
                excluded += 1
                continue
            if key and key not in seen:
                seen.add(key)
                queries.append(text.strip())
                count += 1
        sources[relative] = count
    passages: list[str] = []
    seen_passages: set[str] = set()
    for relative, texts in _passage_sources(root / "train"):
        count = 0
        for text in texts:
            text = " ".join(text.split())[:max_passage_chars]
            if len(text) > 20 and text not in seen_passages:
                seen_passages.add(text)
                passages.append(text)
                count += 1
        sources[f"train/{relative}"] = count
    return TrainingText(queries, passages, sources, excluded)


def _passage_sources(train: Path) -> Iterator[tuple[str, Iterable[str]]]:
    for name in (
        "msmarco-teacher-scored-a.jsonl",
        "msmarco-teacher-scored-b.jsonl",
        "msmarco-teacher-scored-c.jsonl",
        "nq-train-teacher-scored.jsonl",
    ):
        yield name, (p for r in read_scored(train / name) for p in (*r.positives, *r.negatives))
    triples = read_triples(train / "msmarco-triples-100.tsv")
    yield "msmarco-triples-100.tsv", (p for r in triples for p in (r.positive, r.negative))
    yield "dpr-nq-dev-sample.json", _dpr_contexts(train / "dpr-nq-dev-sample.json")
    yield "wikiqa-train.tsv", (r.sentence for r in read_wikiqa(train / "wikiqa-train.tsv"))
    yield "trecqa-train.jsonl", (r.sentence for r in read_trecqa(train / "trecqa-train.jsonl"))
    yield "medquad-qa.jsonl.gz", (r.answer for r in read_medquad(train / "medquad-qa.jsonl.gz"))


def _dpr_contexts(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        for question in json.load(fh):
            for key in ("positive_ctxs", "negative_ctxs", "hard_negative_ctxs"):
                for ctx in question.get(key, []):
                    yield f"{ctx.get('title', '')} {ctx['text']}".strip()


def norm_text(text: str) -> str:
    """How training and evaluation texts are compared: lower-cased, whitespace-normalised."""
    return " ".join(text.lower().split())


# --------------------------------------------------------------------------- training files


@dataclass(frozen=True)
class Triple:
    """A line of ``msmarco-triples-100.tsv`` (``line``: its 1-based number)."""

    line: int
    query: str
    positive: str
    negative: str


@dataclass(frozen=True)
class ScoredQuery:
    """A line of a teacher-scored file: the teacher's ``scores`` are the positives' then the
    negatives' (None when the line has none)."""

    line: int
    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    scores: tuple[float, ...] | None


@dataclass(frozen=True)
class LabelledSentence:
    """A WikiQA row or TrecQA line: a question, a candidate answer sentence, its 0/1 label.
    ``qid`` as the file has it: WikiQA's differ from row to row even for the same question,
    TrecQA's name the question (None when a line has none); ``line`` is where the row ends."""

    line: int
    qid: str | None
    question: str
    sentence: str
    label: int


@dataclass(frozen=True)
class QuestionAnswer:
    """A line of ``medquad-qa.jsonl.gz``."""

    line: int
    question: str
    answer: str


WIKIQA_HEADER = ("QuestionID", "Question", "SentenceID", "Sentence", "Label")


def read_triples(path: Path) -> Iterator[Triple]:
    """The ``query<TAB>positive<TAB>negative`` lines of ``path`` (blank lines skipped)."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise InputFormatError(path, number, "query<TAB>positive<TAB>negative", line)
            yield Triple(number, *parts)


def read_scored(path: Path) -> Iterator[ScoredQuery]:
    """The lines of a teacher-scored file: ``{"query", "pos": [...], "neg": [...]}`` with, when
    scored, the teacher's scores in ``"pos_scores"`` + ``"neg_scores"`` or in
    ``"teacher_scores"`` (one per passage, the positives' first)."""
    for number, record in json_lines(path):
        query, pos, neg = record.get("query"), record.get("pos"), record.get("neg")
        if not isinstance(query, str) or not _texts(pos) or not _texts(neg):
            raise InputFormatError(
                path,
                number,
                '{"query": text, "pos": [texts], "neg": [texts]} '
                '(+ "pos_scores" and "neg_scores", or "teacher_scores")',
                str(record),
            )
        scores = _teacher_scores(path, number, record, len(pos), len(neg))
        yield ScoredQuery(number, query, tuple(pos), tuple(neg), scores)


def read_wikiqa(path: Path) -> Iterator[LabelledSentence]:
    """The rows of a WikiQA file: tab-separated, after the header :data:`WIKIQA_HEADER`;
    sentences may be CSV-quoted and hold tabs."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quotechar='"')
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:5]) != WIKIQA_HEADER:
            raise InputFormatError(path, 1, f"the header {' '.join(WIKIQA_HEADER)}", str(header))
        for row in reader:
            if not row:
                continue
            if len(row) != 5 or row[4].strip() not in ("0", "1"):
                raise InputFormatError(
                    path, reader.line_num, "5 tab-separated columns, label 0 or 1", repr(row)
                )
            yield LabelledSentence(reader.line_num, row[0], row[1], row[3], int(row[4]))


def read_trecqa(path: Path) -> Iterator[LabelledSentence]:
    """The lines of a TrecQA file: ``{"qid", "question", "sentence", "label": 0 or 1}``."""
    for number, record in json_lines(path):
        qid, question, sentence = record.get("qid"), record.get("question"), record.get("sentence")
        label = record.get("label")
        if not isinstance(question, str) or not isinstance(sentence, str) or label not in (0, 1):
            raise InputFormatError(
                path,
                number,
                '{"qid", "question": text, "sentence": text, "label": 0 or 1}',
                str(record),
            )
        yield LabelledSentence(
            number, None if qid is None else str(qid), question, sentence, int(label)
        )


def read_medquad(path: Path) -> Iterator[QuestionAnswer]:
    """The lines of a MedQuAD file: ``{"question": text, "answer": text}``."""
    for number, record in json_lines(path):
        question, answer = record.get("question"), record.get("answer")
        if not isinstance(question, str) or not isinstance(answer, str):
            raise InputFormatError(path, number, '{"question": text, "answer": text}', str(record))
        yield QuestionAnswer(number, question, answer)


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON-lines file (gzipped when
    its name ends in ``.gz``); a line that is not a JSON object raises."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputFormatError(path, number, "a JSON object", err.msg) from err
            if not isinstance(record, dict):
                raise InputFormatError(path, number, "a JSON object", type(record).__name__)
            yield number, record


def is_number(value: object) -> bool:
    """An int or float (not a bool), as JSON numbers load."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _texts(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _teacher_scores(
    path: Path, number: int, record: dict[str, Any], positives: int, negatives: int
) -> tuple[float, ...] | None:
    """The line's teacher scores, the positives' first; None when it has no score field."""
    if "pos_scores" in record or "neg_scores" in record:
        fields = {"pos_scores": (positives, "positive"), "neg_scores": (negatives, "negative")}
    elif "teacher_scores" in record:
        fields = {"teacher_scores": (positives + negatives, "passage, the positives' first")}
    else:
        return None
    scores: list[float] = []
    for name, (count, per) in fields.items():
        value = record.get(name, [])
        if not isinstance(value, list) or len(value) != count or not all(map(is_number, value)):
            raise InputFormatError(
                path, number, f'"{name}": one teacher score per {per} ({count})', str(value)
            )
        scores.extend(float(v) for v in value)
    return tuple(scores)
