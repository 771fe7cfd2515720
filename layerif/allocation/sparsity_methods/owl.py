"""OWL (Yin et al., ICML 2024): blocks with more outlier Wanda scores are pruned less.

D_l: the fraction of block l's Wanda scores above M x their mean; D min-max normalised to
[0, 2 lambda]; density_l = D_l - mean(D) + (1 - s); s_l = 1 - density_l. The mean ratio is
exactly s (the parameter-weighted mean equals it when blocks are equally large, as in these
models)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

# For annotations only: the CLI's parsers import this module, which runs without
# torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch

from ...options import option
from ..experts import AllocationError
from ..sparsity import check_target, minmax
from .base import SparsityInputs, SparsityMethod, register
from .wanda_scores import block_wanda_statistic


@dataclass
class OWLArguments:
    m: float = option(5.0, "--owl-m", "OWL: an outlier exceeds M x the mean Wanda score "
                      "(default 5)")
    lam: float = option(0.08, "--owl-lambda", "OWL: ratios spread over [-lambda, +lambda] "
                        "(default 0.08)")

    def __post_init__(self) -> None:
        if not 0 <= self.lam <= 0.5:
            raise AllocationError(f"OWL's lambda must be in [0, 0.5], got {self.lam}.")
        if not self.m > 0:
            raise AllocationError(f"OWL's M must be > 0, got {self.m}.")


def outlier_ratio(scores: torch.Tensor, m: float = 5.0) -> float:
    """Fraction of entries greater than m times the mean entry."""
    return float((scores > m * scores.mean()).float().mean())


def owl_sparsity(outlier_ratios: Sequence[float], sparsity: float, lam: float = 0.08
                 ) -> np.ndarray:
    """OWL's ratios from the per-block outlier ratios D_l."""
    check_target(sparsity, 0.99)
    OWLArguments(lam=lam)
    D = minmax(np.asarray(outlier_ratios, dtype=np.float64)) * 2 * lam
    ratios = 1 - (D - D.mean() + (1 - sparsity))
    if (ratios < 0).any() or (ratios >= 1).any():
        raise AllocationError(
            f"OWL ratios leave [0, 1) for sparsity {sparsity} and lambda {lam}; lower lambda."
        )
    return ratios


@register
class OWL(SparsityMethod):
    name = "owl"
    needs = ("weights", "calibration")
    Arguments = OWLArguments

    def ratios(self, sparsity: float, inputs: SparsityInputs) -> tuple[np.ndarray, dict]:
        D = block_wanda_statistic(inputs.model, inputs.calibration,
                                  lambda s: outlier_ratio(s, self.args.m))
        return (owl_sparsity(D, sparsity, self.args.lam),
                {"m": self.args.m, "lambda": self.args.lam, "outlier_ratios": D.tolist()})
