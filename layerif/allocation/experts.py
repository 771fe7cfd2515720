"""Per-layer expert counts for a LoRA-MoE (SPEC section 2).

LayerIF (paper 3.3): inv_l = max(S) - S_l, w_l = inv_l ** beta, f_l = w_l / sum(w) * (T - L),
alloc_l = floor(f_l) + 1, the T - sum(alloc) leftover experts to the largest remainders. Every
layer gets >= 1, the total is exactly T, and the layer with the highest score gets exactly 1.
AlphaLoRA uses w_l = alpha_l ** beta with the same rounding; MoLA uses fixed patterns over equal
groups of layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import LayerIFError

MOLA_PATTERNS = {
    "2468": (2, 4, 6, 8),
    "5555": (5, 5, 5, 5),
    "8642": (8, 6, 4, 2),
    "1234": (1, 2, 3, 4),
    "46810": (4, 6, 8, 10),
}


class AllocationError(LayerIFError, ValueError):
    """An allocation cannot be made (impossible budget, bad exponent, bad pattern)."""


def _check_budget(n_layers: int, total: int, minimum: int = 1) -> None:
    if n_layers < 1:
        raise AllocationError("need at least one layer.")
    if int(total) != total or total < n_layers * minimum:
        need = "the" if minimum == 1 else f"{minimum} for each of the"
        raise AllocationError(
            f"total T={total} is fewer than {need} {n_layers} layers; every layer needs at "
            f"least {minimum}, so use T >= {n_layers * minimum}."
        )


def largest_remainder(
    weights: Sequence[float], total: int, priority: Sequence[float] | None = None,
    minimum: int = 1,
) -> np.ndarray:
    """`minimum` per layer plus T - L * minimum more split in proportion to `weights`: floor +
    minimum, the leftover going to the largest fractional parts. Equal remainders go first to
    the larger `priority` (default: the larger weight), then to earlier layers."""
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    _check_budget(n, total, minimum)
    if not np.isfinite(w).all() or (w < 0).any():
        raise AllocationError(f"weights must be finite and >= 0, got {w.tolist()}")
    spare = total - n * minimum
    f = w / w.sum() * spare if w.sum() > 0 else np.full(n, spare / n)
    alloc = np.floor(f).astype(np.int64) + minimum
    leftover = int(total - alloc.sum())
    priority = w if priority is None else np.asarray(priority, dtype=np.float64)
    order = np.lexsort((np.arange(n), -priority, -(f - np.floor(f))))  # last key is primary
    alloc[order[:leftover]] += 1
    return alloc


def refuse_flat(profile: np.ndarray) -> None:
    """A score profile equal for every layer carries no allocation: refuse it rather than return
    a uniform allocation that looks like LayerIF's."""
    if len(profile) > 1 and np.ptp(profile) == 0:
        raise AllocationError(
            f"the scores are {profile[0]:g} for every layer, so the allocation would be uniform; "
            "use another aggregate, or the uniform method if that is what you want.")


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise AllocationError(f"beta must be > 0, got {beta}.")


def layerif_weights(scores: Sequence[float], beta: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(weights, tie priority) of LayerIF's allocation: w_l = (max(S) - S_l) ** beta, so a lower
    score (better trained under DataInf's sign) gets more; ties favour the lower score."""
    _check_beta(beta)
    s = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(s).all():
        raise AllocationError("scores must be finite.")
    refuse_flat(s)
    inv = s.max() - s
    # w / sum(w) is scale-invariant: dividing by max(inv) first keeps tiny spreads from
    # underflowing to all-zero weights under the power.
    return ((inv / inv.max()) ** beta if inv.max() > 0 else inv), -s


def alphalora_weights(alphas: Sequence[float], beta: float = 2.0) -> np.ndarray:
    """AlphaLoRA's weights alpha_l ** beta: a higher PL_Alpha_Hill (a lighter-tailed spectrum, by
    Heavy-Tailed Self-Regularization a less well-trained layer) gets more."""
    _check_beta(beta)
    a = np.asarray(alphas, dtype=np.float64)
    if not (np.isfinite(a).all() and (a > 0).all()):
        raise AllocationError("alphas must be finite and > 0.")
    return (a / a.max()) ** beta  # scaled first: no underflow


def layerif_experts(scores: Sequence[float], total: int, beta: float = 2.0) -> np.ndarray:
    """LayerIF's allocation: lower score (better trained under DataInf's sign) -> more experts."""
    weights, priority = layerif_weights(scores, beta)
    return largest_remainder(weights, total, priority=priority)


def alphalora_experts(alphas: Sequence[float], total: int, beta: float = 2.0) -> np.ndarray:
    """AlphaLoRA: experts ~ alpha_l ** beta."""
    return largest_remainder(alphalora_weights(alphas, beta), total)


def uniform_experts(n_layers: int, total: int) -> np.ndarray:
    return largest_remainder(np.ones(n_layers), total)


def mola_experts(n_layers: int, pattern: str | Sequence[int]) -> np.ndarray:
    """MoLA: pattern[g] experts for every layer of group g, the layers split into len(pattern)
    consecutive groups as equal as possible (earlier groups take the extra layers)."""
    counts = MOLA_PATTERNS.get(pattern) if isinstance(pattern, str) else None
    if counts is None:
        try:
            counts = tuple(int(x) for x in (pattern.split(",") if isinstance(pattern, str)
                                             else pattern))
        except ValueError:
            raise AllocationError(
                f"pattern {pattern!r}: use one of {', '.join(MOLA_PATTERNS)} or a list like "
                "2,4,6,8."
            ) from None
    if not counts or any(c < 1 for c in counts):
        raise AllocationError(f"pattern {pattern!r}: every group needs >= 1 expert.")
    if len(counts) > n_layers:
        raise AllocationError(
            f"pattern {pattern!r} has {len(counts)} groups but the model has {n_layers} layers; "
            "a pattern cannot have more groups than layers."
        )
    groups = np.array_split(np.arange(n_layers), len(counts))
    alloc = np.zeros(n_layers, dtype=np.int64)
    for count, layers in zip(counts, groups, strict=True):
        alloc[layers] = count
    return alloc
