"""DLP (Chen et al., ICML 2025): the allocation by hand, the global target exact for unequal
blocks, and the per-block median Wanda score against a direct computation on the dense model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_tiny_model

from layerif.allocation import AllocationError, dlp_sparsity, make_sparsity_method
from layerif.allocation.api import allocate_sparsity
from layerif.allocation.sparsity_methods.dlp import default_alpha
from layerif.data.calibration import calibration_samples
from layerif.models import discover_blocks
from layerif.pruning.prune import oriented_weight


def test_dlp_by_hand():
    # U = [1, 2, 3, 5]: minmax(1 - U/11) = [1, .75, .5, 0]; x 2 alpha (0.1) = [.2, .15, .1, 0],
    # mean .1125; s_l = 0.5 - (D_l - .1125)
    ratios = dlp_sparsity([1, 2, 3, 5], 0.5, [1, 1, 1, 1], alpha=0.1)
    np.testing.assert_allclose(ratios, [0.4125, 0.4625, 0.5125, 0.6125], rtol=0, atol=1e-15)


def test_dlp_keeps_the_global_target_for_unequal_blocks():
    P = np.array([1.0, 2.0, 3.0, 4.0])
    ratios = dlp_sparsity([4.0, 1.0, 2.0, 3.0], 0.7, P, alpha=0.15)
    assert (ratios * P).sum() / P.sum() == pytest.approx(0.7, abs=1e-15)
    assert ratios.argmax() == 0 and ratios.argmin() == 1  # the largest U is pruned most


def test_dlp_defaults_and_refusals():
    assert default_alpha(0.5) == 0.04 and default_alpha(0.7) == pytest.approx(0.15)
    assert default_alpha(0.6) == pytest.approx(0.095) and default_alpha(0.9) == 0.15
    with pytest.raises(AllocationError, match="lower --dlp-alpha"):
        dlp_sparsity([1, 2], 0.05, [1, 1], alpha=0.2)
    with pytest.raises(AllocationError, match="positive"):
        dlp_sparsity([0, 2], 0.5, [1, 1], alpha=0.1)
    with pytest.raises(AllocationError, match="statistic"):
        make_sparsity_method("dlp", statistic="max")
    with pytest.raises(AllocationError, match="takes no option epsilon"):
        make_sparsity_method("dlp", epsilon=0.2)


@pytest.mark.parametrize("statistic", ["median", "mean"])
def test_dlp_reads_each_blocks_wanda_scores(statistic, tokenizer, calib):
    model = build_tiny_model("llama", len(tokenizer), layers=4).eval()
    samples = calibration_samples(tokenizer, calib, 4, 16, 0)
    # the oracle: input norms from hooks on one ordinary forward pass of the dense model
    sq = {}
    blocks = discover_blocks(model)
    handles = [m.module.register_forward_hook(
        lambda mod, args, _out, name=m.name: sq.__setitem__(
            name, sq.get(name, 0) + args[0].reshape(-1, args[0].shape[-1]).double()
            .square().sum(0)))
        for b in blocks for m in b.matrices]
    with torch.no_grad():
        for s in samples:
            model(s[None])
    for h in handles:
        h.remove()
    reduce = {"median": torch.median, "mean": torch.mean}[statistic]
    U = [float(reduce(torch.cat([(oriented_weight(m).abs().double() * sq[m.name].sqrt()[None])
                                 .flatten() for m in b.matrices]))) for b in blocks]
    alloc = allocate_sparsity("dlp", 0.7, model=model, calibration=samples, statistic=statistic)
    # float32 sums of at most 64 squares per feature: agreement to ~1e-6 relative
    np.testing.assert_allclose(alloc.parameters["unimportance"], U, rtol=1e-5)
    P = alloc.params_per_layer
    np.testing.assert_allclose(alloc.ratios, dlp_sparsity(U, 0.7, P, 0.15), rtol=0, atol=1e-5)
    assert alloc.parameters["alpha"] == pytest.approx(0.15)
    assert alloc.global_sparsity == pytest.approx(0.7, abs=1e-12)
