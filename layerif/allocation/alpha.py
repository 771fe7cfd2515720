"""PL_Alpha_Hill: the power-law exponent of a weight matrix's eigenvalue spectrum (SPEC
section 4), shared by AlphaPruning (Lu et al., NeurIPS 2024) and AlphaLoRA.

lambda = svdvals(W)^2 sorted ascending (exact zeros dropped). Every eigenvalue lambda_i up to
1.5 x the histogram peak is a candidate xmin, where peak = 10^(left edge of the fullest of 100
bins of log10(lambda)), as in AlphaPruning's `net_esd_estimator(fix_fingers="xmin_peak")`
(whose lower bound, a log10 value compared with eigenvalues, excludes nothing). For each
candidate the Hill estimator
    alpha_i = 1 + k / (sum_{j >= i} ln lambda_j - k ln lambda_i),   k = N - i
and the KS distance of the fitted power law to the tail are computed; the alpha with the
smallest distance wins. A candidate whose tail has no spread (all of it equal to lambda_i, so
the denominator is 0) has no estimate and is skipped; a matrix with no valid candidate is an
error naming it, never a silent fallback (the reference returned alpha 0 there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

# Imported inside the functions that use them: the CLI's parsers import this module
# and must not wait for torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch

from .experts import AllocationError


def pl_alpha_hill(weight: torch.Tensor | np.ndarray, bins: int = 100, name: str = "matrix"
                  ) -> float:
    """PL_Alpha_Hill of one matrix (any shape (m, n); computed in float64)."""
    import torch

    W = torch.as_tensor(weight).detach().to(torch.float64).cpu()
    eigs = torch.linalg.svdvals(W).square().sort().values.numpy()
    eigs = eigs[eigs > 1e-12 * eigs[-1]]  # exact zeros (rank deficiency) carry no tail
    N = len(eigs)
    if N < 3:
        raise AllocationError(f"{name}: PL_Alpha_Hill needs at least 3 non-zero singular "
                              f"values, got {N}.")
    counts, edges = np.histogram(np.log10(eigs), bins=bins)
    upper = 1.5 * 10 ** edges[np.argmax(counts)]
    logs = np.log(eigs)
    tail_sum = np.cumsum(logs[::-1])[::-1]  # tail_sum[i] = sum_{j >= i} ln lambda_j
    best_alpha, best_ks = None, np.inf
    for i in range(N - 1):
        if eigs[i] > upper:
            break
        k = N - i
        denom = tail_sum[i] - k * logs[i]
        if denom <= 0:
            continue
        alpha = 1 + k / denom
        ks = np.max(np.abs(1 - (eigs[i:] / eigs[i]) ** (1 - alpha) - np.arange(k) / k))
        if ks < best_ks:
            best_alpha, best_ks = alpha, ks
    if best_alpha is None:
        raise AllocationError(
            f"{name}: no xmin up to 1.5 x the spectrum's histogram peak gives a power law "
            "(its eigenvalues there are all equal); PL_Alpha_Hill is undefined for this matrix.")
    return float(best_alpha)


def block_alphas(blocks) -> np.ndarray:
    """Mean PL_Alpha_Hill over each block's matrices (models.discover_blocks output)."""
    return np.array([np.mean([pl_alpha_hill(m.weight, name=m.name) for m in b.matrices])
                     for b in blocks])
