"""LayerIF (paper 3.3, SPEC section 2): w_l = (max(S) - S_l) ** beta, so a lower score (better
trained under DataInf's sign: IF < 0 helpful) gets more experts (or rank); the layer with the
highest score gets the minimum."""

from __future__ import annotations

from dataclasses import dataclass

from ...options import option
from ..experts import AllocationError, layerif_weights
from ..profiles import layer_profile
from .base import ExpertInputs, ExpertMethod, register


@dataclass
class BetaArguments:
    """The exponent of a weighting method (LayerIF's scores, AlphaLoRA's alphas)."""

    beta: float = option(2.0, "--beta", "exponent of the score (or alpha) weighting "
                         "(default 2)")

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise AllocationError(f"beta must be > 0, got {self.beta}.")


@register
class LayerIF(ExpertMethod):
    name = "layerif"
    needs = ("scores",)
    Arguments = BetaArguments

    def weights(self, inputs: ExpertInputs):
        weights, priority = layerif_weights(layer_profile(inputs.scores, use_abs=False),
                                            self.args.beta)
        return weights, priority, {"beta": self.args.beta, "scores": inputs.scores["_path"],
                                   "aggregate": inputs.scores.get("aggregate")}
