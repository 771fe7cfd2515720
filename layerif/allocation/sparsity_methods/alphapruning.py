"""AlphaPruning (Lu et al., NeurIPS 2024): blocks whose weight spectra have a heavier tail
(lower PL_Alpha_Hill: better trained) are pruned less; the block-mean alpha is mapped to
[1 - eps, 1 + eps] x target and scaled to the global target (allocation/alpha.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...options import option
from ..alpha import block_alphas
from ..sparsity import mapped_sparsity
from .base import SparsityInputs, SparsityMethod, register


@dataclass
class AlphaPruningArguments:
    epsilon: float = option(0.3, "--epsilon",
                            "ratios span [1-eps, 1+eps] x target (layerif 0.2, alphapruning 0.3)")


def alphapruning_sparsity(
    alphas: Sequence[float], sparsity: float, params: Sequence[float], epsilon: float = 0.3,
    max_ratio: float = 0.99,
) -> np.ndarray:
    """AlphaPruning's ratios from the block-mean PL_Alpha_Hill (higher alpha: pruned more)."""
    return mapped_sparsity(alphas, sparsity, params, epsilon, max_ratio)


@register
class AlphaPruning(SparsityMethod):
    name = "alphapruning"
    needs = ("weights",)
    Arguments = AlphaPruningArguments

    def ratios(self, sparsity: float, inputs: SparsityInputs) -> tuple[np.ndarray, dict]:
        alphas = block_alphas(inputs.blocks)
        ratios = alphapruning_sparsity(alphas, sparsity, inputs.params, self.args.epsilon)
        return ratios, {"epsilon": self.args.epsilon, "alphas": alphas.tolist()}
