"""AlphaLoRA (Qing et al., EMNLP 2024): w_l = alpha_l ** beta with alpha_l the block-mean
PL_Alpha_Hill of the weights (allocation/alpha.py): a lighter-tailed spectrum, by
Heavy-Tailed Self-Regularization a less well-trained layer, gets more."""

from __future__ import annotations

from ..alpha import block_alphas
from ..experts import AllocationError, alphalora_weights
from .base import ExpertInputs, ExpertMethod, register
from .layerif import BetaArguments


@register
class AlphaLoRA(ExpertMethod):
    name = "alphalora"
    needs = ("weights",)
    Arguments = BetaArguments

    def weights(self, inputs: ExpertInputs):
        if inputs.blocks is None:
            raise AllocationError("method alphalora needs --model (its weight spectra).")
        alphas = block_alphas(inputs.blocks)
        return (alphalora_weights(alphas, self.args.beta), None,
                {"beta": self.args.beta, "alphas": alphas.tolist()})
