"""OWL's layer-wise outlier ratios (Yin et al., 2024) from Wanda scores on calibration data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..pruning.calibration import capture_block_inputs, run_blocks
from ..pruning.prune import InputStatistics, oriented_weight


def outlier_ratio(scores: torch.Tensor, m: float = 5.0) -> float:
    """Fraction of entries greater than m times the mean entry."""
    return float((scores > m * scores.mean()).float().mean())


@torch.no_grad()
def owl_outlier_ratios(
    model: nn.Module, samples: Sequence[torch.Tensor], m: float = 5.0
) -> np.ndarray:
    """Per block: the outlier ratio of the Wanda scores |W_ij| * ||X_j||_2 of all its matrices
    together, with inputs from the dense model run block by block."""
    captured = capture_block_inputs(model, samples)
    ratios = []

    def on_block(_i, spec, _module, forward_all):
        stats = InputStatistics.collect(spec.matrices, forward_all)
        scores = torch.cat([
            (oriented_weight(mat).abs().float() * stats.sq_norms[mat.name].sqrt()[None]).flatten()
            for mat in spec.matrices
        ])
        ratios.append(outlier_ratio(scores, m))

    run_blocks(model, captured, on_block)
    return np.array(ratios)
