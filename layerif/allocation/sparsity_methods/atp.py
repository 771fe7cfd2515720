"""ATP (Huang et al., 2025, "Determining Layer-wise Sparsity for Large Language Models Through a
Theoretical Perspective", arXiv 2502.14770): layer sparsities in a monotonically increasing
arithmetic progression, deeper blocks pruned more, because reconstruction errors of early
blocks grow as they propagate ("reconstruction error explosion").

    s_l = s + beta (l - lbar),   l = 1..L,   lbar = sum_l P_l l / sum_l P_l,

which is the paper's s - beta (L - 1) / 2 + beta (l - 1) when blocks are equally large and keeps
sum_l P_l s_l = s sum_l P_l exactly otherwise. The common difference beta is the one
hyperparameter: chosen on a grid (fractions of the largest beta that keeps every ratio in
[0, 0.99]) by the perplexity of the pruned model on held calibration windows, never on
evaluation data. Each grid point is one prune of the whole model with `--atp-pruner`, on fewer
calibration windows than the final run (`--atp-nsamples`, recorded); the held windows are the
last `--atp-held` calibration windows, which that prune does not see. The weights are restored
after every trial.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...options import option
from ..experts import AllocationError
from ..sparsity import check_target
from .base import SparsityInputs, SparsityMethod, register
from .setting_search import choose

MAX_RATIO = 0.99


@dataclass
class ATPArguments:
    beta: float | None = option(None, "--atp-beta", "ATP: the common difference (default: "
                                "searched on --atp-grid)")
    grid: str = option("0,0.2,0.4,0.6,0.8,1", "--atp-grid", "ATP: the betas tried, as "
                       "fractions of the largest that keeps every ratio in [0, 0.99]")
    pruner: str = option("wanda", "--atp-pruner", "ATP: the pruner of each trial (default "
                         "wanda; use the final run's)", choices=("magnitude", "wanda",
                                                                 "sparsegpt"))
    nsamples: int = option(32, "--atp-nsamples", "ATP: calibration windows each trial prunes "
                           "with (default 32)")
    held: int = option(8, "--atp-held", "ATP: the last calibration windows, held out of the "
                       "trials' pruning, whose perplexity picks beta (default 8)")

    def __post_init__(self) -> None:
        try:
            fractions = self.fractions()
        except ValueError:
            raise AllocationError(f"--atp-grid must be comma-separated numbers, got "
                                  f"{self.grid!r}.") from None
        if not fractions or any(not 0 <= f <= 1 for f in fractions):
            raise AllocationError(f"--atp-grid values must lie in [0, 1], got {self.grid!r}.")
        if self.beta is not None and self.beta < 0:
            raise AllocationError(f"ATP's beta must be >= 0, got {self.beta}.")
        if self.nsamples < 1 or self.held < 1:
            raise AllocationError("--atp-nsamples and --atp-held must be >= 1.")

    def fractions(self) -> list[float]:
        return [float(x) for x in self.grid.split(",") if x.strip()]


def centred_positions(params: Sequence[float]) -> np.ndarray:
    """l - lbar for l = 1..L, lbar the parameter-weighted mean position."""
    P = np.asarray(params, dtype=np.float64)
    positions = np.arange(1, len(P) + 1, dtype=np.float64)
    return positions - (P * positions).sum() / P.sum()


def max_beta(sparsity: float, params: Sequence[float]) -> float:
    """The largest beta whose ratios all lie in [0, MAX_RATIO]."""
    d = centred_positions(params)
    if len(d) < 2:
        return 0.0
    return float(min(sparsity / -d.min(), (MAX_RATIO - sparsity) / d.max()))


def atp_sparsity(sparsity: float, params: Sequence[float], beta: float) -> np.ndarray:
    """The arithmetic progression with common difference `beta` around the global target."""
    check_target(sparsity, MAX_RATIO)
    ratios = sparsity + beta * centred_positions(params)
    if beta > max_beta(sparsity, params) * (1 + 1e-12):
        raise AllocationError(
            f"ATP's beta {beta} puts ratios outside [0, {MAX_RATIO}] for sparsity {sparsity}; "
            f"the largest allowed is {max_beta(sparsity, params):.6g}.")
    return np.clip(ratios, 0.0, MAX_RATIO)


@register
class ATP(SparsityMethod):
    name = "atp"
    needs = ("weights", "calibration")
    Arguments = ATPArguments

    def ratios(self, sparsity: float, inputs: SparsityInputs) -> tuple[np.ndarray, dict]:
        a = self.args
        if a.beta is not None:
            return atp_sparsity(sparsity, inputs.params, a.beta), {"beta": a.beta}
        top = max_beta(sparsity, inputs.params)
        beta, record = choose(inputs, [f * top for f in a.fractions()],
                              lambda b: atp_sparsity(sparsity, inputs.params, b), a.pruner,
                              a.nsamples, a.held, "ATP beta", "--atp-held")
        return atp_sparsity(sparsity, inputs.params, beta), {"beta": beta, **record}
