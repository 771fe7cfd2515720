"""Per-layer LoRA ranks: SPEC section 2's expert formula in rank form.

Ranks are counted in units of `multiple_of`; every layer gets ceil(min_rank / multiple_of) units
and the rest of the budget is split by the method's weights, floor + minimum, the leftover to the
largest remainders. So the total rank over layers is exactly the budget, every layer is >=
min_rank and a multiple of multiple_of, and with min_rank = multiple_of = 1 the ranks are the
expert counts of the same budget (S = [-5,-4,-3,3,4,5], budget 10, beta 2 -> [3,2,2,1,1,1]).
Every adapted matrix of a layer takes that layer's rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .experts import AllocationError, alphalora_weights, largest_remainder, layerif_weights


def _units(n_layers: int, budget: int, min_rank: int, multiple_of: int) -> tuple[int, int]:
    """(budget in units, units every layer gets first), with the budget checked."""
    if min_rank < 1 or multiple_of < 1:
        raise AllocationError(f"need --min-rank >= 1 and --multiple-of >= 1, got {min_rank} "
                              f"and {multiple_of}.")
    if int(budget) != budget or budget % multiple_of:
        raise AllocationError(f"budget {budget} is not a multiple of --multiple-of "
                              f"{multiple_of}; every layer's rank is, so their total must be.")
    floor_units = math.ceil(min_rank / multiple_of)
    need = n_layers * floor_units * multiple_of
    if budget < need:
        raise AllocationError(
            f"budget {budget} cannot give each of the {n_layers} layers a rank >= {min_rank} "
            f"(a multiple of {multiple_of}); use --budget >= {need}.")
    return int(budget) // multiple_of, floor_units


def allocate_by_weights(weights: Sequence[float], budget: int, min_rank: int = 1,
                        multiple_of: int = 1, priority: Sequence[float] | None = None,
                        ) -> np.ndarray:
    """Ranks (one per layer) summing to `budget`, split in proportion to `weights`."""
    units, floor_units = _units(len(weights), budget, min_rank, multiple_of)
    return largest_remainder(weights, units, priority, minimum=floor_units) * multiple_of


def layerif_ranks(scores: Sequence[float], budget: int, beta: float = 2.0, min_rank: int = 1,
                  multiple_of: int = 1) -> np.ndarray:
    """Lower score (better trained under DataInf's sign: IF < 0 helpful) -> higher rank."""
    weights, priority = layerif_weights(scores, beta)
    return allocate_by_weights(weights, budget, min_rank, multiple_of, priority)


def alphalora_ranks(alphas: Sequence[float], budget: int, beta: float = 2.0, min_rank: int = 1,
                    multiple_of: int = 1) -> np.ndarray:
    """AlphaLoRA-style: rank ~ alpha_l ** beta (a higher PL_Alpha_Hill gets more)."""
    return allocate_by_weights(alphalora_weights(alphas, beta), budget, min_rank, multiple_of)


def uniform_ranks(n_layers: int, budget: int, min_rank: int = 1,
                  multiple_of: int = 1) -> np.ndarray:
    """The budget split as evenly as the multiple allows (earlier layers take what is left)."""
    return allocate_by_weights(np.ones(n_layers), budget, min_rank, multiple_of)

