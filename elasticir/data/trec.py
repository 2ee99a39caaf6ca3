"""TREC qrels and run files: reading them strictly, writing them deterministically.

qrels lines are ``qid iter docid relevance``; run lines are ``qid Q0 docid rank score tag``,
whitespace separated. Written runs are byte-identical for identical input: documents are
ordered by descending score, ties broken by doc id, and scores printed with 6 decimals.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from numbers import Integral
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from elasticir.data._lines import StrPath, iter_lines
from elasticir.data.errors import InputFormatError
from elasticir.data.files import atomic_file, check_writable
from elasticir.data.records import Qrels, Run

__all__ = ["TrecRunWriter", "check_run_output", "read_qrels", "read_run", "write_run"]

_WHITESPACE = re.compile(r"\s")


def _parse_int(text: str) -> int | None:
    # int() also takes "1_000" and non-ASCII digits; TREC tools do not.
    if not text.lstrip("+-").isascii() or "_" in text:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def read_qrels(path: StrPath) -> Qrels:
    """Read TREC qrels into ``{qid: {docid: relevance}}``; negative relevance is kept.

    A (qid, docid) pair judged twice with the same grade is accepted; with different grades
    it is an error, since which one counts would be arbitrary.
    """
    qrels: Qrels = {}
    for lineno, line in iter_lines(path):
        cols = line.split()
        if len(cols) != 4:
            raise InputFormatError(path, lineno, "4 columns: qid iter docid relevance", line)
        qid, _, doc_id, rel_text = cols
        rel = _parse_int(rel_text)
        if rel is None:
            raise InputFormatError(path, lineno, "an integer relevance in column 4", rel_text)
        judged = qrels.setdefault(qid, {})
        previous = judged.get(doc_id)
        if previous is not None and previous != rel:
            raise InputFormatError(
                path,
                lineno,
                "one relevance per query and document",
                got=f"{qid} {doc_id} judged {previous} and {rel}",
            )
        judged[doc_id] = rel
    return qrels


def read_run(path: StrPath) -> Run:
    """Read a TREC run into ``{qid: {docid: score}}`` (ranks are checked, then dropped)."""
    run: Run = {}
    for lineno, line in iter_lines(path):
        cols = line.split()
        if len(cols) != 6:
            raise InputFormatError(path, lineno, "6 columns: qid Q0 docid rank score tag", line)
        qid, _, doc_id, rank_text, score_text, _ = cols
        if _parse_int(rank_text) is None:
            raise InputFormatError(path, lineno, "an integer rank in column 4", rank_text)
        try:
            score = float(score_text)
        except ValueError:
            score = math.nan
        if math.isnan(score):
            raise InputFormatError(path, lineno, "a numeric score in column 5", score_text)
        scores = run.setdefault(qid, {})
        if doc_id in scores:
            raise InputFormatError(
                path, lineno, "each document once per query", got=f"{qid} {doc_id} again"
            )
        scores[doc_id] = score
    return run


def _token(value: Any, what: str) -> str:
    """A qid / docid / tag as text that a whitespace-separated TREC line can hold."""
    if isinstance(value, Integral) and not isinstance(value, bool):
        value = str(int(value))  # numpy integer ids from an index
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}: {value!r}")
    if not value or _WHITESPACE.search(value):
        raise ValueError(f"{what} must be non-empty and free of whitespace, got {value!r}")
    return str(value)  # a plain str, not a numpy.str_


def check_run_output(path: StrPath) -> None:
    """Raise ``ValueError`` unless a TREC run may be written at ``path``.

    A run replaces what is there, so only a run (or an empty file) may be: a mistyped ``-o``
    naming a corpus, topics or a directory is refused before any work, as is a location that
    cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give the run file's path (nothing was written)")
    if path.is_file() and not _looks_like_run(path):
        raise ValueError(
            f"{path} exists and is not a TREC run; refusing to replace it with one: choose "
            "another output path (nothing was written)"
        )
    check_writable(path, "run")


def _looks_like_run(path: Path) -> bool:
    """An empty file, or one whose first non-blank line has the six columns of a run."""
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                if raw.strip():
                    cols = raw.split()
                    return (
                        len(cols) == 6
                        and _parse_int(cols[3].decode("ascii", "replace")) is not None
                    )
    except OSError:
        return False
    return True


