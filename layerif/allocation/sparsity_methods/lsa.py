"""LSA, Layer-wise Sparsity Allocation (Yang et al., ICLR 2026, "LSA: Layer-wise Sparsity
Allocation for Large Language Model Pruning Based on Minimal Linear Reconstruction Error",
openreview xq3lza5IjN; reference code github.com/BeiYazi0/LSA, layersp/blk.py).

A block's redundancy is the linear reconstruction error of its matrices when a probe share p of
each row's weights is removed (no weight update):

    E(W) = sum_k || W_k X^T - (M_k * W_k) X^T ||^2 = sum_k w_kP^T H w_kP,   H = (2/N) X^T X,

X the matrix's calibration inputs (the dense model's, block by block), P_k the pruned inputs of
row k. Choosing P_k to minimise it is a submatrix-sum problem; the reference solves it greedily
and so does this file: per row, the input whose removal adds the least error (initially
W_kj^2 H_jj, then with the cross terms 2 W_ki W_kj H_ij of those already chosen), p x G inputs in
each group of G consecutive inputs, the cross terms carried to later groups. E_l is the mean of
E over the block's matrices (the reference's layer metric). Blocks with a larger error are more
redundant and pruned more, by the mapping DLP uses (allocation/sparsity.py):
I_l = 1 - E_l / sum E, min-max to D_l in [0, 2 beta], s_l = s - (D_l - mean_P(D)).

Defaults are the reference's: p = 0.5 (`--resp`), groups of 128 inputs (`--block 128` in every
command its README gives), and beta by target sparsity from its table (0.04 at 50%, 0.1 at
60%, 0.15 at 70%, 0.12 at 80%; the table is indexed by floor(10 s)). [ref bug] main.py
registers the method as "lsa" while layersp/blk.py only answers to "blk", so the README's
command raises NotImplementedError as published.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

# Imported inside the functions that use them: the CLI's parsers import this module
# and must not wait for torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch
    from torch import nn

from tqdm.auto import tqdm

from ...lazy import no_grad
from ...options import option
from ..experts import AllocationError
from ..sparsity import relative_importance_sparsity
from .base import SparsityInputs, SparsityMethod, register

# The reference's beta by floor(10 x sparsity) (layersp/blk.py, BLK.alpha; its entry 0 is the
# N:M setting, OWL's lambda 0.08); held at the last entry above 80%.
BETA_BY_TENTH = (0.08, 0.06, 0.02, 0.04, 0.02, 0.04, 0.1, 0.15, 0.12)


@dataclass
class LSAArguments:
    beta: float | None = option(None, "--lsa-beta", "LSA: ratios spread over [s - beta, "
                                "s + beta] (default the paper's table: 0.04 at 50%%, 0.1 at "
                                "60%%, 0.15 at 70%%, 0.12 at 80%%)")
    probe: float = option(0.5, "--lsa-probe", "LSA: the share of each row's weights whose "
                          "removal error measures a block's redundancy (default 0.5)")
    group: int = option(128, "--lsa-group", "LSA: inputs per greedy group (default 128; 0: "
                        "each row in one group)")

    def __post_init__(self) -> None:
        if self.beta is not None and not (math.isfinite(self.beta) and 0 <= self.beta <= 0.5):
            raise AllocationError(f"LSA's beta (--lsa-beta) must be in [0, 0.5], got "
                                  f"{self.beta}.")
        if not (math.isfinite(self.probe) and 0 < self.probe < 1):
            raise AllocationError(f"LSA's probe share (--lsa-probe) must be in (0, 1), got "
                                  f"{self.probe}.")
        if self.group < 0:
            raise AllocationError(f"LSA's group size (--lsa-group) must be >= 0, got "
                                  f"{self.group}.")


def default_beta(sparsity: float) -> float:
    """The reference's beta for a target sparsity (its table, indexed by floor(10 s))."""
    return BETA_BY_TENTH[min(int(math.floor(10 * sparsity + 1e-9)), len(BETA_BY_TENTH) - 1)]


