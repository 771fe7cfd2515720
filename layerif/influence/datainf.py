"""DataInf (Kwon et al., ICLR 2024) with a per-matrix block-diagonal Hessian (SPEC section 1).

    lambda_m = 0.1 * mean_i ||g_im||^2 / d_m
    c_im     = (g_im . v_m) / (lambda_m + ||g_im||^2)
    r_m      = (v_m - (1/n) sum_i c_im g_im) / lambda_m          ~ H_m^-1 v_m
    IF_m(k)  = -g_km . r_m = -(g_km . v_m - (1/n) g_km . u_m) / lambda_m,  u_m = sum_i c_im g_im

Three visits of the training gradients: (dots with v, norms) -> (accumulate u) -> (dots with u).
With a streaming source that is 1 validation + 3 training passes in memory independent of n; with
a cached source it is 1 + 1 passes.
"""

from __future__ import annotations

# torch is imported inside the functions that use it: the CLI's parsers import
# this module and must not wait for torch (tests/test_startup.py).
from .base import Estimator, MatrixInfluence, register


@register
class DataInf(Estimator):
    name = "datainf"
    train_visits = 3

    def state_bytes(self, matrices, n_train) -> dict[str, int]:
        # v_m and u_m are alive together during the weighted sum
        return {"v_m and u_m (fp32)": 2 * 4 * sum(m.numel for m in matrices)}

    def influence(self, matrices, train, val) -> MatrixInfluence:
        import torch

        v = self.steps("val_mean_gradient", lambda: val.mean_gradient("mean gradient"))
        stats = self.steps("dots_and_norms", lambda: train.per_example(
            lambda m, g: torch.stack([g.dot(v[m.name]), g.sq_norm()], dim=1),
            "1/3 dots and norms",
        ))
        dots = {name: s[:, 0] for name, s in stats.items()}
        sq_norms = {name: s[:, 1] for name, s in stats.items()}
        zero = self.zero_gradient(matrices, sq_norms)
        lambdas = self.lambdas(matrices, sq_norms, zero)
        # A zero-gradient matrix (lambda 0) adds nothing to u and its influence is exactly 0.
        c = {m.name: torch.zeros_like(dots[m.name]) if m.name in zero else
             dots[m.name] / (lambdas[m.name] + sq_norms[m.name]) for m in matrices}
        u = self.steps("weighted_sum", lambda: train.weighted_sum(c, "2/3 weighted sum"))
        v.clear()  # free n_matrices x d_m floats before the last visit
        gu = self.steps("dots_with_u", lambda: train.per_example(
            lambda m, g: g.dot(u[m.name]), "3/3 dots with u"))
        values = torch.stack(
            [
                torch.zeros_like(dots[m.name], dtype=torch.float64) if m.name in zero else
                -(dots[m.name].double() - gu[m.name].double() / train.n) / lambdas[m.name]
                for m in matrices
            ],
            dim=1,
        ).cpu()
        return MatrixInfluence(matrices, values, lambdas, zero)
