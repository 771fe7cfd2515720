"""Sparsity-allocation interface, registry and arguments.

A sparsity method maps what it reads about a model (layer scores, weight spectra, calibration
activations) to one pruning ratio per decoder block whose parameter-weighted mean is the global
target. Adding a method is one small file: an `Arguments` dataclass (validated in
`__post_init__`, its fields' metadata giving the CLI flag and help), a subclass of
`SparsityMethod` with `name`, `needs` and `ratios`, decorated with `@register` (layerif/options.py
turns the arguments into CLI flags). The CLI and the
experiment runner iterate over `SPARSITY_METHODS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

# For annotations only: the CLI's parsers import this module, which runs without
# torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch
    from torch import nn

from ...options import Component, build
from ..experts import AllocationError

# What a method may read; the CLI loads only what the chosen method needs.
NEEDS = ("scores", "weights", "calibration", "tokenizer")
# No block is pruned to more than this, so no global target above it can be met.
MAX_RATIO = 0.99


@dataclass
class SparsityInputs:
    """model: the causal LM (a skeleton from its config suffices unless the method needs
    "weights" or "calibration"); blocks: `models.discover_blocks(model)`; params: prunable
    parameters per block (P_l); scores: a loaded scores.json; calibration: token windows, each
    a (1, T) tensor; fingerprint: the model's (fingerprint.py), for methods that read a file
    measured on a model; tokenizer: the model's, for methods that read text of their own;
    calibration_set: the content set (provenance.ContentSet.to_dict) of the calibration
    windows, for methods that must keep their own text disjoint from it."""

    model: nn.Module
    blocks: list
    params: list[int]
    scores: dict | None = None
    calibration: Sequence[torch.Tensor] | None = None
    fingerprint: dict | None = None
    tokenizer: object | None = None
    calibration_set: dict | None = None


class SparsityMethod(Component, ABC):
    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()
    max_target: ClassVar[float] = MAX_RATIO  # the largest global target it can meet
    # Raised when the method computes differently for the same arguments, so that an
    # experiment's stored allocations of the old computation are not reused (cell keys
    # include it when nonzero).
    revision: ClassVar[int] = 0

    def requires(self) -> tuple[str, ...]:
        """What this configured method reads: its class's `needs`, plus what its arguments
        add (LayerIF tuned on calibration data also prunes the model)."""
        return self.needs

    @abstractmethod
    def ratios(self, sparsity: float, inputs: SparsityInputs) -> tuple[np.ndarray, dict]:
        """(ratios (n_blocks,) in [0, 1), higher = pruned more; what to record of how they
        were made: the arguments and the per-layer statistics read)."""


SPARSITY_METHODS: dict[str, type[SparsityMethod]] = {}


def register(cls: type[SparsityMethod]) -> type[SparsityMethod]:
    SPARSITY_METHODS[cls.name] = cls
    return cls


def make_sparsity_method(name: str, **options) -> SparsityMethod:
    """The registered method `name` with its arguments from `options` (None = the default);
    an option the method does not take is refused, naming the ones it does."""
    return build(SPARSITY_METHODS, name, "sparsity method", AllocationError, **options)
