"""The shared engine: batched passes that yield every tracked matrix's per-example gradients.

For a linear layer y_t = W a_t with output gradients d_t, example b's gradient is
    g_b = sum_t d_bt a_bt^T = D_b^T A_b        (d_out x d_in)
so one batched forward/backward pass gives all per-example gradients of all matrices in factored
form (A, D), without a batch-size-1 loop and without one pass per layer. Forward hooks keep each
matrix's input A; tensor hooks on its output receive D during backward and hand
`ExampleGradients(A, D)` to a callback right away, so only one matrix's statistics are alive at a
time. Model parameters are frozen during a pass (autograd then skips all weight-gradient GEMMs;
the statistics are computed from A and D instead), and all statistics are fp32 whatever the
model's dtype.

Sources wrap the engine for estimators:
- `StreamingSource`: every `for_each` is one pass over the data (memory independent of n).
- `CachedSource`: the first `for_each` runs the pass and keeps each batch's gradients in their
  cheaper form (factors, or the dense matrix when that is smaller); later calls replay them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.encode import Batch, batch_losses
from ..errors import NonFiniteGradientError
from ..models import Matrix
from .distributed import DataParallel

BYTES_FP32 = 4


class ExampleGradients:
    """Per-example gradients of one matrix for one batch.

    Factored: A (B, T, d_in) inputs and D (B, T, d_out) output gradients, zero at pads, so that
    g_b = D_b^T A_b. Or dense: G (B, d_out, d_in). All fp32.
    """

    def __init__(
        self,
        A: torch.Tensor | None = None,
        D: torch.Tensor | None = None,
        G: torch.Tensor | None = None,
    ):
        if G is None and (A is None or D is None):
            raise ValueError("ExampleGradients needs A and D, or G")
        self.A, self.D = A, D
        if G is not None:
            self.__dict__["dense"] = G

    @cached_property
    def dense(self) -> torch.Tensor:
        """(B, d_out, d_in): the materialised per-example gradients."""
        return torch.bmm(self.D.transpose(1, 2), self.A)

    @property
    def device(self) -> torch.device:
        return (self.A if self.A is not None else self.dense).device

    def _has_dense(self) -> bool:
        return "dense" in self.__dict__

    def _factors_cheaper(self) -> bool:
        """True when T*(d_in + d_out) < d_in*d_out: factors are smaller than G (and the Gram-form
        norm costs less than materialising G)."""
        _, T, d_in = self.A.shape
        d_out = self.D.shape[-1]
        return T * (d_in + d_out) < d_in * d_out

    def dot(self, V: torch.Tensor) -> torch.Tensor:
        """(B,): g_b . V = sum_t d_bt^T V a_bt for a (d_out, d_in) matrix V."""
        if self._has_dense() or self.A is None:
            # one matrix-vector product over the flattened gradients (an einsum here was ~8x
            # slower on CPU, measured on SmolLM2's MLP shapes)
            return self.dense.flatten(1) @ V.reshape(-1)
        # Same FLOPs as materialising G, but one large GEMM instead of B thin ones: ~5x faster
        # on CPU (measured on SmolLM2).
        return ((self.D @ V) * self.A).sum(dim=(1, 2))

    def sq_norm(self) -> torch.Tensor:
        """(B,): ||g_b||^2, from G or as sum_{t,s} (a_t . a_s)(d_t . d_s) ("ghost norm")."""
        if self._has_dense() or self.A is None or not self._factors_cheaper():
            return self.dense.square().sum(dim=(1, 2))
        gram_a = torch.bmm(self.A, self.A.transpose(1, 2))
        gram_d = torch.bmm(self.D, self.D.transpose(1, 2))
        return (gram_a * gram_d).sum(dim=(1, 2))

    def weighted_sum(self, c: torch.Tensor) -> torch.Tensor:
        """(d_out, d_in): sum_b c_b g_b, one GEMM over all tokens when factored."""
        if self._has_dense() or self.A is None:
            G = self.dense
            return (c.to(G.dtype) @ G.flatten(1)).view(G.shape[1:])
        Dc = (self.D * c[:, None, None]).flatten(0, 1)
        return Dc.T @ self.A.flatten(0, 1)

    def compact(self) -> ExampleGradients:
        """The smaller representation to keep in a cache: the factors, or G."""
        if self.A is None or self._factors_cheaper():
            return self if self.A is None else ExampleGradients(self.A, self.D)
        return ExampleGradients(G=self.dense)


Callback = Callable[[Matrix, ExampleGradients, torch.Tensor], None]


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class GradientEngine:
    """Batched forward/backward passes handing per-example gradients of `matrices` to callbacks."""

    def __init__(self, model: nn.Module, matrices: Sequence[Matrix], progress: bool = True):
        self.model = model
        self.matrices = list(matrices)
        self.progress = progress
        self.device = next(model.parameters()).device

    def run(self, batches: Sequence[Batch], callback: Callback, desc: str) -> None:
        """One pass over `batches`; `callback(matrix, grads, example_indices)` for every matrix."""
        with _frozen(self.model), self._hooks(callback) as state:
            for batch in tqdm(batches, desc=desc, unit="batch", disable=not self.progress,
                              leave=False):
                self._run_batch(batch.to(self.device), state)

    def _run_batch(self, batch: Batch, state: dict) -> None:
        state["batch"] = batch
        state["inputs"] = {}
        state["pad_mask"] = batch.attention_mask[:, :, None].float()
        with torch.enable_grad():
            losses = batch_losses(self.model, batch)
            bad = ~torch.isfinite(losses)
            if bad.any():
                names = [o for o, b in zip(batch.origins, bad.tolist(), strict=True) if b]
                raise NonFiniteGradientError(
                    f"non-finite loss for {', '.join(names)}; check these examples and the "
                    "model's dtype (fp32 is the safe choice)."
                )
            # Examples are independent, so the gradient of the sum w.r.t. example b's activations
            # is the gradient of example b's own mean loss.
            losses.sum().backward()
        state["inputs"] = {}

    @contextlib.contextmanager
    def _hooks(self, callback: Callback) -> Iterator[dict]:
        state: dict = {}
        handles = []

        def make_input_requires_grad(_module, _args, output):
            # Parameters are frozen, so start the graph at the embeddings' output.
            return output.requires_grad_(True) if not output.requires_grad else output

        handles.append(
            self.model.get_input_embeddings().register_forward_hook(make_input_requires_grad)
        )

        for matrix in self.matrices:

            def forward_hook(_module, args, output, matrix=matrix):
                x = args[0]
                # q/k/v (and gate/up) share one input tensor: convert it to fp32 once. The dict
                # keeps x itself alive for the batch, not only its fp32 copy: with frozen weights
                # autograd does not hold x, and a bf16 x freed after its layer could hand its
                # address to the next layer's input, which would then find the wrong A here.
                key = (x.data_ptr(), tuple(x.shape), x.stride())
                held = state["inputs"].get(key)
                if held is None:
                    held = (x, x.detach().to(_stat_dtype(x)))
                    state["inputs"][key] = held
                A = held[1]

                def grad_hook(grad, matrix=matrix, A=A):
                    D = grad.detach().to(A.dtype) * state["pad_mask"].to(A.dtype)
                    _check_finite(D, matrix, state["batch"])
                    callback(matrix, ExampleGradients(A, D), state["batch"].indices)

                output.register_hook(grad_hook)

            handles.append(matrix.module.register_forward_hook(forward_hook))
        try:
            yield state
        finally:
            for h in handles:
                h.remove()


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    """Statistics are fp32 for fp32/bf16/fp16 models and fp64 for an fp64 model (the oracle
    tests run one, so that only the engine's own arithmetic is compared)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_finite(D: torch.Tensor, matrix: Matrix, batch: Batch) -> None:
    # One reduction, no bool copy of D (an elementwise isfinite was ~5% of a cached run): a NaN
    # or inf anywhere makes the sum non-finite; only then (or on an fp32 overflow of the sum,
    # which the exact check below clears) look at the examples one by one.
    if bool(torch.isfinite(D.sum())):
        return
    ok = torch.isfinite(D).flatten(1).all(1)
    if not bool(ok.all()):
        names = [o for o, good in zip(batch.origins, ok.tolist(), strict=True) if not good]
        raise NonFiniteGradientError(
            f"non-finite gradient at {matrix.name} for {', '.join(names)}; check these examples "
            "and the model's dtype (fp32 is the safe choice)."
        )


# --------------------------------------------------------------------------------------------
# Sources: how an estimator sees a data set's per-example gradients.


class GradientSource:
    """Per-example gradients of a data set, visited batch by batch with `for_each`.

    In a data-parallel run (`parallel`, influence/distributed.py) the source holds this rank's
    batches, `n` is the whole data set's size and the helpers below sum their results over the
    ranks, so an estimator written for one process runs unchanged on N."""

    def __init__(self, engine: GradientEngine, batches: Sequence[Batch], name: str,
                 parallel: DataParallel | None = None, n: int | None = None):
        self.engine = engine
        self.batches = list(batches)
        self.name = name
        self.parallel = parallel
        self.n = n if n is not None else sum(len(b.indices) for b in self.batches)
        self.passes = 0  # forward/backward passes run so far (for reports and tests)

    def _sum_over_ranks(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.parallel is not None:
            for m in self.engine.matrices:  # the same order on every rank
                self.parallel.sum(out[m.name])
        return out

    def for_each(self, callback: Callback, desc: str) -> None:
        raise NotImplementedError

    # Helpers every estimator uses ----------------------------------------------------------

    def per_example(
        self, fn: Callable[[Matrix, ExampleGradients], torch.Tensor], desc: str
    ) -> dict[str, torch.Tensor]:
        """{matrix name: (n, ...) tensor} of fn's per-example values, rows in input order."""
        out: dict[str, torch.Tensor] = {}

        def collect(matrix: Matrix, grads: ExampleGradients, indices: torch.Tensor) -> None:
            value = fn(matrix, grads)
            if matrix.name not in out:
                out[matrix.name] = value.new_zeros((self.n, *value.shape[1:]))
            out[matrix.name][indices] = value

        self.for_each(collect, desc)
        return self._sum_over_ranks(out)  # rows of other ranks' examples are zero here

    def weighted_sum(self, weights: dict[str, torch.Tensor], desc: str) -> dict[str, torch.Tensor]:
        """{matrix name: sum_i weights[name][i] * g_i} (d_out, d_in)."""
        out: dict[str, torch.Tensor] = {}

        def accumulate(matrix: Matrix, grads: ExampleGradients, indices: torch.Tensor) -> None:
            part = grads.weighted_sum(weights[matrix.name][indices].to(grads.device))
            if matrix.name in out:
                out[matrix.name] += part
            else:
                out[matrix.name] = part

        self.for_each(accumulate, desc)
        return self._sum_over_ranks(out)

    def mean_gradient(self, desc: str) -> dict[str, torch.Tensor]:
        """{matrix name: (1/n) sum_i g_i}."""
        ones = {m.name: torch.full((self.n,), 1.0 / self.n) for m in self.engine.matrices}
        return self.weighted_sum(ones, desc)


class StreamingSource(GradientSource):
    """Recomputes gradients with one pass per visit: memory independent of n."""

    def for_each(self, callback: Callback, desc: str) -> None:
        self.passes += 1
        self.engine.run(self.batches, callback, f"{self.name}: {desc}")


class CachedSource(GradientSource):
    """One pass, then replays the per-example gradients it kept (compact form) from memory."""

    def __init__(self, engine: GradientEngine, batches: Sequence[Batch], name: str,
                 parallel: DataParallel | None = None, n: int | None = None):
        super().__init__(engine, batches, name, parallel, n)
        self._store: list[tuple[Matrix, ExampleGradients, torch.Tensor]] | None = None

    def for_each(self, callback: Callback, desc: str) -> None:
        if self._store is None:
            store = []

            def keep(matrix: Matrix, grads: ExampleGradients, indices: torch.Tensor) -> None:
                callback(matrix, grads, indices)
                store.append((matrix, grads.compact(), indices))

            self.passes += 1
            self.engine.run(self.batches, keep, f"{self.name}: {desc} (caching)")
            self._store = store
            return
        for matrix, grads, indices in self._store:
            callback(matrix, grads, indices)

    def release(self) -> None:
        self._store = None


def cache_bytes(matrices: Sequence[Matrix], batches: Sequence[Batch]) -> int:
    """Upper bound of what a CachedSource keeps for these batches (shared inputs counted once
    per matrix, so slightly pessimistic)."""
    total = 0
    for batch in batches:
        B, T = batch.input_ids.shape
        for m in matrices:
            total += B * min(m.d_out * m.d_in, T * (m.d_in + m.d_out))
    return total * BYTES_FP32
