"""MoLA (Gao et al., 2024): fixed patterns over equal consecutive groups of layers (2468: the
first quarter of the layers gets 2 experts each, ..., the last 8); the pattern fixes the total
(allocation/experts.py mola_experts)."""

from __future__ import annotations

from dataclasses import dataclass

from ...options import option
from ..experts import AllocationError, mola_experts
from .base import ExpertInputs, ExpertMethod, register


@dataclass
class MoLAArguments:
    pattern: str = option("2468", "--pattern", "MoLA pattern: 2468, 5555, 8642, 1234, 46810 or "
                          "a,b,c")


@register
class MoLA(ExpertMethod):
    name = "mola"
    Arguments = MoLAArguments
    gives_weights = False

    def experts(self, total, inputs: ExpertInputs):
        experts = mola_experts(inputs.n_layers, self.args.pattern)
        if total is not None and total != experts.sum():
            raise AllocationError(
                f"pattern {self.args.pattern} gives {experts.sum()} experts over "
                f"{inputs.n_layers} layers, not the total {total}; leave the total out for mola "
                "(the pattern fixes it).")
        return experts, {"pattern": self.args.pattern}
