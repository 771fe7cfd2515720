"""From per-example, per-layer influences IF_l(k) to one score per layer, S_l (SPEC section 1).

Sign (DataInf's, kept in `influence.npy` and in every aggregate): IF_l(k) > 0 means up-weighting
training example k raises the validation loss through layer l (harmful); IF_l(k) < 0 lowers it
(helpful). The aggregates are named by what they sum:

- helpful: sum_k IF_l(k) [IF_l(k) < 0]   (<= 0) the default: the paper's "+ve" setting as its
           authors computed it (their "+ve" summed the non-positive DataInf values, and the paper
           describes excluding the examples that increase the validation loss)
- harmful: sum_k IF_l(k) [IF_l(k) > 0]   (>= 0) the paper's equation read with DataInf's sign; on
           a pretrained model scored on in-distribution data it is often all zeros
- net:     sum_k IF_l(k)
- top25:   rank training examples by sum_l |IF_l(k)|, keep the top ceil(n/4) (the same examples
           for every layer, ties broken by input order), sum IF_l over them

The allocators take S as it is (SPEC sections 2 and 3): with `helpful`, the layer with the most
loss-reducing influence mass (the most negative S) gets the most experts and the most pruning.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import LayerIFError

AGGREGATES = ("helpful", "harmful", "net", "top25")
DEFAULT_AGGREGATE = "helpful"
# Names before layerif 0.2 -> what they computed, under the new names.
RENAMED = {"positive": "harmful", "negative": "helpful", "all": "net"}
SIGN_CONVENTION = ("DataInf: IF > 0 means up-weighting the training example raises the "
                   "validation loss (harmful), IF < 0 lowers it (helpful)")
MEANINGS = {
    "helpful": "sum of the loss-reducing influences (IF < 0), <= 0",
    "harmful": "sum of the loss-raising influences (IF > 0), >= 0",
    "net": "sum of all influences",
    "top25": "sum over the quarter of training examples with the largest total |IF|",
}


class AggregateError(LayerIFError, ValueError):
    """An unknown or renamed aggregate name."""


def check_aggregate(name: str) -> str:
    """`name` if it is an aggregate; otherwise an error naming the replacement or the choices."""
    if name in AGGREGATES:
        return name
    if name in RENAMED:
        raise AggregateError(
            f"aggregate {name!r} was renamed: use {RENAMED[name]!r} "
            f"({MEANINGS[RENAMED[name]]}); the default is now {DEFAULT_AGGREGATE!r}.")
    raise AggregateError(f"unknown aggregate {name!r}; use one of {', '.join(AGGREGATES)}.")


def describe(name: str) -> str:
    """One line for tables and plots: the aggregate, what it sums, and the sign."""
    return f"{name}: {MEANINGS[name]} (DataInf sign: IF > 0 harmful)"


def top_quarter(influence: np.ndarray) -> np.ndarray:
    """Indices of the ceil(n/4) training examples with the largest sum_l |IF_l(k)|."""
    n = influence.shape[0]
    total = np.abs(influence).sum(axis=1)
    order = np.argsort(-total, kind="stable")
    return np.sort(order[: math.ceil(n / 4)])


def aggregate(influence: np.ndarray, how: str = DEFAULT_AGGREGATE) -> np.ndarray:
    """(n_train, n_layers) -> (n_layers,) float64."""
    how = check_aggregate(how)
    x = np.asarray(influence, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"influence must be (n_train >= 1, n_layers), got shape {x.shape}")
    if how == "helpful":
        return np.where(x < 0, x, 0.0).sum(axis=0)
    if how == "harmful":
        return np.where(x > 0, x, 0.0).sum(axis=0)
    if how == "net":
        return x.sum(axis=0)
    return x[top_quarter(x)].sum(axis=0)  # top25


def all_aggregates(influence: np.ndarray) -> dict[str, np.ndarray]:
    return {how: aggregate(influence, how) for how in AGGREGATES}


def spearman(a, b) -> float:
    """Spearman rank correlation of two equally long vectors (nan when one is constant)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"need two vectors of the same length >= 2, got {a.shape} and {b.shape}")
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    from scipy import stats  # here, not at the top: the CLI's parsers import this module

    return float(stats.spearmanr(a, b).statistic)


def spearman_per_layer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per layer, the Spearman correlation of two estimators' influences over training examples.

    a, b: (n_train, n_layers) -> (n_layers,)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return np.array([spearman(a[:, j], b[:, j]) for j in range(a.shape[1])])
