"""TracIn (Pruthi et al., 2020), one checkpoint, Hessian-free: IF_m(k) = -g_km . v_m."""

from __future__ import annotations

from .base import Estimator, MatrixInfluence, register


@register
class TracIn(Estimator):
    name = "tracin"
    train_visits = 1

    def influence(self, matrices, train, val) -> MatrixInfluence:
        v = self.steps("val_mean_gradient", lambda: val.mean_gradient("mean gradient"))
        dots = train.per_example(lambda m, g: g.dot(v[m.name]), "dots")
        return MatrixInfluence(matrices, -self.stack(matrices, dots))
