"""Mapping layer scores to per-layer budgets: experts for LoRA-MoE, sparsity ratios for pruning."""

from .alpha import block_alphas, pl_alpha_hill
from .expert_methods import EXPERT_METHODS, ExpertMethod, make_expert_method
from .experts import (
    MOLA_PATTERNS,
    AllocationError,
    alphalora_experts,
    largest_remainder,
    layerif_experts,
    mola_experts,
    uniform_experts,
)
from .sparsity import mapped_sparsity, scale_to_target, smooth
from .sparsity_methods import SPARSITY_METHODS, SparsityMethod, make_sparsity_method
from .sparsity_methods.atp import atp_sparsity
from .sparsity_methods.dlp import dlp_sparsity
from .sparsity_methods.layerif import layerif_sparsity
from .sparsity_methods.owl import owl_sparsity

__all__ = [
    "MOLA_PATTERNS",
    "SPARSITY_METHODS",
    "AllocationError",
    "EXPERT_METHODS",
    "ExpertMethod",
    "SparsityMethod",
    "alphalora_experts",
    "atp_sparsity",
    "block_alphas",
    "dlp_sparsity",
    "largest_remainder",
    "layerif_experts",
    "layerif_sparsity",
    "make_expert_method",
    "make_sparsity_method",
    "mapped_sparsity",
    "mola_experts",
    "owl_sparsity",
    "pl_alpha_hill",
    "scale_to_target",
    "smooth",
    "uniform_experts",
]
