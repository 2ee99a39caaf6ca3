"""Throughput of several scorers measured in interleaved rounds, and its medians.

Machine noise on a shared CPU drifts over minutes: timing every scorer in each round, in a
shuffled order, lets it hit all of them alike, and ratios taken within a round cancel it.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable


def interleaved_rates(
    scorers: dict, work: list, rounds: int, min_seconds: float
) -> dict[str, list[float]]:
    """pairs/s of each scorer in each of ``rounds`` rounds over ``work`` (``(query text,
    passages)`` items): in a round every scorer, in a seeded shuffled order, repeats its passes
    over all of ``work`` until ``min_seconds`` have gone.

    A scorer is anything with ``score(query_text, passages)``; round ``r`` shuffles with
    ``random.Random(r)``, so the orders are the same in every run.
    """
    pairs = sum(len(docs) for _, docs in work)
    rates: dict[str, list[float]] = {label: [] for label in scorers}
    for round_ in range(rounds):
        for label in random.Random(round_).sample(list(scorers), len(scorers)):
            done, start = 0, time.perf_counter()
            while True:
                for text, docs in work:
                    scorers[label].score(text, docs)
                done += pairs
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds:
                    break
            rates[label].append(done / elapsed)
    return rates


def median_rates(
    rates: dict[str, list[float]], baseline: Callable[[str], str], key: str
) -> dict[str, dict[str, float]]:
    """Per scorer: its median pairs/s over rounds and, under ``key``, the median over rounds
    of its rate over ``baseline(label)``'s in the same round.

    ``{label: {"pairs_per_s": ..., key: ...}}``, rounded to 1 and 2 decimals.
    """
    return {
        label: {
            "pairs_per_s": round(statistics.median(r), 1),
            key: round(statistics.median([x / b for b, x in zip(rates[baseline(label)], r)]), 2),
        }
        for label, r in rates.items()
    }
