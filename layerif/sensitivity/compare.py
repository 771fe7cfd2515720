"""Every layer score held against the measured sensitivity.

A layer score is what an allocator reads per block: LayerIF's |S_l| (per aggregate and scoring
slice), PL_Alpha_Hill (alphapruning), OWL's outlier ratio, DLP's unimportance, LSA's
reconstruction error, plain depth (ATP's progression); and each allocation's own ratios, which
say where a method prunes more in whatever direction it chose (a tuned LayerIF's sign, a prior).
Each method has a direction: every one
of them prunes more where its score is higher, except OWL (more outliers, pruned less). The
truth is D_l(s) at the target level: a score agrees with it when its method prunes more where
the measured damage is smaller. So

    agreement = -Spearman(score, D(s))   for scores that prune more where higher,
                +Spearman(score, D(s))   for OWL,

+1 when the method's ranking is the truth's, -1 when it is reversed. Its bootstrap interval
resamples the sensitivity's held windows and, for LayerIF, the training examples of the
influence matrix behind the score, together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..influence.aggregate import spearman

# method -> True where a higher score means "pruned more" (see the module docstring)
# ("allocation": an allocation's own ratios, whichever method and direction made them)
PRUNES_MORE_WHERE_HIGHER = {"layerif": True, "alphapruning": True, "dlp": True, "lsa": True,
                            "depth": True, "owl": False, "allocation": True}


def delta_at(levels, window_delta: np.ndarray, s: float) -> np.ndarray:
    """(L, W): each window's D_l(s), linear between the measured levels and through (0, 0);
    past the last level the last one's values (the report's targets are measured levels)."""
    xs = np.concatenate([[0.0], np.asarray(levels, dtype=np.float64)])
    L, _, W = window_delta.shape
    ys = np.concatenate([np.zeros((L, 1, W)), window_delta], axis=1)  # (L, K+1, W)
    s = min(max(s, 0.0), xs[-1])
    k = int(np.searchsorted(xs, s, side="right") - 1)
    if k >= len(xs) - 1:
        return ys[:, -1, :]
    t = (s - xs[k]) / (xs[k + 1] - xs[k])
    return (1 - t) * ys[:, k, :] + t * ys[:, k + 1, :]


@dataclass
class Agreement:
    score: str  # what was compared, e.g. "layerif helpful (slice 0)"
    method: str  # whose direction applies
    agreement: float
    low: float
    high: float


def agreement(score: np.ndarray, truth: np.ndarray, method: str) -> float:
    """The oriented Spearman of one profile against one sensitivity row (both (L,))."""
    rho = spearman(score, truth)
    return -rho if PRUNES_MORE_WHERE_HIGHER[method] else rho


def agreement_with_interval(
    name: str,
    method: str,
    profile: Callable[[np.ndarray | None], np.ndarray],
    window_delta_at: np.ndarray,
    n_examples: int | None = None,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Agreement:
    """profile(rows): the score per layer from the training examples `rows` (None: all of
    them; a fixed score ignores it). window_delta_at: (L, W) each held window's D_l(s). The
    interval resamples windows (and, with n_examples, training examples) with replacement."""
    rng = np.random.default_rng(seed)
    truth = window_delta_at.mean(axis=1)
    point = agreement(profile(None), truth, method)
    W = window_delta_at.shape[1]
    draws = []
    for _ in range(n):
        windows = rng.integers(0, W, W)
        rows = rng.integers(0, n_examples, n_examples) if n_examples else None
        value = agreement(profile(rows), window_delta_at[:, windows].mean(axis=1), method)
        if np.isfinite(value):
            draws.append(value)
    tail = (1 - level) / 2 * 100
    low, high = (np.percentile(draws, [tail, 100 - tail]) if draws else (np.nan, np.nan))
    return Agreement(name, method, point, float(low), float(high))
