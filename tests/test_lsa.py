"""LSA (Yang et al., ICLR 2026): the greedy reconstruction error by hand, the per-block error
against a direct recomputation from the dense model's activations, and the allocation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_tiny_model

from layerif.allocation import AllocationError, make_sparsity_method
from layerif.allocation.api import allocate_sparsity
from layerif.allocation.sparsity_methods.lsa import (
    block_reconstruction_errors,
    default_beta,
    lsa_sparsity,
    reconstruction_error,
)
from layerif.data.calibration import calibration_samples
from layerif.models import discover_blocks
from layerif.pruning.prune import oriented_weight

# One row, four inputs; inputs 0 and 1 are anti-correlated (H_01 = -0.5), 0 and 2 correlated.
W = torch.tensor([[1.0, 1.2, 1.0, 3.0]])
H = torch.tensor([[1.0, -0.5, 0.3, 0.0],
                  [-0.5, 1.0, 0.0, 0.0],
                  [0.3, 0.0, 1.0, 0.0],
                  [0.0, 0.0, 0.0, 1.0]])


def test_greedy_error_by_hand():
    # Alone, removing input j costs W_j^2 H_jj = [1, 1.44, 1, 9]: input 0 first (cost 1, the
    # first of the tie). Then input 1 costs 1.44 + 2 (1)(1.2)(-0.5) = 0.24 and input 2 costs
    # 1 + 2 (1)(1)(0.3) = 1.6: input 1. E = w_P^T H w_P over P = {0, 1} = 1 + 1.44 - 1.2 = 1.24.
    error, pruned = reconstruction_error(W, H, probe=0.5, group=0)
    assert error == pytest.approx(1.24, abs=1e-6)
    assert pruned.tolist() == [[True, True, False, False]]
    # In groups of two, one removal per group: input 0 (cost 1), then in the second group input
    # 2 costs 1 + 2 (1)(1)(0.3) = 1.6, carried over from the first group: E = 2.6.
    error, pruned = reconstruction_error(W, H, probe=0.5, group=2)
    assert error == pytest.approx(2.6, abs=1e-6)
    assert pruned.tolist() == [[True, False, True, False]]


def test_error_is_the_masks_reconstruction_error():
    """E equals ||(M * W) X^T||^2 (2 / N) for the returned mask M, on random data, rows and
    groups that do not divide d_in."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 45, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, 45)
    Wr = torch.randn(7, 45, generator=g, dtype=torch.float64)
    Hr = 2 * X.T @ X / len(X)
    for group in (0, 16, 128):
        error, pruned = reconstruction_error(Wr, Hr, probe=0.5, group=group)
        direct = float(((Wr * pruned) @ X.T).square().sum() * 2 / len(X))
        assert error == pytest.approx(direct, rel=1e-5)
        counts = pruned.sum(1)
        expected = 22 if group == 0 else sum(int(0.5 * min(group, 45 - s))
                                             for s in range(0, 45, group))
        assert (counts == expected).all()


def test_block_errors_against_the_dense_models_activations(tokenizer, calib):
    model = build_tiny_model("qwen2", len(tokenizer), layers=3).eval()
    samples = calibration_samples(tokenizer, calib, 4, 16, 0)
    inputs: dict[str, list[torch.Tensor]] = {}
    blocks = discover_blocks(model)
    handles = [m.module.register_forward_hook(
        lambda mod, args, _out, name=m.name: inputs.setdefault(name, []).append(
            args[0].reshape(-1, args[0].shape[-1]).double()))
        for b in blocks for m in b.matrices]
    with torch.no_grad():
        for s in samples:
            model(s[None])
    for h in handles:
        h.remove()
    want = []
    for b in blocks:
        errors = []
        for m in b.matrices:
            X = torch.cat(inputs[m.name])
            Wm = oriented_weight(m).double()
            _, pruned = reconstruction_error(Wm, 2 * X.T @ X / len(X), 0.5, 128)
            errors.append(float(((Wm * pruned) @ X.T).square().sum() * 2 / len(X)))
        want.append(np.mean(errors))
    got = block_reconstruction_errors(model, samples)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert np.ptp(got) > 0


def test_lsa_allocation(tokenizer, calib):
    model = build_tiny_model("llama", len(tokenizer), layers=4).eval()
    samples = calibration_samples(tokenizer, calib, 4, 16, 0)
    alloc = allocate_sparsity("lsa", 0.7, model=model, calibration=samples)
    ratios = np.asarray(alloc.ratios)
    errors = np.asarray(alloc.parameters["errors"])
    assert alloc.global_sparsity == pytest.approx(0.7, abs=1e-12)
    assert alloc.parameters["beta"] == 0.15
    assert ratios.max() - ratios.min() == pytest.approx(0.3, abs=1e-12)  # spread 2 beta
    assert ratios.argmax() == errors.argmax() and ratios.argmin() == errors.argmin()


def test_lsa_mapping_defaults_and_refusals():
    # E = [1, 2, 3, 5]: the DLP mapping, as in test_dlp's hand case
    np.testing.assert_allclose(lsa_sparsity([1, 2, 3, 5], 0.5, [1] * 4, beta=0.1),
                               [0.4125, 0.4625, 0.5125, 0.6125], atol=1e-15)
    assert [default_beta(s) for s in (0.5, 0.6, 0.7, 0.8, 0.9)] == [0.04, 0.1, 0.15, 0.12,
                                                                     0.12]
    for bad in ({"beta": 0.7}, {"probe": 1.0}, {"group": -1}, {"beta": float("inf")}):
        with pytest.raises(AllocationError, match="--lsa-"):
            make_sparsity_method("lsa", **bad)
    with pytest.raises(AllocationError, match="lower --lsa-beta"):
        lsa_sparsity([1, 2], 0.05, [1, 1], beta=0.2)
