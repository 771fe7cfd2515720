"""`sensitivity`: the ratios that minimise the additive model of the measured sensitivity,

    minimise sum_l D_l(s_l)   subject to   sum_l P_l s_l = s sum_l P_l,   0 <= s_l <= 0.99,

D_l(s) = NLL(block l alone pruned to s) - NLL(dense) from `layerif sensitivity`, piecewise
linear through (0, 0) and the measured levels (sensitivity/measure.interpolate). No ratio
exceeds the largest measured level unless `--sensitivity-cap` says so: past it D_l is an
extrapolation, and the additive optimum would put the blocks whose damage grows slowest up to
0.8-0.9 there at 0.99 on the strength of numbers nobody measured (on SmolLM2 at 70% it put four
middle blocks at 0.99, and the whole model's damage came out 1.52x the prediction). An exact
dynamic programme over a grid of ratios (step `--sensitivity-step`), the budget counted in grid
steps weighted by each block's share of the parameters; the rounding of unequal blocks' weights
is then closed by moving the cheapest block off the grid, so the global target is exact.
It is the idea of SPDY (Frantar & Alistarh, 2022: per-layer sensitivity plus a DP) and of
EvoPress's per-layer database (Sieberling et al., 2025) without their search: an additive
reference any layer score can be measured against. Its predicted NLL increase, sum_l
D_l(s_l), is recorded; whether the additive model holds is measured (sensitivity's
`additivity`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...options import option
from ..experts import AllocationError
from ..sparsity import check_target
from .base import SparsityInputs, SparsityMethod, register

MAX_RATIO = 0.99
WEIGHT_RESOLUTION = 20  # budget units per grid step of an average-sized block


@dataclass
class SensitivityArguments:
    file: str | None = option(None, "--sensitivity", "sensitivity: DIR/sensitivity.json from "
                              "`layerif sensitivity` (required by method sensitivity)")
    step: float = option(0.01, "--sensitivity-step", "sensitivity: the grid of ratios the "
                         "programme searches (default 0.01)")
    cap: float | None = option(None, "--sensitivity-cap", "sensitivity: the largest ratio of "
                               "a block (default: the largest measured level; above it D_l "
                               f"is extrapolated), at most {MAX_RATIO}")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step) and 0 < self.step <= 0.1):
            raise AllocationError(f"--sensitivity-step must be in (0, 0.1], got {self.step}.")
        if self.cap is not None and not (math.isfinite(self.cap) and 0 < self.cap <= MAX_RATIO):
            raise AllocationError(f"--sensitivity-cap must be in (0, {MAX_RATIO}], got "
                                  f"{self.cap}.")


def additive_allocation(curves: Sequence, sparsity: float, params: Sequence[float],
                        step: float = 0.01, cap: float = MAX_RATIO) -> tuple[np.ndarray, float]:
    """(ratios, predicted sum_l D_l(s_l)) minimising the additive cost. curves[l]: a callable
    s -> D_l(s). Exact over the grid {0, step, ..., <= cap} for blocks of equal size (and when
    s sum P / step is a whole number of steps); otherwise the last fraction of a step is given
    to the block whose cost rises least, keeping the target exact."""
    check_target(sparsity, cap)
    P = np.asarray(params, dtype=np.float64)
    L = len(P)
    grid = np.arange(0, int(round(cap / step + 1e-9)) + 1) * step
    cost = np.array([[curve(float(g)) for g in grid] for curve in curves])  # (L, K)
    if not np.isfinite(cost).all():
        raise AllocationError("the sensitivity curves must be finite.")
    units = np.maximum(np.rint(P / P.mean() * WEIGHT_RESOLUTION).astype(int), 1)
    budget = int(round(sparsity / step * units.sum()))
    # f[b]: least cost of the blocks so far using exactly b units; choice[l, b]: block l's k
    f = np.full(budget + 1, np.inf)
    f[0] = 0.0
    choice = np.zeros((L, budget + 1), dtype=np.int32)
    for layer in range(L):
        best = np.full(budget + 1, np.inf)
        for k in range(len(grid)):
            shift = k * units[layer]
            if shift > budget:
                break
            candidate = np.full(budget + 1, np.inf)
            candidate[shift:] = f[:budget + 1 - shift] + cost[layer, k]
            better = candidate < best
            best[better] = candidate[better]
            choice[layer, better] = k
        f = best
    if not np.isfinite(f[budget]):
        raise AllocationError(f"no ratios in [0, {cap}] reach sparsity {sparsity}.")
    ratios = np.zeros(L)
    b = budget
    for layer in range(L - 1, -1, -1):
        k = choice[layer, b]
        ratios[layer] = grid[k]
        b -= k * units[layer]
    ratios = _close_the_target(ratios, curves, sparsity, P, cap)
    return ratios, float(sum(curve(float(s)) for curve, s in zip(curves, ratios, strict=True)))


def _close_the_target(ratios: np.ndarray, curves, sparsity: float, P: np.ndarray,
                      cap: float) -> np.ndarray:
    """Move blocks off the grid, the cheapest change first, until sum P s = s sum P exactly."""
    ratios = ratios.copy()
    for _ in range(len(ratios)):
        residual = sparsity * P.sum() - (P * ratios).sum()
        if abs(residual) <= 1e-12 * P.sum():
            break
        moves = []
        for layer, s in enumerate(ratios):
            new = min(max(s + residual / P[layer], 0.0), cap)
            if new != s:
                moves.append((curves[layer](new) - curves[layer](float(s)), layer, new))
        if not moves:
            break
        _, layer, new = min(moves)
        ratios[layer] = new
    return ratios


@register
class SensitivityAllocation(SparsityMethod):
    name = "sensitivity"
    needs = ()
    Arguments = SensitivityArguments
    revision = 1  # 1: capped at the largest measured level by default (0 extrapolated to 0.99)

    def ratios(self, sparsity: float, inputs: SparsityInputs) -> tuple[np.ndarray, dict]:
        from ...sensitivity import interpolate, load

        if self.args.file is None:
            raise AllocationError("method sensitivity needs --sensitivity DIR/sensitivity.json "
                                  "(from `layerif sensitivity`).")
        measured, record = load(self.args.file)
        if len(measured.layers) != len(inputs.params):
            raise AllocationError(
                f"{record['_path']} measures {len(measured.layers)} blocks but the model has "
                f"{len(inputs.params)}; measure the model you allocate for.")
        if inputs.fingerprint:
            from ...fingerprint import check_same_model

            check_same_model(record.get("model_fingerprint"), inputs.fingerprint,
                             record["_path"])
        curves = [lambda s, row=row: interpolate(measured.levels, row, s)
                  for row in measured.delta]
        cap = self.args.cap if self.args.cap is not None else min(max(measured.levels),
                                                                   MAX_RATIO)
        if sparsity > cap:
            raise AllocationError(
                f"sparsity {sparsity} is above {cap}, the largest level {record['_path']} "
                f"measured; measure higher levels, or allow extrapolated ratios with "
                f"--sensitivity-cap (at most {MAX_RATIO}).")
        ratios, predicted = additive_allocation(curves, sparsity, inputs.params, self.args.step,
                                                cap)
        return ratios, {"sensitivity": record["_path"], "pruner": record.get("pruner"),
                        "levels": measured.levels, "step": self.args.step, "cap": cap,
                        "extrapolated": cap > max(measured.levels),
                        "predicted_nll_increase": predicted,
                        "model_fingerprint": record.get("model_fingerprint")}
