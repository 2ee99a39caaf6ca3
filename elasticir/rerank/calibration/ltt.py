"""Learn-then-Test statistics: p-values of a risk bound, and fixed-sequence testing.

For each threshold, the empirical risk (mean loss over the calibration queries, each loss in
[0, 1]) gives a p-value for ``H0: risk > delta`` (Hoeffding-Bentkus by default, or
Hoeffding); fixed-sequence testing at level ``epsilon`` walks the thresholds in order and
keeps the most aggressive one before the first p-value above ``epsilon``. Then, with
probability at least ``1 - epsilon`` over the draw of calibration queries, the chosen
threshold's risk on new queries from the same distribution is at most ``delta``. When not
even the first is rejected, nothing is chosen.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["BOUNDS", "hoeffding_bentkus_pvalue", "hoeffding_pvalue", "learn_then_test"]

BOUNDS = ("hb", "hoeffding")


def hoeffding_pvalue(risk: float, n: int, delta: float) -> float:
    """p-value of ``H0: true risk > delta`` from the mean of ``n`` losses in [0, 1]
    (Hoeffding: ``exp(-2 n (delta - risk)_+^2)``)."""
    gap = max(0.0, delta - risk)
    return float(min(1.0, math.exp(-2.0 * n * gap * gap)))


def _binom_cdf(x: int, n: int, p: float) -> float:
    """``P(Binomial(n, p) <= x)``, summed in log space."""
    if x < 0:
        return 0.0
    if x >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    ks = np.arange(0, x + 1, dtype=np.float64)
    log_pmf = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(k + 1) + math.lgamma(n - k + 1) for k in ks])
        + ks * math.log(p)
        + (n - ks) * math.log1p(-p)
    )
    top = float(log_pmf.max())
    return float(min(1.0, math.exp(top) * np.exp(log_pmf - top).sum()))


def hoeffding_bentkus_pvalue(risk: float, n: int, delta: float) -> float:
    """The Hoeffding-Bentkus p-value of Learn-then-Test (Angelopoulos et al. 2021, eq. 7) for
    ``H0: true risk > delta`` from the mean ``risk`` of ``n`` losses in [0, 1]::

        min( exp(-n h1(min(risk, delta), delta)),  e * P(Binomial(n, delta) <= ceil(n risk)) )

    with ``h1(a, b) = a log(a / b) + (1 - a) log((1 - a) / (1 - b))``.
    """
    if n < 1:
        return 1.0
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta lies in (0, 1), got {delta!r}")
    a = min(max(risk, 0.0), delta)

    def xlogy(x: float, y: float) -> float:
        return 0.0 if x == 0.0 else x * math.log(x / y)

    h1 = xlogy(a, delta) + xlogy(1.0 - a, 1.0 - delta)
    hoeffding = math.exp(-n * h1)
    bentkus = math.e * _binom_cdf(math.ceil(n * risk - 1e-9), n, delta)
    return float(min(1.0, hoeffding, bentkus))


def learn_then_test(
    losses: np.ndarray, delta: float, epsilon: float, bound: str = "hb"
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Fixed-sequence Learn-then-Test over ``losses`` ``(queries, thresholds)`` in [0, 1],
    columns ordered from most conservative to most aggressive.

    Returns ``(risks, pvalues, chosen)``: each column's mean loss, its p-value for
    ``H0: risk > delta``, and the index of the last column before the first p-value above
    ``epsilon`` (None when the first is not rejected).
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 2 or losses.shape[0] < 1:
        raise ValueError("losses is a (queries, thresholds) array with at least one query")
    if np.any(losses < 0) or np.any(losses > 1) or np.any(np.isnan(losses)):
        raise ValueError("losses must lie in [0, 1]")
    if not 0.0 < delta < 1.0 or not 0.0 < epsilon < 1.0:
        raise ValueError(f"delta and epsilon lie in (0, 1), got {delta!r} and {epsilon!r}")
    if bound not in BOUNDS:
        raise ValueError(f"bound is one of {BOUNDS}, got {bound!r}")
    n = losses.shape[0]
    risks = losses.mean(axis=0)
    pvalue = hoeffding_bentkus_pvalue if bound == "hb" else hoeffding_pvalue
    pvalues = np.array([pvalue(float(r), n, delta) for r in risks])
    chosen = None
    for j, p in enumerate(pvalues):
        if p > epsilon:
            break
        chosen = j
    return risks, pvalues, chosen
