"""Exact per-matrix influence: H_m = (1/n) sum_i g_im g_im^T + lambda_m I inverted directly.

The damped empirical Fisher of each matrix is formed and solved in float64 (d_m x d_m), so it is
feasible only for tiny models; matrices with more than `max_exact_dim` entries are refused before
any pass. lambda_m is DataInf's, so the two estimators differ only in the inverse.
"""

from __future__ import annotations

# torch is imported inside the functions that use it: the CLI's parsers import
# this module and must not wait for torch (tests/test_startup.py).
from ..errors import EstimatorError
from .base import Estimator, MatrixInfluence, register


@register
class Exact(Estimator):
    name = "exact"
    train_visits = 1

    def check(self, matrices) -> None:
        too_big = [m for m in matrices if m.numel > self.args.max_exact_dim]
        if too_big:
            worst = max(too_big, key=lambda m: m.numel)
            raise EstimatorError(
                f"the exact estimator inverts a d_m x d_m matrix per weight matrix; "
                f"{len(too_big)} matrices exceed max_exact_dim={self.args.max_exact_dim} "
                f"entries (largest: {worst.name}, {worst.d_out}x{worst.d_in} = {worst.numel}, "
                f"a {worst.numel}^2 float64 matrix of {worst.numel**2 * 8 / 2**30:.1f} GiB). "
                "Use --estimator datainf, --params attn/mlp, or raise --max-exact-dim."
            )

    def state_bytes(self, matrices, n_train) -> dict[str, int]:
        params = sum(m.numel for m in matrices)
        largest = max((m.numel for m in matrices), default=0)
        return {"mean validation gradient (fp32)": 4 * params,
                "per-example gradients (fp32)": 4 * n_train * params,
                "one matrix's H_m and its fp64 gradients": 8 * (largest**2 + n_train * largest)}

    def influence(self, matrices, train, val) -> MatrixInfluence:
        import torch

        v = self.steps("val_mean_gradient", lambda: val.mean_gradient("mean gradient"))
        G = train.per_example(lambda m, g: g.dense.flatten(1), "per-example gradients")
        sq_norms = {name: g.double().square().sum(1) for name, g in G.items()}
        zero = self.zero_gradient(matrices, sq_norms)
        lambdas = self.lambdas(matrices, sq_norms, zero)
        columns = []
        for m in matrices:
            Gm = G.pop(m.name).double()  # (n, d_m)
            if m.name in zero:  # H = 0 is singular; the influence through m is exactly 0
                columns.append(torch.zeros(train.n, dtype=torch.float64, device=Gm.device))
                continue
            H = Gm.T @ Gm / train.n
            H.diagonal().add_(lambdas[m.name])
            r = torch.linalg.solve(H, v[m.name].double().flatten())
            columns.append(-(Gm @ r))
        return MatrixInfluence(matrices, torch.stack(columns, dim=1).cpu(), lambdas, zero)
