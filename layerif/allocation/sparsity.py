"""Per-layer sparsity ratios for pruning (SPEC section 3).

LayerIF: x = |S|, min-max, Savitzky-Golay (window 7, order 3, mode "interp"; the window shrinks
to an odd number <= L), min-max again, phi_l = (1 - eps) + 2 eps x_l, and
s_l = phi_l * s * sum P / sum(P * phi)  (P_l = prunable parameters of layer l)
so that sum_l P_l s_l = s sum_l P_l exactly. Ratios are kept in [0, max_ratio] by clipping and
re-distributing the excess over the unclipped layers, so the global target still holds (the
reference clipped after scaling and broke it). Higher |score| -> pruned more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.signal import savgol_filter

from .experts import AllocationError, refuse_flat


def _minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def smooth(x: np.ndarray, window: int = 7, polyorder: int = 3) -> np.ndarray:
    """Savitzky-Golay with the window shrunk to the largest odd number <= len(x)."""
    w = min(window, len(x) if len(x) % 2 else len(x) - 1)
    p = min(polyorder, w - 1)
    if w < 3 or p < 1:
        return x.copy()
    return savgol_filter(x, w, p, mode="interp")


def _check_target(sparsity: float, max_ratio: float) -> None:
    if not 0 <= sparsity < 1:
        raise AllocationError(f"sparsity must be in [0, 1), got {sparsity}.")
    if not max_ratio < 1:
        raise AllocationError(f"the per-layer cap must be below 1, got {max_ratio}.")
    if sparsity > max_ratio:
        raise AllocationError(
            f"--sparsity {sparsity} is above the per-layer cap {max_ratio} (no layer is pruned "
            f"to more than {max_ratio:.0%}, so the global target cannot be met); use --sparsity "
            f"<= {max_ratio}."
        )


def scale_to_target(
    phi: Sequence[float], sparsity: float, params: Sequence[float], max_ratio: float = 0.99
) -> np.ndarray:
    """Ratios proportional to phi with parameter-weighted mean exactly `sparsity`, each in
    [0, max_ratio]; layers that would exceed max_ratio are clipped and the rest rescaled."""
    _check_target(sparsity, max_ratio)
    phi = np.asarray(phi, dtype=np.float64)
    P = np.asarray(params, dtype=np.float64)
    if phi.shape != P.shape or (phi < 0).any() or (P <= 0).any():
        raise AllocationError("phi must be >= 0 and params > 0, one of each per layer.")
    budget = sparsity * P.sum()
    ratios = np.zeros_like(phi)
    free = np.ones(len(phi), dtype=bool)
    while True:
        remaining = budget - (ratios[~free] * P[~free]).sum()
        weight = (P[free] * phi[free]).sum()
        if weight <= 0:  # only zero-phi layers left: spread what remains evenly
            ratios[free] = remaining / P[free].sum()
            break
        ratios[free] = phi[free] * remaining / weight
        over = free & (ratios > max_ratio)
        if not over.any():
            break
        ratios[over] = max_ratio
        free &= ~over
    return ratios


def mapped_sparsity(
    values: Sequence[float],
    sparsity: float,
    params: Sequence[float],
    epsilon: float,
    max_ratio: float = 0.99,
) -> np.ndarray:
    """Min-max `values`, map linearly to [1 - eps, 1 + eps], scale to the global target (the
    mapping AlphaPruning introduced; higher value -> pruned more)."""
    if not 0 <= epsilon <= 1:
        raise AllocationError(f"epsilon must be in [0, 1], got {epsilon}.")
    x = np.asarray(values, dtype=np.float64)
    if not np.isfinite(x).all():
        raise AllocationError("scores must be finite.")
    phi = (1 - epsilon) + 2 * epsilon * _minmax(x)
    return scale_to_target(phi, sparsity, params, max_ratio)


def layerif_sparsity(
    scores: Sequence[float],
    sparsity: float,
    params: Sequence[float],
    epsilon: float = 0.2,
    use_smoothing: bool = True,
    max_ratio: float = 0.99,
) -> np.ndarray:
    """LayerIF's per-layer sparsity ratios from layer scores (|S|, min-max, Savitzky-Golay)."""
    s = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(s).all():
        raise AllocationError("scores must be finite.")
    refuse_flat(np.abs(s))
    x = _minmax(np.abs(s))
    if use_smoothing:
        x = smooth(x)
    return mapped_sparsity(x, sparsity, params, epsilon, max_ratio)


def alphapruning_sparsity(
    alphas: Sequence[float], sparsity: float, params: Sequence[float], epsilon: float = 0.3,
    max_ratio: float = 0.99,
) -> np.ndarray:
    """AlphaPruning: block-mean PL_Alpha_Hill, higher alpha (less well trained) pruned more."""
    return mapped_sparsity(alphas, sparsity, params, epsilon, max_ratio)


def owl_sparsity(
    outlier_ratios: Sequence[float], sparsity: float, lam: float = 0.08
) -> np.ndarray:
    """OWL: outlier ratios D_l min-max normalised to [0, 2 lam]; density_l = D_l - mean(D) +
    (1 - s); s_l = 1 - density_l. More outliers -> pruned less. (The mean ratio is exactly s;
    the parameter-weighted mean equals it when blocks are equally large, as in these models.)"""
    _check_target(sparsity, 0.99)
    if not 0 <= lam <= 0.5:
        raise AllocationError(f"OWL's lambda must be in [0, 0.5], got {lam}.")
    D = _minmax(np.asarray(outlier_ratios, dtype=np.float64)) * 2 * lam
    ratios = 1 - (D - D.mean() + (1 - sparsity))
    if (ratios < 0).any() or (ratios >= 1).any():
        raise AllocationError(
            f"OWL ratios leave [0, 1) for sparsity {sparsity} and lambda {lam}; lower lambda."
        )
    return ratios


def uniform_sparsity(n_layers: int, sparsity: float) -> np.ndarray:
    _check_target(sparsity, max(sparsity, 0.99))
    return np.full(n_layers, float(sparsity))
