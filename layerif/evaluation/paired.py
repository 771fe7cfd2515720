"""Intervals and paired comparisons of per-item results (1/0 correctness, per-window NLL).

Two methods evaluated on the same items are compared item by item: resampling items with
replacement (the same draw for both) gives the bootstrap distribution of the mean difference;
its 2.5 and 97.5 percentiles are the 95% interval and the two-sided p-value is twice the smaller
tail mass at zero (capped at 1), so identical methods give a zero interval and p = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float  # 2.5th percentile of the bootstrap means
    high: float  # 97.5th


@dataclass(frozen=True)
class PairedDifference:
    difference: float  # mean(a) - mean(b)
    low: float
    high: float
    p_value: float  # two-sided, H0: mean difference 0


def _draws(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_interval(values: Sequence[float], resamples: int = RESAMPLES,
                       seed: int = 0) -> Interval:
    """The mean of `values` with a percentile-bootstrap 95% interval over items."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no items to bootstrap")
    means = v[_draws(v.size, resamples, seed)].mean(axis=1)
    return Interval(float(v.mean()), *map(float, np.percentile(means, [2.5, 97.5])))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES,
                     seed: int = 0) -> PairedDifference:
    """mean(a) - mean(b) over the same items, with its bootstrap 95% interval and p-value."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no items to compare")
    means = d[_draws(d.size, resamples, seed)].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    p = 2 * min((means <= 0).mean(), (means >= 0).mean())
    return PairedDifference(float(d.mean()), float(low), float(high), float(min(1.0, p)))


def mcnemar(a: Sequence[int], b: Sequence[int]) -> float:
    """Exact (binomial) two-sided McNemar p-value of two 1/0 correctness vectors on the same
    items: of the n items where exactly one is right, how unlikely a split this uneven is."""
    from scipy.stats import binomtest

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
