"""Magnitude: zero the smallest |W| within the matrix (N:M: within each group of M)."""

from __future__ import annotations

from typing import TYPE_CHECKING

# For annotations only: the CLI's parsers import this module, which runs without
# torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch

from .base import Pruner, register
from .structure import Structure, count, nm_mask


def magnitude_prune(W: torch.Tensor, ratio: float, structure: Structure = None) -> torch.Tensor:
    k = count(W.numel(), ratio)
    out = W.contiguous().clone()  # W may be a transposed view (GPT-2's Conv1D)
    if structure:
        out[nm_mask(out.abs().float(), structure)] = 0
    elif k:
        idx = out.abs().flatten().float().topk(k, largest=False).indices
        out.view(-1)[idx] = 0
    return out


@register
class Magnitude(Pruner):
    name = "magnitude"

    def prune(self, W, ratio, stats, name, structure=None):
        return magnitude_prune(W, ratio, structure)
