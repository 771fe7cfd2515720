"""Mask structures shared by the pruners: N:M groups and the count of a ratio.

N:M (`structure=(N, M)`): in every row, N of each M consecutive input weights are zeroed, the N
with the lowest score of the pruner; the ratio is then N/M and the given one is ignored. N:M as
in llm-compressor's mask_structure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Imported inside the functions that use them: the CLI's parsers import this module
# and must not wait for torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch

from ...errors import LayerIFError

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


def check_groups(d_in: int, structure: tuple[int, int]) -> None:
    if d_in % structure[1]:
        raise LayerIFError(f"a matrix with {d_in} inputs cannot be split into groups of "
                           f"{structure[1]}; use an M that divides every matrix's input size.")


def nm_mask(score: torch.Tensor, structure: tuple[int, int]) -> torch.Tensor:
    """True at the N lowest-scoring entries of every M consecutive columns of each row."""
    import torch

    n, m = structure
    rows, cols = score.shape
    check_groups(cols, structure)
    groups = score.reshape(rows, cols // m, m)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, groups.topk(n, dim=2, largest=False).indices, True)
    return mask.reshape(rows, cols)


def count(n: int, ratio: float) -> int:
    if not 0 <= ratio < 1:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    return int(round(n * ratio))
