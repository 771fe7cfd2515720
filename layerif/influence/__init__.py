"""Influence estimators over one shared per-example-statistics engine."""

# Importing the estimator modules registers them (they import torch only where they compute).
from ..lazy import lazy_exports
from . import datainf, exact, tracin  # noqa: F401
from .aggregate import AGGREGATES, aggregate, all_aggregates, spearman, spearman_per_layer
from .base import ESTIMATORS, Estimator, InfluenceArguments, MatrixInfluence, register

# The engine imports torch: its names are imported on first use.
_ENGINE = {name: "engine" for name in ("CachedSource", "ExampleGradients", "GradientEngine",
                                       "GradientSource", "StreamingSource", "cache_bytes")}

__all__ = [
    "AGGREGATES",
    "ESTIMATORS",
    "CachedSource",
    "Estimator",
    "ExampleGradients",
    "GradientEngine",
    "GradientSource",
    "InfluenceArguments",
    "MatrixInfluence",
    "StreamingSource",
    "aggregate",
    "all_aggregates",
    "cache_bytes",
    "register",
    "spearman",
    "spearman_per_layer",
]
__getattr__, _ = lazy_exports(__name__, _ENGINE)
