"""Per-layer sparsity patterns: each layer dense, N:M, or unstructured, the global target kept
as closely as the patterns allow.

N:M sparsity runs on semi-structured kernels (2:4 on NVIDIA Ampere and later) but fixes a
layer's ratio at N/M; a layer-wise allocation (LayerIF, OWL, ...) asks for other ratios. Given
the allocation's ratios r_l, the prunable parameters P_l and the allowed patterns:
1. each layer takes the allowed level nearest its ratio (dense = 0, N:M = N/M; ties to the
   sparser level);
2. while the global sparsity sum P_l s_l / sum P_l misses the target, the layer furthest on the
   wrong side of its own ratio moves one level towards the target, as long as the move brings
   the global sparsity closer;
3. if `unstructured` is allowed, the layer furthest from its ratio absorbs what is left as an
   unstructured ratio, so the target holds exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import LayerIFError
from ..pruning.pruners import parse_structure

UNSTRUCTURED, DENSE = "unstructured", "dense"


def pattern_levels(allowed: Sequence[str]) -> tuple[dict[str, float], bool]:
    """({pattern: its sparsity} sorted by sparsity, whether unstructured is allowed)."""
    levels: dict[str, float] = {}
    for pattern in allowed:
        pattern = pattern.strip()
        if pattern == UNSTRUCTURED:
            continue
        if pattern == DENSE:
            levels[DENSE] = 0.0
            continue
        structure = parse_structure(pattern)
        if structure is None:
            continue
        levels[pattern] = structure[0] / structure[1]
    unstructured = any(p.strip() in (UNSTRUCTURED, "0:0") for p in allowed)
    if not levels:
        raise LayerIFError("--patterns needs at least one of dense or N:M (e.g. dense,2:4,3:4).")
    return dict(sorted(levels.items(), key=lambda kv: kv[1])), unstructured


def assign_patterns(ratios: Sequence[float], params: Sequence[int], target: float,
                    allowed: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(pattern per layer, sparsity per layer) for the allocation `ratios` (module docstring)."""
    levels, unstructured = pattern_levels(allowed)
    names, values = list(levels), np.array(list(levels.values()))
    r = np.asarray(ratios, dtype=np.float64)
    P = np.asarray(params, dtype=np.float64)
    # 1. nearest level (argmin of distance, ties to the sparser level by scanning reversed)
    at = np.array([len(values) - 1 - int(np.argmin(np.abs(values[::-1] - x))) for x in r])
    gap = lambda: target * P.sum() - (P * values[at]).sum()  # noqa: E731  (> 0: prune more)
    # 2. one level at a time, the layer most on the wrong side of its ratio first
    while True:
        deficit = gap()
        step = 1 if deficit > 0 else -1
        movable = [(step * (r[i] - values[at[i]]), i) for i in range(len(r))
                   if 0 <= at[i] + step < len(values)
                   and abs(deficit - P[i] * (values[at[i] + step] - values[at[i]])) < abs(deficit)]
        if not movable or deficit == 0:
            break
        at[max(movable)[1]] += step
    patterns = [names[a] for a in at]
    sparsity = values[at].astype(np.float64)
    # 3. the rest as one unstructured layer
    deficit = gap()
    if unstructured and abs(deficit) > 0:
        for i in np.argsort(-np.abs(r - sparsity), kind="stable"):
            s = sparsity[i] + deficit / P[i]
            if 0 <= s < 1:
                patterns[i], sparsity[i] = UNSTRUCTURED, s
                break
    return patterns, sparsity
