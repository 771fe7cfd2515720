"""Wanda (Sun et al., ICLR 2024): score |W_ij| * ||X_j||_2 over calibration tokens; zero the
lowest fraction within each output row (N:M: within each group of M of a row)."""

from __future__ import annotations

from typing import TYPE_CHECKING

# For annotations only: the CLI's parsers import this module, which runs without
# torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch

from .base import Pruner, register
from .structure import Structure, count, nm_mask


def wanda_prune(W: torch.Tensor, ratio: float, input_sq_norms: torch.Tensor,
                structure: Structure = None) -> torch.Tensor:
    """input_sq_norms: (d_in,) sum over calibration tokens of x_j^2."""
    k = count(W.shape[1], ratio)
    out = W.contiguous().clone()
    score = W.abs().float() * input_sq_norms.float().sqrt()[None, :]
    if structure:
        out[nm_mask(score, structure)] = 0
    elif k:
        idx = score.topk(k, dim=1, largest=False).indices
        out.scatter_(1, idx, 0)
    return out


@register
class Wanda(Pruner):
    name = "wanda"
    statistics = "sq_norms"

    def prune(self, W, ratio, stats, name, structure=None):
        return wanda_prune(W, ratio, stats.sq_norms[name], structure)
