"""Measured per-block sensitivity: the quantity a layer score claims to estimate.

For every decoder block l and level s, block l alone is pruned to s (every other block dense;
the pruner's statistics from the dense model's inputs to block l on calibration windows) and the
mean token NLL is measured on held windows:

    D_l(s) = NLL(block l pruned to s) - NLL(dense),     nats per predicted token (> 0: worse),

with a bootstrap interval over the held windows (the windows resampled, each window's
difference kept whole). It is cheap where it can be: one dense pass captures each block's
inputs (calibration and held windows are advanced block by block); a trial re-runs only blocks
l..L-1 on the cached hidden states of the held windows (the blocks before l are pass-through
stubs, so the model's own embedding, mask and rotary code supplies every other argument);
each trial's weights are restored bit for bit; SparseGPT's Hessians of a block are computed
once and serve every level.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import LayerIFError
from ..models import discover_blocks
from ..pruning.calibration import (
    CapturedInputs,
    capture_block_inputs,
    forward_block,
    tail_from,
)
from ..pruning.prune import InputStatistics, oriented_weight, prune_matrix
from ..pruning.pruners import make_pruner

BOOTSTRAP = 1000
LEVEL_CAP = 0.99  # a level is a pruning ratio in (0, LEVEL_CAP]


class SensitivityError(LayerIFError):
    pass


def check_levels(levels: Sequence[float], where: str = "--levels") -> list[float]:
    """Strictly increasing ratios in (0, 0.99]; refused otherwise, naming `where`."""
    try:
        out = [float(x) for x in levels]
    except (TypeError, ValueError):
        raise SensitivityError(f"{where}: levels are numbers, got {list(levels)!r}.") from None
    if not out or any(not (0 < x <= LEVEL_CAP) for x in out) or any(
            b <= a for a, b in zip(out, out[1:], strict=False)):
        raise SensitivityError(f"{where}: give increasing pruning ratios in (0, {LEVEL_CAP}], "
                               f"e.g. 0.5,0.6,0.7,0.8,0.9; got {out}.")
    return out


@dataclass
class Sensitivity:
    """levels: (K,) ratios; delta: (L, K) D_l(s) in nats per token; low/high: its bootstrap
    interval; window_delta: (L, K, W) each held window's own mean-NLL difference (what the
    bootstrap and the report resample); dense_nll: the dense model's mean token NLL."""

    levels: list[float]
    layers: list[int]
    params_per_layer: list[int]
    dense_nll: float
    dense_window_nll: list[float]
    delta: np.ndarray
    low: np.ndarray
    high: np.ndarray
    window_delta: np.ndarray
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def interpolate(self, layer_ratios: Sequence[float]) -> np.ndarray:
        """D_l(s_l) for one ratio per block, piecewise linear through (0, 0) and the measured
        levels (sensitivity.interpolate)."""
        return np.array([interpolate(self.levels, self.delta[i], s)
                         for i, s in enumerate(layer_ratios)])


def interpolate(levels: Sequence[float], values: Sequence[float], s: float) -> float:
    """D(s) piecewise linear through (0, 0) and (levels, values); past the last level the last
    segment's slope continues (not below the last value), up to LEVEL_CAP."""
    xs = np.concatenate([[0.0], np.asarray(levels, dtype=np.float64)])
    ys = np.concatenate([[0.0], np.asarray(values, dtype=np.float64)])
    if s <= xs[-1]:
        return float(np.interp(s, xs, ys))
    slope = max((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), 0.0)
    return float(ys[-1] + slope * (s - xs[-1]))


