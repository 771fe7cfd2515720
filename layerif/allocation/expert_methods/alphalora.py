"""AlphaLoRA (Qing et al., EMNLP 2024): w_l = alpha_l ** beta with alpha_l the block-mean
PL_Alpha_Hill of the weights (allocation/alpha.py): a lighter-tailed spectrum, by
Heavy-Tailed Self-Regularization a less well-trained layer, gets more."""

from __future__ import annotations

from dataclasses import dataclass

from ...options import option
from ..alpha import block_alphas
from ..experts import AllocationError, alphalora_weights
from .base import ExpertInputs, ExpertMethod, register
from .layerif import BETA_HELP


@dataclass
class AlphaLoRAArguments:
    beta: float = option(2.0, "--beta", BETA_HELP)

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise AllocationError(f"beta must be > 0, got {self.beta}.")


@register
class AlphaLoRA(ExpertMethod):
    name = "alphalora"
    needs = ("weights",)
    Arguments = AlphaLoRAArguments

    def weights(self, inputs: ExpertInputs):
        if inputs.blocks is None:
            raise AllocationError("method alphalora needs --model (its weight spectra).")
        alphas = block_alphas(inputs.blocks)
        return (alphalora_weights(alphas, self.args.beta), None,
                {"beta": self.args.beta, "alphas": alphas.tolist()})
