"""Per-block statistics of the Wanda scores |W_ij| * ||X_j||_2 on calibration data, shared by
OWL (the outlier ratio) and DLP (the median or mean)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

# Imported inside the functions that use them: the CLI's parsers import this module
# and must not wait for torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch
    from torch import nn


from ...lazy import no_grad


@no_grad
def block_wanda_statistic(model: nn.Module, samples: Sequence[torch.Tensor],
                          statistic: Callable[[torch.Tensor], float]) -> np.ndarray:
    """statistic(scores) per block, `scores` the Wanda scores of all its matrices flattened
    together (float32), with each block's inputs from the dense model run block by block."""
    import torch

    from ...pruning.calibration import capture_block_inputs, run_blocks
    from ...pruning.prune import InputStatistics, oriented_weight

    captured = capture_block_inputs(model, samples)
    values = []

    def on_block(_i, spec, _module, forward_all):
        stats, outputs = InputStatistics.collect_with_outputs(spec.matrices, forward_all)
        scores = torch.cat([
            (oriented_weight(mat).abs().float() * stats.sq_norms[mat.name].sqrt()[None]).flatten()
            for mat in spec.matrices
        ])
        values.append(float(statistic(scores)))
        return outputs  # the weights are unchanged: no second pass

    run_blocks(model, captured, on_block)
    return np.array(values, dtype=np.float64)
