"""Pruners of one weight matrix, one file each, registered by name (base.py)."""

# Importing the pruner modules registers them.
from .base import PRUNERS, Pruner, make_pruner, register
from .magnitude import magnitude_prune
from .sparsegpt import sparsegpt_prune
from .structure import Structure, nm_mask, parse_structure
from .wanda import wanda_prune

__all__ = ["PRUNERS", "Pruner", "Structure", "magnitude_prune", "make_pruner", "nm_mask",
           "parse_structure", "register", "sparsegpt_prune", "wanda_prune"]
