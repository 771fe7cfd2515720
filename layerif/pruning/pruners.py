"""Unstructured pruning of one weight matrix W (d_out, d_in) at a given ratio (SPEC section 5).

- magnitude: zero the smallest |W| within the matrix.
- wanda (Sun et al., 2023): score |W_ij| * ||X_j||_2 over calibration tokens; zero the lowest
  fraction within each output row.
- sparsegpt (Frantar & Alistarh, 2023): H = (2/N) X^T X, dampened by 0.01 * mean(diag H); the
  upper Cholesky factor of H^-1; columns swept in blocks of 128, the mask of each block chosen by
  w^2 / [H^-1]_jj^2, the OBS update spreading each pruned weight's error over later columns.

All arithmetic is float32 (float64 for SparseGPT's factorisations); W is returned in its dtype.
"""

from __future__ import annotations

import torch


def _count(n: int, ratio: float) -> int:
    if not 0 <= ratio < 1:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    return int(round(n * ratio))


def magnitude_prune(W: torch.Tensor, ratio: float) -> torch.Tensor:
    k = _count(W.numel(), ratio)
    out = W.contiguous().clone()  # W may be a transposed view (GPT-2's Conv1D)
    if k:
        idx = out.abs().flatten().float().topk(k, largest=False).indices
        out.view(-1)[idx] = 0
    return out


def wanda_prune(W: torch.Tensor, ratio: float, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """input_sq_norms: (d_in,) sum over calibration tokens of x_j^2."""
    k = _count(W.shape[1], ratio)
    out = W.contiguous().clone()
    if k:
        score = W.abs().float() * input_sq_norms.float().sqrt()[None, :]
        idx = score.topk(k, dim=1, largest=False).indices
        out.scatter_(1, idx, 0)
    return out


def sparsegpt_prune(
    W: torch.Tensor, ratio: float, H: torch.Tensor, blocksize: int = 128, percdamp: float = 0.01
) -> torch.Tensor:
    """H: (d_in, d_in) = (2/N) sum over calibration tokens of x x^T."""
    _count(1, ratio)
    d_out, d_in = W.shape
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
        k = _count(score.numel(), ratio)
        if k:
            mask.view(-1)[score.flatten().topk(k, largest=False).indices] = True
        for i in range(i2 - i1):
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


PRUNERS = ("magnitude", "wanda", "sparsegpt")
