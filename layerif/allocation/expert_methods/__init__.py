"""Expert (and rank) allocation methods, one file each, registered by name (base.py)."""

# Importing the method modules registers them.
from . import layerif, uniform, mola, alphalora  # noqa: F401, I001 (registration order)
from .base import (
    EXPERT_METHODS,
    ExpertInputs,
    ExpertMethod,
    make_expert_method,
    make_rank_method,
    rank_methods,
    register,
)

__all__ = ["EXPERT_METHODS", "ExpertInputs", "ExpertMethod", "make_expert_method",
           "make_rank_method", "rank_methods", "register"]
