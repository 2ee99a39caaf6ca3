"""Queries: TREC/Pyserini topic TSVs (``qid<TAB>text``) and DPR question-answer files.

DPR's qas files (``nq-test.qa.csv``, Pyserini's ``topics.dpr.*.txt``) hold
``question<TAB>['answer', ...]`` with the answer list written as a Python literal. Fields that
contain double quotes are CSV-quoted (wrapped in quotes, inner quotes doubled), as DPR's
``csv.reader`` expects; they are unquoted here. Such files have no ids: like Pyserini, a
question's id is its 0-based position in the file.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

from elasticir.data._lines import StrPath, iter_lines, split_tsv_row
from elasticir.data.errors import InputFormatError
from elasticir.data.records import QAPair, Query

__all__ = ["read_qas", "read_queries_any", "read_topics", "require_query_texts"]

_WHITESPACE = re.compile(r"\s")
_QAS_LINE = "question<TAB>['answer', ...]"


def read_topics(path: StrPath) -> list[Query]:
    """Read a ``qid<TAB>text`` topics file, in file order.

    The text is everything after the first tab, kept as is (no stripping), since encoders
    and BM25 see exactly what the benchmark ships. A query with no text (empty or only
    whitespace) and a file with no query are errors: a dense encoder would return arbitrary
    passages for one, BM25 none, and either would still be counted.
    """
    queries: list[Query] = []
    seen: set[str] = set()
    for lineno, line in iter_lines(path):
        qid, tab, text = line.partition("\t")
        if not tab:
            raise InputFormatError(path, lineno, "qid<TAB>query text", got=line)
        if not qid:
            raise InputFormatError(path, lineno, "a non-empty qid", got=line)
        if _WHITESPACE.search(qid):
            hint = " (a DPR qas file? use read_qas)" if text.lstrip().startswith("[") else ""
            raise InputFormatError(path, lineno, f"a qid without whitespace{hint}", got=qid)
        if qid in seen:
            raise InputFormatError(path, lineno, "unique qids", got=f"duplicate qid {qid}")
        if not text.strip():
            raise InputFormatError(path, lineno, f"a query text after the tab (query {qid})", line)
        seen.add(qid)
        queries.append(Query(qid, text))
    if not queries:
        raise InputFormatError(path, None, "at least one qid<TAB>query line", "an empty file")
    return queries


def read_qas(path: StrPath) -> list[QAPair]:
    """Read a DPR qas file; ``query_id`` is the question's 0-based index among the records.

    Accepts ``.tsv``, ``.txt`` and DPR's ``.csv`` alike: all are tab-separated.
    """
    pairs: list[QAPair] = []
    for index, (lineno, line) in enumerate(iter_lines(path)):
        fields = split_tsv_row(line)
        if len(fields) != 2:
            raise InputFormatError(path, lineno, _QAS_LINE, got=line)
        question, answers_text = fields
        if not question.strip():
            raise InputFormatError(path, lineno, "a non-empty question", got=line)
        answers = _parse_answers(answers_text)
        if answers is None:
            raise InputFormatError(
                path,
                lineno,
                "a Python list literal of answer strings, e.g. ['Paris']",
                answers_text,
            )
        pairs.append(QAPair(str(index), question, answers))
    if not pairs:
        raise InputFormatError(path, None, f"at least one {_QAS_LINE} line", "an empty file")
    return pairs


def read_queries_any(path: StrPath) -> list[Query]:
    """Read queries from a topics TSV or a DPR qas file, whichever ``path`` is.

    The first record decides: a second column that is a list literal of strings makes it a
    qas file (ids are then line indexes, the question is the text).
    """
    for _, line in iter_lines(path):
        fields = split_tsv_row(line)
        is_qas = (
            len(fields) == 2
            and fields[1].lstrip().startswith("[")
            and _parse_answers(fields[1]) is not None
        )
        if is_qas:
            return [Query(qa.query_id, qa.question) for qa in read_qas(path)]
        break
    return read_topics(path)


def _parse_answers(text: str) -> tuple[str, ...] | None:
    """The answers of a ``['a', 'b']`` literal, or None when it is not a list of strings."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        return None
    return tuple(value)


def require_query_texts(queries: Sequence[Query]) -> None:
    """Raise ``ValueError`` for queries a retriever cannot answer meaningfully: none at all,
    or one with no text (a dense encoder would return arbitrary passages for it, BM25
    nothing, and either would still be counted)."""
    if not queries:
        raise ValueError("no queries given")
    blank = [q.query_id for q in queries if not q.text.strip()]
    if blank:
        shown = ", ".join(blank[:5]) + (" ..." if len(blank) > 5 else "")
        raise ValueError(f"{len(blank)} query(ies) have no text: {shown}")
