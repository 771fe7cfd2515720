"""Pruner interface and registry (SPEC section 5).

A pruner zeroes a fraction of one weight matrix W (d_out, d_in) from what it reads about the
matrix's inputs on calibration data: nothing (magnitude), the per-input squared norms (Wanda) or
the Hessian (2/N) X^T X (SparseGPT). Adding a pruner is one small file: an `Arguments`
dataclass (validated in `__post_init__`), a subclass of `Pruner` with `name`, `statistics` and
`prune`, decorated with `@register`. `prune_model` (pruning/prune.py), the CLI and the
experiment runner take pruners by name from `PRUNERS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

# For annotations only: the CLI's parsers import this module, which runs without
# torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch

from ...options import Component, build
from .structure import Structure


class Pruner(Component, ABC):
    name: ClassVar[str]
    # what the pruner reads of each matrix's inputs: None, "sq_norms" (sum over tokens of
    # x_j^2) or "hessian" (also sum x x^T); see pruning/prune.py InputStatistics
    statistics: ClassVar[str | None] = None

    @property
    def needs_calibration(self) -> bool:
        return self.statistics is not None

    def working_bytes(self, d_out: int, d_in: int) -> int:
        """Peak bytes `prune` allocates for one (d_out, d_in) matrix besides W itself (the
        memory plan, memory.py): by default the pruned copy and an fp32 score (4 bytes each
        for an fp32 W) and the int64 indices of the zeroed entries (at most all of them)."""
        return d_out * d_in * (4 + 4 + 8)

    @abstractmethod
    def prune(self, W: torch.Tensor, ratio: float, stats, name: str,
              structure: Structure = None) -> torch.Tensor:
        """W pruned to `ratio` (or to the N:M `structure`), in W's dtype; W is not changed.
        stats: the InputStatistics of W's block (None for a pruner without statistics); name:
        W's matrix name in it."""


PRUNERS: dict[str, type[Pruner]] = {}


def register(cls: type[Pruner]) -> type[Pruner]:
    PRUNERS[cls.name] = cls
    return cls


def make_pruner(name: str | Pruner, **options) -> Pruner:
    """The registered pruner `name` with its arguments from `options` (None = the default);
    a Pruner is returned as it is."""
    return name if isinstance(name, Pruner) else build(PRUNERS, name, "pruner", **options)
