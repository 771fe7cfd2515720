"""PL_Alpha_Hill: the power-law exponent of a weight matrix's eigenvalue spectrum (SPEC
section 4), shared by AlphaPruning and AlphaLoRA.

lambda = svdvals(W)^2 sorted ascending. xmin candidates come from the peak of the histogram of
log10(lambda) (100 bins): every eigenvalue in [0.95 * peak, 1.5 * peak] is tried, where peak =
10^(left edge of the fullest bin). For each candidate lambda_i the Hill estimator
    alpha = 1 + k / (sum_{j >= i} ln lambda_j - k ln lambda_i),   k = N - i
and the KS distance of the fitted power law to the tail are computed; the alpha with the
smallest distance wins. (The reference compared a log10 value against eigenvalues for the lower
bound; here both bounds are in eigenvalue units.)
"""

from __future__ import annotations

import numpy as np
import torch


def pl_alpha_hill(weight: torch.Tensor | np.ndarray, bins: int = 100) -> float:
    """PL_Alpha_Hill of one matrix (any shape (m, n); computed in float64)."""
    W = torch.as_tensor(weight).detach().to(torch.float64).cpu()
    eigs = torch.linalg.svdvals(W).square().sort().values.numpy()
    eigs = eigs[eigs > 1e-12 * eigs[-1]]  # exact zeros (rank deficiency) carry no tail
    N = len(eigs)
    if N < 3:
        raise ValueError(f"need at least 3 non-zero singular values, got {N}")
    log10 = np.log10(eigs)
    counts, edges = np.histogram(log10, bins=bins)
    peak = 10 ** edges[np.argmax(counts)]
    lo, hi = 0.95 * peak, 1.5 * peak
    logs = np.log(eigs)
    # suffix sums of ln lambda: tail_sum[i] = sum_{j >= i} ln lambda_j
    tail_sum = np.cumsum(logs[::-1])[::-1]
    best_alpha, best_ks = None, np.inf
    for i in range(N - 1):
        xmin = eigs[i]
        if xmin < lo:
            continue
        if xmin > hi:
            break
        k = N - i
        denom = tail_sum[i] - k * logs[i]
        if denom <= 0:
            continue
        alpha = 1 + k / denom
        if alpha <= 1:
            continue
        tail = eigs[i:]
        ks = np.max(np.abs(1 - (tail / xmin) ** (1 - alpha) - np.arange(k) / k))
        if ks < best_ks:
            best_alpha, best_ks = alpha, ks
    if best_alpha is None:  # no candidate near the peak: fit the whole spectrum
        best_alpha = 1 + N / (tail_sum[0] - N * logs[0])
    return float(best_alpha)


def block_alphas(blocks) -> np.ndarray:
    """Mean PL_Alpha_Hill over each block's matrices (models.discover_blocks output)."""
    return np.array([np.mean([pl_alpha_hill(m.weight) for m in b.matrices]) for b in blocks])
