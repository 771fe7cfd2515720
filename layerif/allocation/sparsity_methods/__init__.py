"""Sparsity allocation methods, one file each, registered by name (base.py)."""

# Importing the method modules registers them.
from . import alphapruning, atp, dlp, layerif, lsa, owl, sensitivity, uniform  # noqa: F401
from .base import (
    NEEDS,
    SPARSITY_METHODS,
    SparsityInputs,
    SparsityMethod,
    make_sparsity_method,
    register,
)

__all__ = ["NEEDS", "SPARSITY_METHODS", "SparsityInputs", "SparsityMethod",
           "make_sparsity_method", "register"]
