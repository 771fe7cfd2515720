"""Estimator interface, registry and arguments.

An estimator turns per-example gradients (seen through `GradientSource`s, see engine.py) into
per-example, per-matrix influences IF_m(k) with DataInf's sign: IF > 0 means up-weighting training
example k raises the validation loss (harmful), IF < 0 lowers it (helpful). Adding an estimator is
one small file: subclass `Estimator`, decorate it with `@register`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

# Imported inside the functions that use them: the CLI's parsers import this module
# and must not wait for torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch

    from ..models import Matrix
    from .checkpoint import StepCache
    from .engine import GradientSource

from ..errors import EstimatorError

log = logging.getLogger(__name__)
MODES = ("auto", "streaming", "cached")


@dataclass
class InfluenceArguments:
    """Options of an influence computation (validated on construction)."""

    estimator: str = "datainf"
    params: str = "all"  # which block matrices: all | attn | mlp
    mode: str = "auto"  # how training gradients are revisited: auto | streaming | cached
    # memory budget of cached mode in GiB; None: auto picks cached when the whole run's memory
    # plan with the cache fits the memory free on the device (memory.py)
    cache_gb: float | None = None
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
        if self.cache_gb is not None and not self.cache_gb >= 0:
            raise EstimatorError(f"cache_gb must be >= 0, got {self.cache_gb}.")
        if not self.damping > 0:
            raise EstimatorError(f"damping must be > 0, got {self.damping}.")
        if self.batch_size < 1 or self.max_length < 2 or self.max_exact_dim < 1:
            raise EstimatorError(
                "batch_size >= 1, max_length >= 2 and max_exact_dim >= 1 are required."
            )


@dataclass
class MatrixInfluence:
    """values: (n_train, n_matrices) float64, columns in `matrices` order. zero_gradient: the
    matrices whose gradient is zero for every training example (their column is 0)."""

    matrices: list[Matrix]
    values: torch.Tensor
    lambdas: dict[str, float] = field(default_factory=dict)
    zero_gradient: list[str] = field(default_factory=list)


class Estimator(ABC):
    name: ClassVar[str]
    # How many times the estimator visits the training gradients: with one visit, caching them
    # buys nothing and the streaming source is used.
    train_visits: ClassVar[int] = 1

    def __init__(self, args: InfluenceArguments, steps: StepCache | None = None):
        from .checkpoint import StepCache

        self.args = args
        # Wrap each costly step as `self.steps("name", lambda: ...)` so a killed run resumes.
        self.steps = steps or StepCache()

    def check(self, matrices: list[Matrix]) -> None:  # noqa: B027 - optional hook
        """Refuse up front (before any pass) what this estimator cannot do."""

    def state_bytes(self, matrices: list[Matrix], n_train: int) -> dict[str, int]:
        """What the estimator holds besides the passes, by name, in bytes (memory.py's plan):
        by default one fp32 mean validation gradient per matrix."""
        return {"mean validation gradient (fp32)": 4 * sum(m.numel for m in matrices)}

    @abstractmethod
    def influence(
        self, matrices: list[Matrix], train: GradientSource, val: GradientSource
    ) -> MatrixInfluence:
        """Per-example, per-matrix influences of the training examples on the mean val loss."""

    @staticmethod
    def stack(matrices: list[Matrix], per_matrix: dict[str, torch.Tensor]) -> torch.Tensor:
        import torch

        return torch.stack([per_matrix[m.name].double().cpu() for m in matrices], dim=1)

    def lambdas(self, matrices: list[Matrix], sq_norms: dict[str, torch.Tensor],
                zero: list[str] = ()) -> dict:
        """DataInf's damping per matrix: lambda_m = damping * mean_i ||g_im||^2 / d_m (0 for
        the `zero` matrices, see zero_gradient)."""
        return {
            m.name: 0.0 if m.name in zero else
            float(self.args.damping * sq_norms[m.name].double().mean() / m.numel)
            for m in matrices
        }

    @staticmethod
    def zero_gradient(matrices: list[Matrix], sq_norms: dict[str, torch.Tensor]) -> list[str]:
        """Matrices whose gradient is zero for every training example, reported now (before the
        remaining passes). Their lambda_m is 0, so DataInf's c = 0/0: such a matrix contributes
        exactly 0 instead (g_km = 0 for every k makes -g_km . r_m = 0 whatever r_m is). If every
        tracked matrix is zero there is nothing to score, which is an error.

        Zero means at the rounding level of the model's dtype: a mean ||g_m||^2 at most eps^2
        times the largest matrix's. A gradient that is 0 in exact arithmetic can come out of a
        fused attention backward as rounding noise (transformers 5.23's SDPA on a tiny fp32
        Llama: 4e-16 for q/k against 0.1 to 8 for the other matrices), and a lambda_m made of
        that noise would turn noise into influence."""
        import torch

        means = {m.name: float(sq_norms[m.name].double().mean()) for m in matrices}
        largest = max(means.values(), default=0.0)
        zero = [m.name for m in matrices
                if means[m.name] <= torch.finfo(m.module.weight.dtype).eps ** 2 * largest]
        cause = ("each example's counted tokens are predicted from its first position only, so "
                 "attention queries and keys get no gradient: give longer examples (a longer "
                 "completion, or a larger --max-length)")
        if zero and len(zero) == len(matrices):
            raise EstimatorError(
                f"every one of the {len(matrices)} tracked matrices has a zero gradient for every "
                f"training example, so every influence would be 0/0; likely {cause}.")
        if zero:
            log.warning(
                "%d of %d matrices have a zero gradient for every training example (%s%s); they "
                "contribute 0 to their layer's influence. Likely %s.", len(zero), len(matrices),
                ", ".join(zero[:3]), ", ..." if len(zero) > 3 else "", cause)
        return zero


ESTIMATORS: dict[str, type[Estimator]] = {}


def register(cls: type[Estimator]) -> type[Estimator]:
    ESTIMATORS[cls.name] = cls
    return cls


def get_estimator(args: InfluenceArguments, steps: StepCache | None = None) -> Estimator:
    return ESTIMATORS[args.estimator](args, steps)
