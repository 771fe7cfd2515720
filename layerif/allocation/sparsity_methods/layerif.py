"""LayerIF (SPEC section 3): blocks with larger influence magnitude |S_l| are pruned more.

x = min-max(|S|), smoothed by Savitzky-Golay (window 7, order 3; Appendix E) and min-maxed
again, mapped to phi_l = (1 - eps) + 2 eps x_l and scaled so that sum_l P_l s_l = s sum_l P_l
(allocation/sparsity.py).

The paper's direction is eps > 0. Whether it holds is an empirical question per model, so:
- `--epsilon` takes [-1, 1]: a negative eps reverses the map (larger |S| pruned less), 0 is
  uniform;
- `--tune` picks eps from `--tune-grid` (0 and negative values included) by the perplexity of
  held calibration windows of the pruned model, exactly as ATP picks beta (setting_search.py; never
  evaluation data); the grid, each point's perplexity and the choice are recorded;
- `--prior atp` applies the map as a correction on top of ATP's depth progression: ATP's beta
  is chosen first on the same calibration windows, then eps (phi_l multiplies ATP's s_l before
  the scaling), so a data-driven score can refine the depth prior instead of replacing it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...options import option
from ..experts import AllocationError, refuse_flat
from ..profiles import layer_profile
from ..sparsity import mapped_sparsity, minmax, smooth
from .base import SparsityInputs, SparsityMethod, register
from .setting_search import choose

PRIORS = ("none", "atp")


@dataclass
class LayerIFArguments:
    epsilon: float = option(0.2, "--epsilon",
                            "ratios span [1-eps, 1+eps] x target (layerif 0.2, alphapruning "
                            "0.3); layerif: in [-1, 1], negative prunes larger |S| less")
    smooth: bool = option(True, "--no-smooth", "skip Savitzky-Golay smoothing (Appendix E)")
    tune: bool = option(False, "--tune", "layerif: choose epsilon from --tune-grid by the held "
                        "perplexity of calibration windows (as ATP chooses beta)")
    grid: str = option("-0.4,-0.2,0,0.2,0.4", "--tune-grid", "layerif --tune: the epsilons "
                       "tried (default -0.4,-0.2,0,0.2,0.4)")
    prior: str = option("none", "--prior", "layerif: none, or atp (the map corrects ATP's "
                        "depth progression; ATP's beta is searched first)", choices=PRIORS)
    atp_beta: float | None = option(None, "--prior-atp-beta", "layerif --prior atp: ATP's "
                                    "common difference when already chosen (skips its search)")
    pruner: str = option("wanda", "--tune-pruner", "layerif --tune/--prior: the pruner of each "
                         "trial (default wanda; use the final run's)",
                         choices=("magnitude", "wanda", "sparsegpt"))
    nsamples: int = option(32, "--tune-nsamples", "layerif --tune/--prior: calibration windows "
                           "each trial prunes with (default 32)")
    held: int = option(8, "--tune-held", "layerif --tune/--prior: the last calibration windows, "
                       "held out of the trials' pruning, whose perplexity chooses (default 8)")

    def __post_init__(self) -> None:
        if not (isinstance(self.epsilon, (int, float)) and math.isfinite(self.epsilon)
                and -1 <= self.epsilon <= 1):
            raise AllocationError(f"--epsilon must be a number in [-1, 1], got "
                                  f"{self.epsilon!r}.")
        try:
            grid = self.epsilons()
        except ValueError:
            raise AllocationError(f"--tune-grid must be comma-separated numbers, got "
                                  f"{self.grid!r}.") from None
        if not grid or any(not (math.isfinite(e) and -1 <= e <= 1) for e in grid):
            raise AllocationError(f"--tune-grid values must lie in [-1, 1], got {self.grid!r}.")
        if self.prior not in PRIORS:
            raise AllocationError(f"--prior must be one of {', '.join(PRIORS)}, got "
                                  f"{self.prior!r}.")
        if self.nsamples < 1 or self.held < 1:
            raise AllocationError("--tune-nsamples and --tune-held must be >= 1.")
        if self.atp_beta is not None and (self.prior != "atp" or not (
                math.isfinite(self.atp_beta) and self.atp_beta >= 0)):
            raise AllocationError("--prior-atp-beta takes a beta >= 0 and goes with --prior "
                                  "atp.")

    def epsilons(self) -> list[float]:
        return [float(x) for x in self.grid.split(",") if x.strip()]


def layerif_sparsity(
    scores: Sequence[float],
    sparsity: float,
    params: Sequence[float],
    epsilon: float = 0.2,
    use_smoothing: bool = True,
    max_ratio: float = 0.99,
    prior: Sequence[float] | None = None,
) -> np.ndarray:
    """LayerIF's per-layer sparsity ratios from layer scores (|S|, min-max, Savitzky-Golay),
    optionally multiplying `prior` ratios (see mapped_sparsity)."""
    s = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(s).all():
        raise AllocationError("scores must be finite.")
    refuse_flat(np.abs(s))
    x = minmax(np.abs(s))
    if use_smoothing:
        x = smooth(x)
    return mapped_sparsity(x, sparsity, params, epsilon, max_ratio, prior=prior)


@register
class LayerIF(SparsityMethod):
    name = "layerif"
    needs = ("scores",)
    Arguments = LayerIFArguments

    def requires(self) -> tuple[str, ...]:
        searches = self.args.tune or (self.args.prior != "none" and self.args.atp_beta is None)
        return ("scores", "weights", "calibration") if searches else self.needs

    def ratios(self, sparsity: float, inputs: SparsityInputs) -> tuple[np.ndarray, dict]:
        a = self.args
        scores = inputs.scores
        profile = layer_profile(scores, use_abs=True)
        record = {"smooth": a.smooth, "scores": scores["_path"],
                  "aggregate": scores.get("aggregate"), "prior": a.prior}
        prior = None
        if a.prior == "atp":
            from .atp import ATP, ATPArguments

            atp_ratios, atp_record = ATP(ATPArguments(
                beta=a.atp_beta, pruner=a.pruner, nsamples=a.nsamples, held=a.held)
            ).ratios(sparsity, inputs)
            prior, record["atp"] = atp_ratios, atp_record

        def ratios_of(epsilon: float) -> np.ndarray:
            if epsilon == 0 and prior is not None:
                # the prior as it is, not rescaled to the target it already meets: bit for bit
                # ATP's own ratios, so the runner finds the pruned model it made for ATP
                return np.asarray(prior, dtype=np.float64)
            return layerif_sparsity(profile, sparsity, inputs.params, epsilon,
                                    use_smoothing=a.smooth, prior=prior)

        epsilon = a.epsilon
        if a.tune:
            epsilon, record["search"] = choose(inputs, a.epsilons(), ratios_of, a.pruner,
                                               a.nsamples, a.held, "LayerIF epsilon",
                                               "--tune-held")
        return ratios_of(epsilon), {"epsilon": epsilon, "tuned": a.tune, **record}
