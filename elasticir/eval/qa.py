"""DPR-style top-k retrieval accuracy for open-domain QA.

A question counts as answered at k when any of its top-k passages contains one of its answer
strings under DPR's "string" match (Karpukhin et al., 2020; the same check as Pyserini's
``pyserini.eval.evaluate_dpr_retrieval``): both sides are Unicode NFD-normalized, lowercased
and cut into word / punctuation tokens, and the answer's tokens must appear as a contiguous
run of the passage's tokens. So "Röntgen" matches "Wilhelm Röntgen." but "Rö" does not
match "Röntgen".
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

# `regex` (a transformers dependency) is needed for the \p{...} Unicode classes DPR's
# SimpleTokenizer uses; the stdlib `re` has no equivalent for \p{M} (combining marks).
import regex

from elasticir.data.records import Passage, QAPair, Query, Run

__all__ = ["answer_accuracy", "has_answer", "passage_texts", "run_ids_for", "tokenize"]

# DPR's SimpleTokenizer: runs of letters / digits / combining marks, or any single other
# non-space, non-control character (punctuation, symbols).
_TOKEN = regex.compile(
    r"([\p{L}\p{N}\p{M}]+)|([^\p{Z}\p{C}])",
    flags=regex.IGNORECASE | regex.UNICODE | regex.MULTILINE,
)


# Bounded: a passage's tokens take ~10x its text; retrieved passages often repeat across
# questions, so a small cache still saves most re-tokenizing.
@lru_cache(maxsize=4096)
def _tokens(text: str) -> tuple[str, ...]:
    normalized = unicodedata.normalize("NFD", text)
    return tuple(match.group().lower() for match in _TOKEN.finditer(normalized))


def tokenize(text: str) -> list[str]:
    """DPR "string"-match tokens: NFD-normalized, lowercased words and punctuation marks."""
    return list(_tokens(text))


def _contains(haystack: tuple[str, ...], needle: tuple[str, ...]) -> bool:
    n = len(needle)
    if n == 0:
        return False
    first = needle[0]
    for i in range(len(haystack) - n + 1):
        if haystack[i] == first and haystack[i : i + n] == needle:
            return True
    return False


def has_answer(answers: Iterable[str], text: str) -> bool:
    """True when any answer's token sequence occurs contiguously in ``text``'s tokens.

    Unlike DPR, an answer with no tokens (empty or whitespace) never matches: DPR would count
    it as found in every passage.
    """
    passage = _tokens(text)
    return any(_contains(passage, _tokens(answer)) for answer in answers)


def passage_texts(passages: Iterable[Passage]) -> dict[str, str]:
    """``doc_id -> "title text"``: the passage text DPR-style accuracy is checked against."""
    return {p.doc_id: p.encoder_text() for p in passages}


def run_ids_for(qas: Sequence[QAPair], run: Run, topics: Sequence[Query] | None) -> list[str]:
    """The run query id answering each QA pair ('' when there is none).

    Without ``topics`` the QA pair's own id is the run id. With ``topics`` the run ids are
    topic ids and a QA pair is matched to the topic with the same question text (surrounding
    whitespace ignored); repeated questions pair up in file order.
    """
    if topics is None:
        return [qa.query_id if qa.query_id in run else "" for qa in qas]
    by_text: dict[str, deque[str]] = defaultdict(deque)
    for topic in topics:
        by_text[topic.text.strip()].append(topic.query_id)
    ids = []
    for qa in qas:
        pending = by_text.get(qa.question.strip())
        ids.append(pending.popleft() if pending else "")
    return ids


def answer_accuracy(
    run: Run,
    qas: Sequence[QAPair],
    passage_text: Mapping[str, str],
    ks: Sequence[int] = (1, 5, 20, 100),
    topics: Sequence[Query] | None = None,
) -> dict[str, float]:
    """Fraction of ``qas`` questions with an answer-bearing passage in the run's top k.

    Returns ``{"Top1": ..., "Top5": ..., ...}`` for each k in ``ks``. The denominator is every
    question in ``qas``: a question the run has no results for counts as a miss, so a partial
    run cannot look better than it is. Each query's documents are ranked by score, best first,
    ties by doc id. ``passage_text`` maps doc ids to the text to search ("title text", see
    :func:`passage_texts`); a retrieved doc id missing from it raises ``KeyError``.

    ``topics`` is needed when the run's query ids are not the QA ids (e.g. a run over nq-open's
    ``queries.tsv``, ids ``nq0000``...): run ids are then mapped to questions through the
    topics' text.
    """
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive cut-offs, got {tuple(ks)}")
    depth = max(ks)
    hits = dict.fromkeys(ks, 0)
    for qa, run_id in zip(qas, run_ids_for(qas, run, topics), strict=True):
        scores = run.get(run_id) if run_id else None
        if not scores:
            continue
        top = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:depth]
        first_hit = None
        for rank, (doc_id, _) in enumerate(top, start=1):
            try:
                text = passage_text[doc_id]
            except KeyError:
                raise KeyError(
                    f"retrieved doc id {doc_id!r} (query {run_id!r}) has no passage text"
                ) from None
            if has_answer(qa.answers, text):
                first_hit = rank
                break
        if first_hit is not None:
            for k in ks:
                if first_hit <= k:
                    hits[k] += 1
    total = len(qas)
    return {f"Top{k}": (hits[k] / total if total else 0.0) for k in ks}
