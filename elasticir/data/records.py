"""Typed records passed between stages, named like ir_datasets / ir_measures fields."""

from __future__ import annotations

from dataclasses import dataclass

# qid -> {doc_id: score}; the shape ir_measures and pytrec_eval take for runs.
Run = dict[str, dict[str, float]]
# qid -> {doc_id: relevance}
Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True, slots=True)
class Passage:
    doc_id: str
    text: str
    title: str = ""

    def encoder_text(self) -> str:
        """The text a passage encoder sees: title and body, as DPR and Pyserini join them."""
        return f"{self.title} {self.text}" if self.title else self.text


@dataclass(frozen=True, slots=True)
class Query:
    query_id: str
    text: str


@dataclass(frozen=True, slots=True)
class QAPair:
    """A DPR-style question with its accepted answer strings."""

    query_id: str
    question: str
    answers: tuple[str, ...]