def window_token_nll(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """Mean next-token NLL (nats) of one (1, T) window from its (1, T, V) logits."""
    return float(F.cross_entropy(logits[0, :-1].float(), ids[0, 1:].to(logits.device)))


@torch.no_grad()
def tail_nll(model: nn.Module, l: int, hidden: list[torch.Tensor],
             windows: Sequence[torch.Tensor]) -> list[float]:
    """Each window's mean token NLL with blocks l..L-1 run on block l's cached inputs."""
    device = next(model.parameters()).device
    out = []
    with tail_from(model, l, hidden) as which:
        for s, ids in enumerate(windows):
            which[0] = s
            ids = ids.view(1, -1).to(device)
            out.append(window_token_nll(model(input_ids=ids, use_cache=False).logits, ids))
    return out


@torch.no_grad()
def dense_nll(model: nn.Module, windows: Sequence[torch.Tensor]) -> list[float]:
    device = next(model.parameters()).device
    out = []
    for ids in windows:
        ids = ids.view(1, -1).to(device)
        out.append(window_token_nll(model(input_ids=ids, use_cache=False).logits, ids))
    return out


def held_increase(model: nn.Module, held: Sequence[torch.Tensor], dense: Sequence[float]
                  ) -> float:
    """Mean token NLL of `model` on `held` minus the dense model's (`dense`, per window), in
    nats per token: the measured side of the additivity check, for a model already pruned."""
    return float(np.mean(dense_nll(model, held)) - np.mean(dense))


def bootstrap_interval(window_delta: np.ndarray, n: int = BOOTSTRAP, seed: int = 0,
                       level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the mean over windows (last axis), windows resampled with
    replacement; the same resamples for every cell, so cells stay comparable."""
    W = window_delta.shape[-1]
    idx = np.random.default_rng(seed).integers(0, W, size=(n, W))
    means = window_delta[..., idx].mean(-1)  # (..., n)
    tail = (1 - level) / 2 * 100
    return np.percentile(means, tail, axis=-1), np.percentile(means, 100 - tail, axis=-1)


@torch.no_grad()
def measure_sensitivity(
    model: nn.Module,
    pruner: str,
    levels: Sequence[float],
    calibration: Sequence[torch.Tensor],
    held: Sequence[torch.Tensor],
    *,
    progress: bool = True,
    steps: Callable[[str, Callable[[], object]], object] | None = None,
    seed: int = 0,
    bootstrap: int = BOOTSTRAP,
) -> Sensitivity:
    """D_l(s) for every block l and level s (see the module docstring). calibration: the
    pruner's token windows; held: the windows NLL is measured on, each a (T,) or (1, T) token
    tensor, disjoint by content from the calibration (the caller checks). steps(name, compute):
    a resumable step cache (influence/checkpoint.StepCache); each block's trials are one step.
    The model's weights are the same bit for bit afterwards."""
    levels = check_levels(levels)
    if not held or not calibration and make_pruner(pruner).needs_calibration:
        raise SensitivityError("sensitivity needs held windows (and calibration windows for "
                               f"{pruner}).")
    steps = steps or (lambda _name, compute: compute())
    chosen = make_pruner(pruner)
    start = time.perf_counter()
    specs = discover_blocks(model)
    modules = [model.get_submodule(b.path) for b in specs]
    device = next(model.parameters()).device
    resumed_seconds = 0.0  # what the steps loaded from an earlier, interrupted run took there

    def step(name: str, compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float, bool]:
        """(value, seconds it took, resumed?) of a resumable step. A step stores its own time,
        so that a measurement resumed across sessions still reports what it cost in all."""
        nonlocal resumed_seconds
        computed = False

        def timed() -> dict:
            nonlocal computed
            computed, began = True, time.perf_counter()
            value = compute()
            return {"value": value, "seconds": torch.tensor(time.perf_counter() - began)}

        stored = steps(name, timed)
        seconds = float(stored["seconds"])
        if not computed:
            resumed_seconds += seconds
        return stored["value"], seconds, not computed

    dense = np.asarray(step("dense", lambda: torch.tensor(dense_nll(model, held)))[0],
                       dtype=np.float64)
    held_in: CapturedInputs = capture_block_inputs(model, held)
    cal_in: CapturedInputs | None = (capture_block_inputs(model, calibration)
                                     if chosen.needs_calibration else None)
    held_hidden, cal_hidden = held_in.hidden, cal_in.hidden if cal_in else []
    nll = np.zeros((len(specs), len(levels), len(held)))
    block_seconds = []
    bar = tqdm(total=len(specs) * len(levels), desc=f"sensitivity ({pruner})", unit="trial",
               disable=not progress)
    for l, (spec, module) in enumerate(zip(specs, modules, strict=True)):
        def forward_cal(i=l, module=module, inputs=cal_hidden):
            return forward_block(module, cal_in, i, inputs, device)

        dense_outputs: list = []  # the calibration pass's outputs, when the trials ran

        def trials(l=l, spec=spec, forward_cal=forward_cal, dense_outputs=dense_outputs,
                   hidden=held_hidden):
            stats = None
            if cal_in is not None:
                stats, outs = InputStatistics.collect_with_outputs(
                    spec.matrices, forward_cal, chosen.statistics == "hessian")
                dense_outputs.extend(outs)
            saved = [oriented_weight(m).clone() for m in spec.matrices]
            rows = []
            try:
                for s in levels:
                    for m in spec.matrices:
                        W = oriented_weight(m)
                        W.copy_(prune_matrix(W, s, chosen, stats, m.name))
                    rows.append(tail_nll(model, l, hidden, held))
                    for m, w in zip(spec.matrices, saved, strict=True):
                        oriented_weight(m).copy_(w)
                    bar.update()
            finally:
                for m, w in zip(spec.matrices, saved, strict=True):
                    oriented_weight(m).copy_(w)
            return torch.tensor(rows, dtype=torch.float64)

        rows, seconds, resumed = step(f"block-{l}", trials)
        nll[l] = np.asarray(rows)
        block_seconds.append(seconds)
        if resumed:  # the bar counts the block's trials, but restarts its clock so that
            done = bar.n + len(levels)  # the time left comes from trials run now
            bar.initial = 0
            bar.reset()
            bar.n = bar.last_print_n = bar.initial = done
            bar.refresh()
        held_hidden = forward_block(module, held_in, l, held_hidden, device)
        if cal_in is not None:
            cal_hidden = dense_outputs or forward_cal()
    bar.close()
    window_delta = nll - dense[None, None, :]
    low, high = bootstrap_interval(window_delta, bootstrap, seed)
    return Sensitivity(levels, [b.index for b in specs],
                       [sum(m.numel for m in b.matrices) for b in specs],
                       float(dense.mean()), dense.tolist(), window_delta.mean(-1), low, high,
                       window_delta, time.perf_counter() - start + resumed_seconds,
                       {"block_seconds": [round(t, 1) for t in block_seconds],
                        "resumed_seconds": round(resumed_seconds, 1)})


@torch.no_grad()
def measured_increase(model: nn.Module, ratios: Sequence[float], pruner: str,
                      calibration: Sequence[torch.Tensor], held: Sequence[torch.Tensor],
                      dense: Sequence[float]) -> float:
    """The whole model pruned to `ratios` (one per block, block by block as `prune` does), its
    mean token NLL on `held` minus the dense one; the weights are put back afterwards."""
    from ..pruning.prune import prune_model

    saved = {m.name: oriented_weight(m).clone()
             for b in discover_blocks(model) for m in b.matrices}
    try:
        prune_model(model, list(ratios), pruner, calibration, progress=False)
        return held_increase(model, held, dense)
    finally:
        for b in discover_blocks(model):
            for m in b.matrices:
                oriented_weight(m).copy_(saved[m.name])
