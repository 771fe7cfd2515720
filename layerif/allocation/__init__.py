"""Mapping layer scores to per-layer budgets: experts for LoRA-MoE, sparsity ratios for pruning."""

from .alpha import block_alphas, pl_alpha_hill
from .experts import (
    MOLA_PATTERNS,
    AllocationError,
    alphalora_experts,
    largest_remainder,
    layerif_experts,
    mola_experts,
    uniform_experts,
)
from .sparsity import layerif_sparsity, scale_to_target, smooth, uniform_sparsity

__all__ = [
    "MOLA_PATTERNS",
    "AllocationError",
    "alphalora_experts",
    "block_alphas",
    "largest_remainder",
    "layerif_experts",
    "layerif_sparsity",
    "mola_experts",
    "pl_alpha_hill",
    "scale_to_target",
    "smooth",
    "uniform_experts",
    "uniform_sparsity",
]
