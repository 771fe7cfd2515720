"""Uniform: every block pruned to the global target (the baseline of Wanda and SparseGPT)."""

from __future__ import annotations

import numpy as np

from ..sparsity import check_target
from .base import SparsityInputs, SparsityMethod, register


@register
class Uniform(SparsityMethod):
    name = "uniform"
    max_target = 1.0  # exclusive: every block at the target itself, below 1

    def ratios(self, sparsity: float, inputs: SparsityInputs) -> tuple[np.ndarray, dict]:
        check_target(sparsity, max(sparsity, 0.99))
        return np.full(len(inputs.blocks), float(sparsity)), {}
