"""LayerIF (SPEC section 3): blocks with larger influence magnitude |S_l| are pruned more.

x = min-max(|S|), smoothed by Savitzky-Golay (window 7, order 3; Appendix E) and min-maxed
again, mapped to phi_l = (1 - eps) + 2 eps x_l and scaled so that sum_l P_l s_l = s sum_l P_l
(allocation/sparsity.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...options import option
from ..experts import AllocationError, refuse_flat
from ..profiles import layer_profile
from ..sparsity import mapped_sparsity, minmax, smooth
from .base import SparsityInputs, SparsityMethod, register


@dataclass
class LayerIFArguments:
    epsilon: float = option(0.2, "--epsilon",
                            "ratios span [1-eps, 1+eps] x target (layerif 0.2, alphapruning 0.3)")
    smooth: bool = option(True, "--no-smooth", "skip Savitzky-Golay smoothing (Appendix E)")


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
    x = minmax(np.abs(s))
    if use_smoothing:
        x = smooth(x)
    return mapped_sparsity(x, sparsity, params, epsilon, max_ratio)


@register
class LayerIF(SparsityMethod):
    name = "layerif"
    needs = ("scores",)
    Arguments = LayerIFArguments

    def ratios(self, sparsity: float, inputs: SparsityInputs) -> tuple[np.ndarray, dict]:
        scores = inputs.scores
        ratios = layerif_sparsity(layer_profile(scores, use_abs=True), sparsity, inputs.params,
                                  self.args.epsilon, use_smoothing=self.args.smooth)
        return ratios, {"epsilon": self.args.epsilon, "smooth": self.args.smooth,
                        "scores": scores["_path"], "aggregate": scores.get("aggregate")}
