"""Pruning: block-by-block calibration and Magnitude / Wanda / SparseGPT with per-layer ratios."""

from ..lazy import lazy_exports

# Public name -> its module, imported on first use (they import torch).
_EXPORTS = {
    "CapturedInputs": "calibration",
    "capture_block_inputs": "calibration",
    "run_blocks": "calibration",
    "InputStatistics": "prune",
    "PruningReport": "prune",
    "oriented_weight": "prune",
    "prune_model": "prune",
    "PRUNERS": "pruners",
    "Pruner": "pruners",
    "magnitude_prune": "pruners",
    "make_pruner": "pruners",
    "sparsegpt_prune": "pruners",
    "wanda_prune": "pruners",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
