"""ExampleGradients' factored statistics against dense ones, and the sources' pass counts."""

from __future__ import annotations

import pytest
import torch
from conftest import TEXTS

from layerif.data import Example, encode_examples, make_batches
from layerif.influence.engine import (
    CachedSource,
    ExampleGradients,
    GradientEngine,
    StreamingSource,
    cache_bytes,
)
from layerif.models import discover_blocks


@pytest.mark.parametrize("shape", [(3, 5, 7, 4), (2, 2, 16, 16), (4, 9, 3, 2)])
def test_factored_statistics_match_dense(shape):
    B, T, d_in, d_out = shape
    g = torch.Generator().manual_seed(0)
    A = torch.randn(B, T, d_in, generator=g, dtype=torch.float64)
    D = torch.randn(B, T, d_out, generator=g, dtype=torch.float64)
    V = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    c = torch.randn(B, generator=g, dtype=torch.float64)
    # Literal per-example gradients: sum over tokens of outer products.
    G = torch.stack([sum(torch.outer(D[b, t], A[b, t]) for t in range(T)) for b in range(B)])
    grads = ExampleGradients(A, D)
    torch.testing.assert_close(grads.dot(V), (G * V).sum((1, 2)))
    torch.testing.assert_close(grads.sq_norm(), (G * G).sum((1, 2)))
    torch.testing.assert_close(grads.weighted_sum(c), (c[:, None, None] * G).sum(0))
    compact = grads.compact()
    torch.testing.assert_close(compact.dot(V), (G * V).sum((1, 2)))
    torch.testing.assert_close(compact.sq_norm(), (G * G).sum((1, 2)))
    torch.testing.assert_close(compact.weighted_sum(c), (c[:, None, None] * G).sum(0))
    # The compact form keeps whichever representation is smaller.
    assert (compact.A is None) == (d_in * d_out <= T * (d_in + d_out))
    dense = ExampleGradients(G=G)  # the dense paths (a matrix-vector product each)
    torch.testing.assert_close(dense.dot(V), (G * V).sum((1, 2)))
    torch.testing.assert_close(dense.weighted_sum(c), (c[:, None, None] * G).sum(0))


def test_streaming_and_cached_pass_counts(tiny_models, tokenizer):
    """Cached DataInf runs one training pass; streaming runs three (SPEC's 1 + 3 scheme)."""
    from layerif.influence.base import InfluenceArguments, get_estimator

    model = tiny_models("llama")
    matrices = [m for b in discover_blocks(model) for m in b.matrices]
    enc = encode_examples([Example(str(i), text=t) for i, t in enumerate(TEXTS)], tokenizer, 32)
    batches = make_batches(enc, 3, tokenizer.pad_token_id)
    engine = GradientEngine(model, matrices, progress=False)
    estimator = get_estimator(InfluenceArguments())
    for cls, expected in ((StreamingSource, 3), (CachedSource, 1)):
        train, val = cls(engine, batches, "train"), StreamingSource(engine, batches[:1], "val")
        estimator.influence(matrices, train, val)
        assert (train.passes, val.passes) == (expected, 1)
    assert cache_bytes(matrices, batches) > 0


def test_parameters_are_restored_after_a_pass(tiny_models, tokenizer):
    model = tiny_models("qwen2")
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    matrices = [m for b in discover_blocks(model) for m in b.matrices]
    enc = encode_examples([Example("x", text=TEXTS[0])], tokenizer, 32)
    engine = GradientEngine(model, matrices, progress=False)
    seen = []
    engine.run(make_batches(enc, 1, 0), lambda m, g, i: seen.append(m.name), "test")
    assert sorted(seen) == sorted(m.name for m in matrices)
    assert before == {n: p.requires_grad for n, p in model.named_parameters()}
    assert all(p.grad is None for p in model.parameters())  # no weight gradients computed


def test_statistics_are_fp32_for_a_bf16_model(tokenizer):
    from conftest import build_tiny_model

    model = build_tiny_model("llama", len(tokenizer)).to(torch.bfloat16)
    matrices = [m for b in discover_blocks(model) for m in b.matrices]
    enc = encode_examples([Example(str(i), text=t) for i, t in enumerate(TEXTS[:3])],
                          tokenizer, 32)
    dtypes = set()
    GradientEngine(model, matrices, progress=False).run(
        make_batches(enc, 3, 0), lambda m, g, i: dtypes.add((g.A.dtype, g.D.dtype)), "bf16")
    assert dtypes == {(torch.float32, torch.float32)}
