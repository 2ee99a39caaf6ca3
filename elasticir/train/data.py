"""Training material for self-distillation, kept apart from everything we evaluate on.

Queries come from the unlabelled topic files (MS MARCO dev subset, DPR NQ dev, DPR TriviaQA
dev); passages from the labelled training files in ``train/`` (MS MARCO training triples and
teacher-scored negatives, NQ-train passages, DPR samples, WikiQA / TrecQA sentences, MedQuAD
answers). None of those are the DL19 queries or the nq-open (NQ test) questions we report on,
and any training query whose text equals an evaluation question is dropped all the same.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from elasticir.data.datasets import get_dataset
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
            texts.update(_norm(q.text) for q in read_topics(dataset.queries))
        if dataset.qas is not None:
            texts.update(_norm(qa.question) for qa in read_qas(dataset.qas))
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
            key = _norm(text)
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
        yield name, _scored_passages(train / name)
    yield "msmarco-triples-100.tsv", _triples(train / "msmarco-triples-100.tsv")
    yield "dpr-nq-dev-sample.json", _dpr_contexts(train / "dpr-nq-dev-sample.json")
    yield "wikiqa-train.tsv", _wikiqa(train / "wikiqa-train.tsv")
    yield "trecqa-train.jsonl", _jsonl_field(train / "trecqa-train.jsonl", "sentence")
    yield "medquad-qa.jsonl.gz", _jsonl_field(train / "medquad-qa.jsonl.gz", "answer")


def _scored_passages(path: Path) -> Iterator[str]:
    for record in _jsonl(path):
        yield from record.get("pos", [])
        yield from record.get("neg", [])


def _triples(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            yield from parts[1:3]


def _dpr_contexts(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        for question in json.load(fh):
            for key in ("positive_ctxs", "negative_ctxs", "hard_negative_ctxs"):
                for ctx in question.get(key, []):
                    yield f"{ctx.get('title', '')} {ctx['text']}".strip()


def _wikiqa(path: Path) -> Iterator[str]:
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quotechar='"')
        next(reader, None)
        for row in reader:
            if len(row) >= 4:
                yield row[3]


def _jsonl_field(path: Path, field: str) -> Iterator[str]:
    for record in _jsonl(path):
        value = record.get(field)
        if isinstance(value, str):
            yield value


def _jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())
