"""ATP (Huang et al., 2025): the progression by hand, the global target exact for unequal
blocks, and the beta search against a direct recomputation of every grid point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_tiny_model

from layerif.allocation import AllocationError, atp_sparsity, make_sparsity_method
from layerif.allocation.api import allocate_sparsity
from layerif.allocation.sparsity_methods.atp import max_beta
from layerif.data.calibration import calibration_samples
from layerif.pruning.prune import prune_model


def test_atp_by_hand():
    # L = 4, s = 0.5, beta = 0.1: s - beta (L - 1) / 2 + beta (l - 1) = [.35, .45, .55, .65]
    np.testing.assert_allclose(atp_sparsity(0.5, [7, 7, 7, 7], 0.1), [0.35, 0.45, 0.55, 0.65],
                               rtol=0, atol=1e-15)
    # the largest beta keeps the first ratio at 0 (s < 0.99 - s) or the last at 0.99
    assert max_beta(0.3, [1] * 4) == pytest.approx(0.2)
    assert max_beta(0.7, [1] * 4) == pytest.approx(0.29 / 1.5)
    assert atp_sparsity(0.3, [1] * 4, 0.2)[0] == pytest.approx(0.0, abs=1e-15)


def test_atp_keeps_the_global_target_for_unequal_blocks():
    P = np.array([4.0, 1.0, 2.0, 3.0])
    ratios = atp_sparsity(0.6, P, 0.05)
    assert (ratios * P).sum() / P.sum() == pytest.approx(0.6, abs=1e-15)
    np.testing.assert_allclose(np.diff(ratios), 0.05)  # still a progression, deeper pruned more


def test_atp_refusals():
    with pytest.raises(AllocationError, match="largest allowed"):
        atp_sparsity(0.5, [1] * 4, 0.5)
    with pytest.raises(AllocationError, match="--atp-grid values must lie in"):
        make_sparsity_method("atp", grid="0,1.5")
    with pytest.raises(AllocationError, match="comma-separated numbers"):
        make_sparsity_method("atp", grid="a,b")


def test_atp_search_picks_the_lowest_held_perplexity(tokenizer, calib):
    torch.manual_seed(0)
    model = build_tiny_model("llama", len(tokenizer), layers=4).eval()
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    samples = calibration_samples(tokenizer, calib, 10, 16, 0)
    alloc = allocate_sparsity("atp", 0.6, model=model, calibration=samples, grid="0,0.5,1",
                              nsamples=4, held=3, pruner="wanda")
    for k, v in model.state_dict().items():  # every trial's prune was undone
        assert torch.equal(v, dense[k]), k
    p = alloc.parameters
    assert p["search_nsamples"] == 4 and p["held_windows"] == 3 and len(p["grid"]) == 3
    top = max_beta(0.6, alloc.params_per_layer)
    np.testing.assert_allclose(p["grid"], [0, top / 2, top])
    # each grid point recomputed directly: prune a fresh copy, score the held windows
    direct = []
    for beta in p["grid"]:
        model.load_state_dict(dense)
        prune_model(model, atp_sparsity(0.6, alloc.params_per_layer, beta), "wanda",
                    samples[:4], progress=False)
        with torch.no_grad():
            nll = [torch.nn.functional.cross_entropy(model(w[None]).logits[0, :-1], w[1:],
                                                     reduction="sum") for w in samples[-3:]]
        direct.append(float(torch.exp(torch.stack(nll).sum() / (3 * 15))))
    np.testing.assert_allclose(p["held_perplexity"], direct, rtol=1e-5)
    assert p["beta"] == p["grid"][int(np.argmin(direct))]
    np.testing.assert_allclose(alloc.ratios, atp_sparsity(0.6, alloc.params_per_layer,
                                                          p["beta"]), atol=1e-15)
    assert alloc.global_sparsity == pytest.approx(0.6, abs=1e-12)
