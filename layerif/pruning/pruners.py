"""Unstructured pruning of one weight matrix W (d_out, d_in) at a given ratio (SPEC section 5).

- magnitude: zero the smallest |W| within the matrix.
- wanda (Sun et al., 2023): score |W_ij| * ||X_j||_2 over calibration tokens; zero the lowest
  fraction within each output row.
- sparsegpt (Frantar & Alistarh, 2023): H = (2/N) X^T X, dampened by 0.01 * mean(diag H); the
  upper Cholesky factor of H^-1; columns swept in blocks of 128, the mask of each block chosen by
  w^2 / [H^-1]_jj^2, the OBS update spreading each pruned weight's error over later columns.

N:M (`structure=(N, M)`): in every row, N of each M consecutive input weights are zeroed, the N
with the lowest score of the pruner (|W| for magnitude, |W| * ||X_j|| for Wanda, w^2 / [H^-1]_jj^2
for SparseGPT, chosen group by group as the sweep reaches it, as in the SparseGPT reference);
the ratio is then N/M and the given one is ignored. N:M as in llm-compressor's mask_structure.

All arithmetic is float32 (float64 for SparseGPT's factorisations); W is returned in its dtype.
"""

from __future__ import annotations

import torch

from ..errors import LayerIFError

Structure = tuple[int, int] | None  # (N, M): N zeros in every M consecutive weights of a row


def parse_structure(text: str) -> Structure:
    """ "N:M" -> (N, M) with 0 < N < M; "0:0" or "unstructured" -> None."""
    if text in ("0:0", "unstructured"):
        return None
    try:
        n, m = (int(x) for x in text.split(":"))
    except ValueError:
        raise LayerIFError(f"mask structure {text!r}: use N:M, e.g. 2:4 (N zeros in every M "
                           "consecutive weights of a row).") from None
    if not 0 < n < m:
        raise LayerIFError(f"mask structure {text!r}: need 0 < N < M (e.g. 2:4).")
    return n, m


def _check_groups(d_in: int, structure: tuple[int, int]) -> None:
    if d_in % structure[1]:
        raise LayerIFError(f"a matrix with {d_in} inputs cannot be split into groups of "
                           f"{structure[1]}; use an M that divides every matrix's input size.")


def nm_mask(score: torch.Tensor, structure: tuple[int, int]) -> torch.Tensor:
    """True at the N lowest-scoring entries of every M consecutive columns of each row."""
    n, m = structure
    rows, cols = score.shape
    _check_groups(cols, structure)
    groups = score.reshape(rows, cols // m, m)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, groups.topk(n, dim=2, largest=False).indices, True)
    return mask.reshape(rows, cols)


def _count(n: int, ratio: float) -> int:
    if not 0 <= ratio < 1:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    return int(round(n * ratio))


def magnitude_prune(W: torch.Tensor, ratio: float, structure: Structure = None) -> torch.Tensor:
    k = _count(W.numel(), ratio)
    out = W.contiguous().clone()  # W may be a transposed view (GPT-2's Conv1D)
    if structure:
        out[nm_mask(out.abs().float(), structure)] = 0
    elif k:
        idx = out.abs().flatten().float().topk(k, largest=False).indices
        out.view(-1)[idx] = 0
    return out


def wanda_prune(W: torch.Tensor, ratio: float, input_sq_norms: torch.Tensor,
                structure: Structure = None) -> torch.Tensor:
    """input_sq_norms: (d_in,) sum over calibration tokens of x_j^2."""
    k = _count(W.shape[1], ratio)
    out = W.contiguous().clone()
    score = W.abs().float() * input_sq_norms.float().sqrt()[None, :]
    if structure:
        out[nm_mask(score, structure)] = 0
    elif k:
        idx = score.topk(k, dim=1, largest=False).indices
        out.scatter_(1, idx, 0)
    return out


def sparsegpt_prune(
    W: torch.Tensor, ratio: float, H: torch.Tensor, blocksize: int = 128, percdamp: float = 0.01,
    structure: Structure = None,
) -> torch.Tensor:
    """H: (d_in, d_in) = (2/N) sum over calibration tokens of x x^T."""
    _count(1, ratio)
    d_out, d_in = W.shape
    if structure:  # groups must not straddle a block
        _check_groups(d_in, structure)
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
        k = _count(score.numel(), ratio)
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


PRUNERS = ("magnitude", "wanda", "sparsegpt")
