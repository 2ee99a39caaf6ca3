"""The texts ElasticDenser is distilled on: the training queries and the passage pool.

The unlabelled training queries and passages of :func:`elasticir.train.data.training_text`,
each capped by a seeded sample (``max_queries``, ``passage_pool_size``); then the corpus
passages of ``corpus_passages`` join the pool (label-free in-domain candidates: no query,
question or judgement of those datasets is read) and ``pseudo_queries`` word spans cut from
pool passages join the queries, except any equal to a question we report on.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from elasticir.train.data import TrainingText, evaluation_questions, norm_text, training_text

if TYPE_CHECKING:
    from elasticir.train.denser.config import DenserTrainConfig

__all__ = [
    "PSEUDO_QUERY_WORDS",
    "cached_evaluation_questions",
    "cached_training_text",
    "corpus_texts",
    "pseudo_queries",
    "select_texts",
]

PSEUDO_QUERY_WORDS = (4, 12)  # a pseudo-query is a span of this many words (inclusive)


@functools.lru_cache(maxsize=2)
def cached_evaluation_questions(root: Path) -> frozenset[str]:
    """``evaluation_questions(root)``, read once per process: no pseudo-query may equal one."""
    return frozenset(evaluation_questions(root))


@functools.lru_cache(maxsize=2)
def cached_training_text(root: Path) -> TrainingText:
    """``training_text(root)``, read once per process (a few seconds; runs share it)."""
    return training_text(root)


def select_texts(
    config: DenserTrainConfig,
    text: TrainingText,
    corpus: Sequence[str] = (),
    banned: frozenset[str] = frozenset(),
) -> tuple[list[str], list[str]]:
    """The training queries and the passage pool, capped by seeded samples (order kept);
    then the ``corpus`` texts join the pool and the pseudo-queries the queries, except any
    whose normalised text is ``banned`` (the evaluation questions)."""

    def sample(items: list[str], cap: int | None, stream: int) -> list[str]:
        if cap is None or len(items) <= cap:
            return list(items)
        rng = np.random.default_rng([config.seed, stream])
        chosen = np.sort(rng.choice(len(items), size=cap, replace=False))
        return [items[i] for i in chosen]

    queries = sample(text.queries, config.max_queries, 1)
    passages = sample(text.passages, config.passage_pool_size, 2)
    if corpus:
        seen = set(passages)
        passages += [p for p in dict.fromkeys(corpus) if p not in seen]
    if not queries or not passages:
        raise ValueError("no training text found: the data folder has no queries or passages")
    if config.pseudo_queries:
        spans = pseudo_queries(passages, config.pseudo_queries, config.seed)
        queries = queries + [q for q in spans if norm_text(q) not in banned]
    return queries, passages


def pseudo_queries(passages: Sequence[str], count: int, seed: int) -> list[str]:
    """``count`` word spans (``PSEUDO_QUERY_WORDS`` long, shorter only when the passage is)
    cut at seeded random places of seeded random ``passages``; deterministic for a seed."""
    rng = np.random.default_rng([seed, 4])
    words = [p.split() for p in passages]
    low, high = PSEUDO_QUERY_WORDS
    out = []
    for row, length, start in zip(
        rng.integers(len(words), size=count),
        rng.integers(low, high + 1, size=count),
        rng.random(count),
        strict=True,
    ):
        tokens = words[int(row)]
        take = min(int(length), len(tokens))
        first = int(start * (len(tokens) - take + 1))
        out.append(" ".join(tokens[first : first + take]))
    return out


def corpus_texts(root: Path, names: Sequence[str], max_chars: int = 1500) -> list[str]:
    """The passage texts of the named datasets' corpora (title and text, as the index has
    them), whitespace-normalised and cut like the training passages."""
    from elasticir.data.corpus import iter_corpus
    from elasticir.data.datasets import get_dataset

    texts = []
    for name in names:
        dataset = get_dataset(name, root=root)
        if dataset.corpus is None:
            raise ValueError(f"corpus_passages: dataset {name!r} has no corpus file under {root}")
        for passage in iter_corpus(dataset.corpus):
            text = " ".join(passage.encoder_text().split())[:max_chars]
            if len(text) > 20:
                texts.append(text)
    return texts
