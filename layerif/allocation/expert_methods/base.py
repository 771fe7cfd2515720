"""Expert-allocation interface and registry: per-layer LoRA-MoE expert counts, and (for the
methods that weight layers) per-layer LoRA ranks from the same weights.

A weighting method returns one weight per layer; `experts` splits a total by them with floor +
1 and the largest remainders (allocation/experts.py), and `allocation.ranks` splits a rank
budget the same way in units of --multiple-of. A method that fixes the counts itself (MoLA's
patterns) overrides `experts` and gives no weights, so it has no rank form. Adding a method is
one small file: an `Arguments` dataclass (fields declared with `options.option`), a subclass of
`ExpertMethod` with `name`, `needs` and `weights` (or `experts`), decorated with `@register`.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...options import Component, build
from ..experts import AllocationError, largest_remainder


@dataclass
class ExpertInputs:
    """n_layers: the model's decoder blocks; blocks: `models.discover_blocks(model)` (None when
    only scores were given); scores: a loaded scores.json."""

    n_layers: int
    blocks: list | None = None
    scores: dict | None = None


class ExpertMethod(Component, ABC):
    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()  # "scores", "weights"
    gives_weights: ClassVar[bool] = True  # False: fixes counts itself, no rank form

    def weights(self, inputs: ExpertInputs) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """(weights (n_layers,) >= 0, tie priority or None (then the larger weight), what to
        record of how they were made)."""
        raise AllocationError(f"method {self.name} fixes its counts itself and has no weights "
                              "(so no rank form).")

    def experts(self, total: int | None, inputs: ExpertInputs) -> tuple[np.ndarray, dict]:
        """(experts per layer summing to `total`, what to record)."""
        if total is None:
            raise AllocationError(f"method {self.name} needs the total number of experts "
                                  "(--total T).")
        weights, priority, recorded = self.weights(inputs)
        return largest_remainder(weights, total, priority=priority), recorded


EXPERT_METHODS: dict[str, type[ExpertMethod]] = {}


def register(cls: type[ExpertMethod]) -> type[ExpertMethod]:
    EXPERT_METHODS[cls.name] = cls
    return cls


def make_expert_method(name: str, **options) -> ExpertMethod:
    """The registered method `name` with its arguments from `options` (None = the default)."""
    return build(EXPERT_METHODS, name, "method", AllocationError, **options)


def make_rank_method(name: str, **options) -> ExpertMethod:
    """A registered method that weights layers (the rank allocations)."""
    method = make_expert_method(name, **options)
    if not method.gives_weights:
        raise AllocationError(f"method {name} has no rank form; use one of "
                              f"{', '.join(rank_methods())}.")
    return method


def rank_methods() -> list[str]:
    return [n for n, c in EXPERT_METHODS.items() if c.gives_weights]
