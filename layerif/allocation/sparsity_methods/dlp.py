"""DLP, Dynamic Layerwise Pruning (Chen et al., ICML 2025, arXiv 2505.23807).

A block's unimportance U_l is a statistic of its Wanda scores |W_ij| * ||X_j||_2 on calibration
data (all its matrices together; the paper uses the median, `--dlp-statistic mean` takes the
mean). Its relative importance I_l = 1 - U_l / sum U, min-max scaled to D_l in [0, 2 alpha],
sets the keep ratio (1 - s) + D_l - mean(D): more important blocks keep more, so
    s_l = s - (D_l - mean_P(D)),
with mean_P the parameter-weighted mean, so that sum_l P_l s_l = s sum_l P_l exactly (the
reference subtracts the plain mean, the same when blocks are equally large). alpha defaults to
the paper's settings, 0.04 at 50% and 0.15 at 70% sparsity, linear in between and held outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...options import option
from ..experts import AllocationError
from ..sparsity import relative_importance_sparsity
from .base import SparsityInputs, SparsityMethod, register
from .wanda_scores import block_wanda_statistic

STATISTICS = {"median": lambda s: s.median(), "mean": lambda s: s.mean()}


@dataclass
class DLPArguments:
    alpha: float | None = option(None, "--dlp-alpha", "DLP: keep ratios spread over "
                                 "[0, 2 alpha] (default 0.04 at 50%%, 0.15 at 70%% sparsity, "
                                 "linear in between)")
    statistic: str = option("median", "--dlp-statistic", "DLP: a block's unimportance, the "
                            "median (the paper) or mean of its Wanda scores",
                            choices=("median", "mean"))

    def __post_init__(self) -> None:
        if self.alpha is not None and not 0 <= self.alpha <= 0.5:
            raise AllocationError(f"DLP's alpha must be in [0, 0.5], got {self.alpha}.")
        if self.statistic not in STATISTICS:
            raise AllocationError(f"DLP's statistic must be one of {', '.join(STATISTICS)}, "
                                  f"got {self.statistic!r}.")


def default_alpha(sparsity: float) -> float:
    """The paper's alpha: 0.04 at 50%, 0.15 at 70%, linear in between, held outside."""
    return float(np.interp(sparsity, [0.5, 0.7], [0.04, 0.15]))


def dlp_sparsity(unimportance: Sequence[float], sparsity: float, params: Sequence[float],
                 alpha: float) -> np.ndarray:
    """DLP's ratios from the per-block unimportance U_l (> 0); higher U -> pruned more."""
    return relative_importance_sparsity(unimportance, sparsity, params, alpha,
                                        "DLP (--dlp-alpha)")


@register
class DLP(SparsityMethod):
    name = "dlp"
    needs = ("weights", "calibration")
    Arguments = DLPArguments

    def ratios(self, sparsity: float, inputs: SparsityInputs) -> tuple[np.ndarray, dict]:
        alpha = default_alpha(sparsity) if self.args.alpha is None else self.args.alpha
        U = block_wanda_statistic(inputs.model, inputs.calibration,
                                  STATISTICS[self.args.statistic])
        return (dlp_sparsity(U, sparsity, inputs.params, alpha),
                {"alpha": alpha, "statistic": self.args.statistic, "unimportance": U.tolist()})
