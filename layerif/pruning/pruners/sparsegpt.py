"""SparseGPT (Frantar & Alistarh, ICML 2023): H = (2/N) X^T X over calibration tokens, dampened
by `damping` x mean(diag H); the upper Cholesky factor of H^-1; columns swept in blocks of
`blocksize`, the mask of each block chosen by w^2 / [H^-1]_jj^2, the OBS update spreading each
pruned weight's error over later columns. N:M: each group's mask is chosen from the updated
weights as the sweep reaches it, as in the reference. Factorisations in float64; W is returned
in its dtype."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

# Imported inside the functions that use them: the CLI's parsers import this module
# and must not wait for torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch

from ...errors import LayerIFError
from ...options import option
from .base import Pruner, register
from .structure import Structure, check_groups, count, nm_mask


@dataclass
class SparseGPTArguments:
    blocksize: int = option(128, "--sparsegpt-blocksize", "SparseGPT: columns per sweep block "
                            "(default 128, the reference's)")
    damping: float = option(0.01, "--sparsegpt-damping", "SparseGPT: fraction of mean(diag H) "
                            "added to H's diagonal (default 0.01)")

    def __post_init__(self) -> None:
        if self.blocksize < 1 or not self.damping > 0:
            raise LayerIFError("SparseGPT needs blocksize >= 1 and damping > 0.")


def sparsegpt_prune(
    W: torch.Tensor, ratio: float, H: torch.Tensor, blocksize: int = 128, percdamp: float = 0.01,
    structure: Structure = None,
) -> torch.Tensor:
    """H: (d_in, d_in) = (2/N) sum over calibration tokens of x x^T."""
    import torch

    count(1, ratio)
    d_out, d_in = W.shape
    if structure:  # groups must not straddle a block
        check_groups(d_in, structure)
        blocksize -= blocksize % structure[1]
    Wf = W.detach().to(torch.float64).contiguous().clone()
    H = H.detach().to(torch.float64).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    Wf[:, dead] = 0
    H.diagonal().add_(percdamp * torch.mean(torch.diag(H)))
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    for i1 in range(0, d_in, blocksize):
        i2 = min(i1 + blocksize, d_in)
        W1 = Wf[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        score = W1**2 / torch.diag(Hinv1)[None, :] ** 2
        mask = torch.zeros(W1.shape, dtype=torch.bool, device=W1.device)
        k = count(score.numel(), ratio)
        if k and not structure:
            mask.view(-1)[score.flatten().topk(k, largest=False).indices] = True
        for i in range(i2 - i1):
            if structure and i % structure[1] == 0:  # this group's mask, from the updated W1
                group = slice(i, i + structure[1])
                mask[:, group] = nm_mask(W1[:, group] ** 2 / torch.diag(Hinv1)[None, group] ** 2,
                                         structure)
            w = W1[:, i]
            d = Hinv1[i, i]
            q = w.clone()
            q[mask[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]
            Err1[:, i] = err
        Wf[:, i1:i2] = Q1
        Wf[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Wf.to(W.dtype)


@register
class SparseGPT(Pruner):
    name = "sparsegpt"
    statistics = "hessian"
    Arguments = SparseGPTArguments

    def working_bytes(self, d_out, d_in):
        # float64: W, its sweep copies, H, its Cholesky factor and H^-1 (sparsegpt_prune)
        return 8 * (2 * d_out * d_in + 3 * d_in * d_in)

    def prune(self, W, ratio, stats, name, structure=None):
        return sparsegpt_prune(W, ratio, stats.hessian(name), self.args.blocksize,
                               self.args.damping, structure)
