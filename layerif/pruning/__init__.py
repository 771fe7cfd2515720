"""Pruning: block-by-block calibration and Magnitude / Wanda / SparseGPT with per-layer ratios."""

from .calibration import CapturedInputs, capture_block_inputs, run_blocks
from .prune import InputStatistics, PruningReport, oriented_weight, prune_model
from .pruners import PRUNERS, Pruner, magnitude_prune, make_pruner, sparsegpt_prune, wanda_prune

__all__ = [
    "PRUNERS",
    "CapturedInputs",
    "InputStatistics",
    "Pruner",
    "PruningReport",
    "capture_block_inputs",
    "magnitude_prune",
    "make_pruner",
    "oriented_weight",
    "prune_model",
    "run_blocks",
    "sparsegpt_prune",
    "wanda_prune",
]