@no_grad
def reconstruction_error(W: torch.Tensor, H: torch.Tensor, probe: float = 0.5,
                         group: int = 128) -> tuple[float, torch.Tensor]:
    """(E, pruned): the greedy minimal linear reconstruction error of removing `probe` of each
    row's weights, and the (d_out, d_in) bool mask of the removed weights. W: (d_out, d_in);
    H: (d_in, d_in), the inputs' second moment (2/N) X^T X. In each group of `group` inputs
    (0: all), round(probe x group) are removed per row, one at a time, each the input whose
    removal adds the least error given those removed before (in this group and earlier ones).
    E = sum_k w_kP^T H w_kP exactly for the returned mask (float64 sums of fp32 products)."""
    import torch

    W = W.float()
    H = H.float()
    d_out, d_in = W.shape
    group = group or d_in
    added = W.square() * H.diagonal()[None, :]  # the error each removal adds, given the rest
    pruned = torch.zeros_like(W, dtype=torch.bool)
    rows = torch.arange(d_out, device=W.device)
    error = 0.0
    for start in range(0, d_in, group):
        stop = min(start + group, d_in)
        count = int(probe * (stop - start))  # the reference's int(block_size * s)
        removed = torch.zeros(d_out, stop - start, dtype=W.dtype, device=W.device)
        for _ in range(count):
            j = added[:, start:stop].argmin(dim=1)  # per row, in this group
            error += float(added[rows, start + j].double().sum())
            w = W[rows, start + j]
            # removing (k, j) adds 2 W_kj W_ki H_ji to every later removal (k, i) of this group
            added[:, start:stop] += 2 * W[:, start:stop] * w[:, None] * H[start + j, start:stop]
            added[rows, start + j] = math.inf
            removed[rows, j] = w
            pruned[rows, start + j] = True
        if stop < d_in:  # carry the cross terms of this group's removals to the later inputs
            added[:, stop:] += 2 * W[:, stop:] * (removed @ H[start:stop, stop:])
    return error, pruned


@no_grad
def block_reconstruction_errors(model: nn.Module, samples: Sequence[torch.Tensor],
                                probe: float = 0.5, group: int = 128) -> np.ndarray:
    """E_l per block: the mean over its matrices of `reconstruction_error`, with each block's
    inputs from the dense model run block by block."""
    from ...pruning.calibration import capture_block_inputs, run_blocks
    from ...pruning.prune import InputStatistics, oriented_weight

    captured = capture_block_inputs(model, samples)
    values = []
    bar = tqdm(total=len(captured.calls), desc="LSA reconstruction errors", unit="block",
               leave=False)

    def on_block(_i, spec, _module, forward_all):
        stats, outputs = InputStatistics.collect_with_outputs(spec.matrices, forward_all,
                                                              need_hessian=True)
        errors = [reconstruction_error(oriented_weight(m), stats.hessian(m.name), probe,
                                       group)[0] for m in spec.matrices]
        values.append(float(np.mean(errors)))
        bar.update()
        return outputs  # the weights are unchanged: no second pass

    run_blocks(model, captured, on_block)
    bar.close()
    return np.array(values, dtype=np.float64)


def lsa_sparsity(errors: Sequence[float], sparsity: float, params: Sequence[float],
                 beta: float) -> np.ndarray:
    """LSA's ratios from the per-block errors E_l (> 0); higher E -> pruned more."""
    return relative_importance_sparsity(errors, sparsity, params, beta, "LSA (--lsa-beta)")


@register
class LSA(SparsityMethod):
    name = "lsa"
    needs = ("weights", "calibration")
    Arguments = LSAArguments

    def ratios(self, sparsity: float, inputs: SparsityInputs) -> tuple[np.ndarray, dict]:
        a = self.args
        beta = default_beta(sparsity) if a.beta is None else a.beta
        errors = block_reconstruction_errors(inputs.model, inputs.calibration, a.probe, a.group)
        return lsa_sparsity(errors, sparsity, inputs.params, beta), {
            "beta": beta, "probe": a.probe, "group": a.group, "errors": errors.tolist()}
