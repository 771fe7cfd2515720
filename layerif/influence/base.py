"""Estimator interface, registry and arguments.

An estimator turns per-example gradients (seen through `GradientSource`s, see engine.py) into
per-example, per-matrix influences IF_m(k) with DataInf's sign: IF > 0 means up-weighting training
example k raises the validation loss (harmful), IF < 0 lowers it (helpful). Adding an estimator is
one small file: subclass `Estimator`, decorate it with `@register`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..errors import EstimatorError
from ..models import Matrix
from .checkpoint import StepCache
from .engine import GradientSource

MODES = ("auto", "streaming", "cached")


@dataclass
class InfluenceArguments:
    """Options of an influence computation (validated on construction)."""

    estimator: str = "datainf"
    params: str = "all"  # which block matrices: all | attn | mlp
    mode: str = "auto"  # how training gradients are revisited: auto | streaming | cached
    cache_gb: float = 8.0  # memory budget of cached mode; auto picks cached when it fits
    damping: float = 0.1  # lambda_m = damping * mean_i ||g_im||^2 / d_m (DataInf's 0.1)
    max_exact_dim: int = 8192  # the exact estimator refuses matrices with more entries
    batch_size: int = 8
    max_length: int = 256

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise EstimatorError(
                f"unknown estimator {self.estimator!r}; available: {', '.join(ESTIMATORS)}."
            )
        if self.params not in ("all", "attn", "mlp"):
            raise EstimatorError(f"params must be all, attn or mlp, got {self.params!r}.")
        if self.mode not in MODES:
            raise EstimatorError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}.")
        if not self.cache_gb >= 0:
            raise EstimatorError(f"cache_gb must be >= 0, got {self.cache_gb}.")
        if not self.damping > 0:
            raise EstimatorError(f"damping must be > 0, got {self.damping}.")
        if self.batch_size < 1 or self.max_length < 2 or self.max_exact_dim < 1:
            raise EstimatorError(
                "batch_size >= 1, max_length >= 2 and max_exact_dim >= 1 are required."
            )


@dataclass
class MatrixInfluence:
    """values: (n_train, n_matrices) float64, columns in `matrices` order."""

    matrices: list[Matrix]
    values: torch.Tensor
    lambdas: dict[str, float] = field(default_factory=dict)


class Estimator(ABC):
    name: ClassVar[str]
    # How many times the estimator visits the training gradients: with one visit, caching them
    # buys nothing and the streaming source is used.
    train_visits: ClassVar[int] = 1

    def __init__(self, args: InfluenceArguments, steps: StepCache | None = None):
        self.args = args
        # Wrap each costly step as `self.steps("name", lambda: ...)` so a killed run resumes.
        self.steps = steps or StepCache()

    def check(self, matrices: list[Matrix]) -> None:  # noqa: B027 - optional hook
        """Refuse up front (before any pass) what this estimator cannot do."""

    @abstractmethod
    def influence(
        self, matrices: list[Matrix], train: GradientSource, val: GradientSource
    ) -> MatrixInfluence:
        """Per-example, per-matrix influences of the training examples on the mean val loss."""

    @staticmethod
    def stack(matrices: list[Matrix], per_matrix: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([per_matrix[m.name].double().cpu() for m in matrices], dim=1)

    def lambdas(self, matrices: list[Matrix], sq_norms: dict[str, torch.Tensor]) -> dict:
        """DataInf's damping per matrix: lambda_m = damping * mean_i ||g_im||^2 / d_m."""
        return {
            m.name: float(self.args.damping * sq_norms[m.name].double().mean() / m.numel)
            for m in matrices
        }


ESTIMATORS: dict[str, type[Estimator]] = {}


def register(cls: type[Estimator]) -> type[Estimator]:
    ESTIMATORS[cls.name] = cls
    return cls


def get_estimator(args: InfluenceArguments, steps: StepCache | None = None) -> Estimator:
    return ESTIMATORS[args.estimator](args, steps)
