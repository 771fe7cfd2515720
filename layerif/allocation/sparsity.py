"""The arithmetic that sparsity methods share (SPEC section 3); the methods themselves are in
sparsity_methods/, one file each.

A method's per-layer values x are mapped to phi_l = (1 - eps) + 2 eps minmax(x)_l and
s_l = phi_l * s * sum P / sum(P * phi)  (P_l = prunable parameters of layer l)
so that sum_l P_l s_l = s sum_l P_l exactly. Ratios are kept in [0, max_ratio] by clipping and
re-distributing the excess over the unclipped layers, so the global target still holds (the
LayerIF reference clipped after scaling and broke it). Higher value -> pruned more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .experts import AllocationError


def minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def smooth(x: np.ndarray, window: int = 7, polyorder: int = 3) -> np.ndarray:
    """Savitzky-Golay with the window shrunk to the largest odd number <= len(x)."""
    from scipy.signal import savgol_filter  # here: scipy costs the CLI's parsers ~1 s

    w = min(window, len(x) if len(x) % 2 else len(x) - 1)
    p = min(polyorder, w - 1)
    if w < 3 or p < 1:
        return x.copy()
    return savgol_filter(x, w, p, mode="interp")


def check_target(sparsity: float, max_ratio: float) -> None:
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
    check_target(sparsity, max_ratio)
    phi = np.asarray(phi, dtype=np.float64)
    P = np.asarray(params, dtype=np.float64)
    if phi.shape != P.shape or (phi < 0).any() or (P <= 0).any():
        raise AllocationError("phi must be >= 0 and params > 0, one of each per layer.")
    budget = sparsity * P.sum()
    ratios = np.zeros_like(phi)
    free = np.ones(len(phi), dtype=bool)
    while free.any():  # none free: every layer at the cap, which is then the target
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
    prior: Sequence[float] | None = None,
) -> np.ndarray:
    """Min-max `values`, map linearly to [1 - eps, 1 + eps], scale to the global target (the
    mapping AlphaPruning introduced; higher value -> pruned more). A negative eps reverses the
    map (higher value -> pruned less: the map of 1 - minmax(values) with |eps|); eps 0 is
    uniform. prior: per-layer ratios the map multiplies (a depth progression, say) before the
    scaling; None is uniform."""
    if not (math.isfinite(epsilon) and -1 <= epsilon <= 1):
        raise AllocationError(f"epsilon must be in [-1, 1], got {epsilon}.")
    x = np.asarray(values, dtype=np.float64)
    if not np.isfinite(x).all():
        raise AllocationError("scores must be finite.")
    phi = (1 - epsilon) + 2 * epsilon * minmax(x)
    if prior is not None:
        phi = phi * np.asarray(prior, dtype=np.float64)
    return scale_to_target(phi, sparsity, params, max_ratio)


def relative_importance_sparsity(unimportance: Sequence[float], sparsity: float,
                                 params: Sequence[float], spread: float, what: str
                                 ) -> np.ndarray:
    """The mapping DLP and LSA share: relative importance I_l = 1 - U_l / sum U, min-max scaled
    to D_l in [0, 2 spread], and s_l = s - (D_l - mean_P(D)) (mean_P parameter-weighted, so
    sum_l P_l s_l = s sum_l P_l exactly; the references subtract the plain mean, the same when
    blocks are equally large). Higher unimportance U -> pruned more. `what` names the method and
    its spread flag in errors, e.g. "DLP (--dlp-alpha)"."""
    check_target(sparsity, 0.99)
    U = np.asarray(unimportance, dtype=np.float64)
    P = np.asarray(params, dtype=np.float64)
    if U.shape != P.shape or not np.isfinite(U).all() or (U <= 0).any():
        raise AllocationError(f"{what.split()[0]} needs one finite, positive unimportance per "
                              "block.")
    D = minmax(1 - U / U.sum()) * 2 * spread
    ratios = sparsity - (D - (P * D).sum() / P.sum())
    if (ratios < 0).any() or (ratios >= 1).any():
        raise AllocationError(f"{what.split()[0]} ratios leave [0, 1) for sparsity {sparsity} "
                              f"and spread {spread}; lower {what.split()[-1].strip('()')}.")
    return ratios
