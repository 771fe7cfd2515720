"""Sparsity allocation methods, one file each, registered by name (base.py)."""

# Importing the method modules registers them.
from . import (  # noqa: F401
    alphapruning,
    atp,
    dlp,
    layerif,
    lsa,
    owl,
    search,
    sensitivity,
    uniform,
)
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