class TrecRunWriter:
    """Write a TREC run query by query, crash-safely.

    Use as a context manager; the file appears at ``path`` only when the ``with`` block ends
    without an exception (a previous file there stays untouched until then)::

        with TrecRunWriter("runs/dl19.trec", tag="bi-encoder", k=1000) as writer:
            for qid, (doc_ids, scores) in results:
                writer.write_arrays(qid, doc_ids, scores)

    Each query's documents are sorted by ``(-score, doc_id)``, cut to ``k`` and ranked from
    1. Queries appear in the order written; writing a query twice raises ``ValueError``.
    """

    def __init__(self, path: StrPath, tag: str = "elasticir", k: int | None = None) -> None:
        if k is not None and k < 1:
            raise ValueError(f"k must be at least 1 (or None for all), got {k}")
        self.path = Path(path)
        self.tag = _token(tag, "run tag")
        self.k = k
        self._written: set[str] = set()
        self._stack: ExitStack | None = None
        self._fh: IO[str] | None = None
        self._used = False

    def __enter__(self) -> TrecRunWriter:
        if self._used:
            raise RuntimeError("a TrecRunWriter writes one file; create a new one")
        self._used = True
        if self.path.exists() and (self.path.is_dir() or not _looks_like_run(self.path)):
            check_run_output(self.path)  # raises, naming what is there
        with ExitStack() as stack:
            tmp = stack.enter_context(atomic_file(self.path))
            self._fh = stack.enter_context(open(tmp, "w", encoding="utf-8", newline="\n"))
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        stack, self._stack, self._fh = self._stack, None, None
        assert stack is not None
        # Closes the file, then atomic_file renames it into place or, on error, removes it.
        return bool(stack.__exit__(exc_type, exc, tb))

    def write(
        self, query_id: str, scores: Mapping[str, float] | Iterable[tuple[str, float]]
    ) -> None:
        """Write one query's ranking from ``{doc_id: score}`` or ``(doc_id, score)`` pairs."""
        pairs = scores.items() if isinstance(scores, Mapping) else scores
        doc_ids: list[Any] = []
        values: list[float] = []
        for doc_id, score in pairs:
            doc_ids.append(doc_id)
            values.append(score)
        self._write(query_id, doc_ids, values)

    def write_arrays(self, query_id: str, doc_ids: Sequence[Any], scores: Sequence[float]) -> None:
        """Write one query's ranking from parallel sequences (lists or numpy arrays)."""
        # tolist() turns numpy arrays into Python scalars in one C call.
        ids = doc_ids.tolist() if hasattr(doc_ids, "tolist") else list(doc_ids)
        values = scores.tolist() if hasattr(scores, "tolist") else list(scores)
        if len(ids) != len(values):
            raise ValueError(f"{len(ids)} doc ids but {len(values)} scores for query {query_id}")
        self._write(query_id, ids, values)

    def _write(self, query_id: Any, doc_ids: list[Any], values: list[Any]) -> None:
        if self._fh is None:
            raise RuntimeError("use TrecRunWriter inside a with block")
        qid = _token(query_id, "query id")
        if qid in self._written:
            raise ValueError(f"query {qid} was already written to {self.path}")
        ids = [d if type(d) is str else _token(d, "doc id") for d in doc_ids]
        if not all(ids) or _WHITESPACE.search("".join(ids)):  # one scan, not one per id
            for doc_id in ids:
                _token(doc_id, "doc id")  # raises, naming the offending id
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate doc ids in the ranking of query {qid}")
        scores = [float(v) for v in values]
        if any(map(math.isnan, scores)):
            raise ValueError(f"NaN score in the ranking of query {qid}")
        keyed = [(-score, doc_id) for score, doc_id in zip(scores, ids, strict=True)]
        if self.k is not None and self.k < len(keyed):
            top = heapq.nsmallest(self.k, keyed)  # same order as sorted(keyed)[: k]
        else:
            keyed.sort()
            top = keyed
        tag = self.tag
        self._fh.write(
            "".join(
                f"{qid} Q0 {doc_id} {rank} {0.0 - neg:.6f} {tag}\n"
                for rank, (neg, doc_id) in enumerate(top, 1)
            )
        )
        self._written.add(qid)


def write_run(path: StrPath, run: Run, tag: str = "elasticir", k: int | None = None) -> None:
    """Write a whole run, queries in sorted qid order (see :class:`TrecRunWriter`)."""
    with TrecRunWriter(path, tag=tag, k=k) as writer:
        for qid in sorted(run):
            writer.write(qid, run[qid])
