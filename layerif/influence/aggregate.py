"""From per-example, per-layer influences IF_l(k) to one score per layer, S_l (SPEC section 1).

Conventions (DataInf's sign: IF > 0 harmful, IF < 0 helpful):
- positive: sum_k IF_l(k) [IF_l(k) > 0]  -- the paper's equation (the authors' code summed the
            non-positive values instead; layerif follows the equation)
- negative: sum_k IF_l(k) [IF_l(k) < 0]
- all:      sum_k IF_l(k)
- top25:    rank training examples by sum_l |IF_l(k)|, keep the top ceil(n/4) (the same examples
            for every layer, ties broken by input order), sum IF_l over them
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

AGGREGATES = ("positive", "negative", "all", "top25")


def top_quarter(influence: np.ndarray) -> np.ndarray:
    """Indices of the ceil(n/4) training examples with the largest sum_l |IF_l(k)|."""
    n = influence.shape[0]
    total = np.abs(influence).sum(axis=1)
    order = np.argsort(-total, kind="stable")
    return np.sort(order[: math.ceil(n / 4)])


def aggregate(influence: np.ndarray, how: str = "positive") -> np.ndarray:
    """(n_train, n_layers) -> (n_layers,) float64."""
    x = np.asarray(influence, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"influence must be (n_train >= 1, n_layers), got shape {x.shape}")
    if how == "positive":
        return np.where(x > 0, x, 0.0).sum(axis=0)
    if how == "negative":
        return np.where(x < 0, x, 0.0).sum(axis=0)
    if how == "all":
        return x.sum(axis=0)
    if how == "top25":
        return x[top_quarter(x)].sum(axis=0)
    raise ValueError(f"unknown aggregate {how!r}; use one of {', '.join(AGGREGATES)}")


def all_aggregates(influence: np.ndarray) -> dict[str, np.ndarray]:
    return {how: aggregate(influence, how) for how in AGGREGATES}


def spearman(a, b) -> float:
    """Spearman rank correlation of two equally long vectors (nan when one is constant)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"need two vectors of the same length >= 2, got {a.shape} and {b.shape}")
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def spearman_per_layer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per layer, the Spearman correlation of two estimators' influences over training examples.

    a, b: (n_train, n_layers) -> (n_layers,)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return np.array([spearman(a[:, j], b[:, j]) for j in range(a.shape[1])])
