"""Significance of a difference between two systems' per-query scores: the paired bootstrap."""

from __future__ import annotations

__all__ = ["paired_bootstrap"]

import numpy as np


def paired_bootstrap(
    before: dict[str, float], after: dict[str, float], resamples: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """95% interval of the mean per-query difference ``after - before`` (nDCG@10 points),
    queries resampled with replacement (seeded): how far 43 queries pin a gap down.

    ``before`` and ``after`` map query ids to scores in [0, 1]; the differences are scaled by
    100 (points). Queries are taken in sorted id order and resampled with
    ``numpy.random.default_rng(seed)``, so a given ``seed`` reproduces an interval exactly.
    Raises ``ValueError`` when the two score different queries, or none.
    """
    if set(before) != set(after) or not before:
        raise ValueError("per-query scores of different (or no) queries")
    qids = sorted(before)
    diff = 100 * np.array([after[q] - before[q] for q in qids])
    picks = np.random.default_rng(seed).integers(0, len(diff), (resamples, len(diff)))
    low, high = np.percentile(diff[picks].mean(axis=1), [2.5, 97.5])
    return float(low), float(high)
