"""Allocation invariants (hypothesis), SPEC's worked example, Savitzky-Golay against scipy, and
PL_Alpha_Hill on matrices with a known power-law spectrum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.signal import savgol_filter

from layerif.allocation import (
    AllocationError,
    alphalora_experts,
    layerif_experts,
    layerif_sparsity,
    mola_experts,
    pl_alpha_hill,
    smooth,
    uniform_experts,
)

scores_st = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=40)


def test_spec_worked_example():
    assert layerif_experts([-5, -4, -3, 3, 4, 5], total=10, beta=2).tolist() == [3, 2, 2, 1, 1, 1]


@settings(max_examples=200, deadline=None)
@given(scores=scores_st, extra=st.integers(0, 300), beta=st.floats(0.5, 4))
def test_expert_allocation_properties(scores, extra, beta):
    assume(len(scores) == 1 or np.ptp(scores) > 0)  # a flat profile is refused (below)
    total = len(scores) + extra
    alloc = layerif_experts(scores, total, beta)
    assert alloc.sum() == total and (alloc >= 1).all()
    s = np.asarray(scores)
    for i in range(len(s)):  # lower score never gets fewer experts
        for j in range(len(s)):
            if s[i] < s[j]:
                assert alloc[i] >= alloc[j]
    if extra and np.ptp(s) > 0:
        assert alloc[np.argmax(s)] == 1  # the highest score gets exactly one


@given(n=st.integers(1, 40), extra=st.integers(0, 200))
def test_uniform_experts_and_flat_scores(n, extra):
    alloc = uniform_experts(n, n + extra)
    assert alloc.sum() == n + extra and alloc.max() - alloc.min() <= 1
    if n > 1:  # a flat profile would silently give the uniform allocation: refused
        with pytest.raises(AllocationError, match="0.3 for every layer"):
            layerif_experts([0.3] * n, n + extra)


def test_expert_errors():
    with pytest.raises(AllocationError, match="fewer than the 6 layers"):
        layerif_experts([1, 2, 3, 4, 5, 6], total=5)
    with pytest.raises(AllocationError, match="beta must be > 0"):
        layerif_experts([1, 2], total=4, beta=0)
    with pytest.raises(AllocationError, match="more groups than layers"):
        mola_experts(3, "2468")
    with pytest.raises(AllocationError, match="use one of"):
        mola_experts(8, "abc")


def test_mola_patterns_cover_every_layer():
    assert mola_experts(8, "2468").tolist() == [2, 2, 4, 4, 6, 6, 8, 8]
    assert mola_experts(30, "8642").tolist() == [8] * 8 + [6] * 8 + [4] * 7 + [2] * 7
    assert mola_experts(5, [1, 3]).tolist() == [1, 1, 1, 3, 3]
    assert alphalora_experts([2.0, 4.0, 3.0], 9, beta=1).tolist() == [2, 4, 3]


params_st = st.integers(1, 30).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=n, max_size=n),
        st.lists(st.integers(1, 10**7), min_size=n, max_size=n),
    )
)


@settings(max_examples=200, deadline=None)
@given(data=params_st, sparsity=st.floats(0, 0.95), eps=st.floats(0, 1), sm=st.booleans())
def test_sparsity_properties(data, sparsity, eps, sm):
    scores, params = data
    assume(len(scores) == 1 or np.ptp(np.abs(scores)) > 0)
    ratios = layerif_sparsity(scores, sparsity, params, eps, use_smoothing=sm)
    P = np.asarray(params, dtype=np.float64)
    assert abs((ratios * P).sum() / P.sum() - sparsity) < 1e-9
    assert (ratios >= 0).all() and (ratios < 1).all()
    if not sm:  # without smoothing: higher |score| -> ratio not lower
        a = np.abs(scores)
        for i in range(len(a)):
            for j in range(len(a)):
                if a[i] > a[j]:
                    assert ratios[i] >= ratios[j] - 1e-12


@given(n=st.integers(2, 30), sparsity=st.floats(0, 0.9))
def test_flat_scores_are_refused_and_zero_epsilon_gives_uniform_ratios(n, sparsity):
    params = np.arange(1, n + 1) * 1000
    with pytest.raises(AllocationError, match="2.5 for every layer"):
        layerif_sparsity([2.5] * n, sparsity, params)
    with pytest.raises(AllocationError, match="for every layer"):  # |S| is what is mapped
        layerif_sparsity([-2.5, 2.5] * n, sparsity, list(params) * 2)
    rng = np.random.default_rng(n)
    np.testing.assert_allclose(
        layerif_sparsity(rng.normal(size=n), sparsity, params, epsilon=0), sparsity)


def test_hand_computed_sparsity():
    # |S| = [0, 1, 2] -> x = [0, .5, 1]; eps .2 -> phi = [.8, 1, 1.2]; equal params, s = .5
    ratios = layerif_sparsity([0, -1, 2], 0.5, [10, 10, 10], epsilon=0.2, use_smoothing=False)
    np.testing.assert_allclose(ratios, [0.4, 0.5, 0.6])
    # a cap forces clipping and re-distribution: the global target still holds
    ratios = layerif_sparsity([0, 1, 10], 0.9, [1, 1, 1], epsilon=1, use_smoothing=False)
    assert ratios.max() <= 0.99 and abs(ratios.mean() - 0.9) < 1e-12
    with pytest.raises(AllocationError, match=r"sparsity must be in \[0, 1\)"):
        layerif_sparsity([1, 2], 1.0, [1, 1])
    with pytest.raises(AllocationError, match="epsilon"):
        layerif_sparsity([1, 2], 0.5, [1, 1], epsilon=1.5)


def test_savgol_matches_scipy_and_shrinks_the_window():
    x = np.random.default_rng(0).random(30)
    np.testing.assert_allclose(smooth(x), savgol_filter(x, 7, 3, mode="interp"))
    x6 = x[:6]
    np.testing.assert_allclose(smooth(x6), savgol_filter(x6, 5, 3, mode="interp"))
    np.testing.assert_allclose(smooth(x[:3]), savgol_filter(x[:3], 3, 2, mode="interp"))
    np.testing.assert_array_equal(smooth(x[:2]), x[:2])


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.5])
def test_pl_alpha_hill_recovers_a_known_exponent(alpha):
    """Eigenvalues drawn from a Pareto law p(x) ~ x^-alpha (x >= 1): alpha within 10%.

    (The KS choice of xmin near the histogram peak keeps a tail of a few hundred eigenvalues, so
    the Hill estimate's spread is about (alpha - 1) / sqrt(k), ~0.2 for alpha = 4.5.)"""
    rng = np.random.default_rng(int(alpha * 10))
    n = 1000
    eigs = (1 - rng.random(n)) ** (-1 / (alpha - 1))  # inverse CDF of the Pareto law
    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    V, _ = np.linalg.qr(rng.normal(size=(n, n)))
    W = (U * np.sqrt(eigs)) @ V.T
    assert abs(pl_alpha_hill(torch.from_numpy(W)) - alpha) < 0.1 * alpha


def test_tiny_score_spreads_do_not_underflow():
    # (max - S)^2 of 1e-258 underflows to 0; the allocation must still favour the lower score.
    assert layerif_experts([0.0, 1.278446880312706e-258], total=4, beta=2).tolist() == [3, 1]


def reference_alpha_hill(W: np.ndarray, bins: int = 100) -> float:
    """An independent PL_Alpha_Hill: every candidate at once (an N x N table of KS distances)."""
    eigs = np.sort(np.linalg.svd(W, compute_uv=False) ** 2)
    eigs = eigs[eigs > 1e-12 * eigs[-1]]
    n = len(eigs)
    counts, edges = np.histogram(np.log10(eigs), bins=bins)
    candidates = np.flatnonzero(eigs[:-1] <= 1.5 * 10 ** edges[np.argmax(counts)])
    logs = np.log(eigs)
    k = n - candidates
    alphas = 1 + k / (np.array([logs[i:].sum() for i in candidates]) - k * logs[candidates])
    j = np.arange(n)
    ratio = np.where(j[None] >= candidates[:, None], eigs[None] / eigs[candidates, None], 1.0)
    cdf = 1 - ratio ** (1 - alphas[:, None])
    empirical = (j[None] - candidates[:, None]) / k[:, None]
    ks = np.where(j[None] >= candidates[:, None], np.abs(cdf - empirical), -np.inf).max(1)
    return float(alphas[np.argmin(ks)])


def test_pl_alpha_hill_on_a_real_smollm2_matrix_and_a_power_law():
    from safetensors import safe_open

    from layerif.models import weight_files

    (path,) = weight_files("smollm2-135m")
    with safe_open(str(path), framework="pt") as f:
        W = f.get_tensor("model.layers.3.mlp.down_proj.weight")
    got = pl_alpha_hill(W)
    assert got == pytest.approx(reference_alpha_hill(W.double().numpy()), rel=1e-9)
    assert 1.5 < got < 10
    rng = np.random.default_rng(7)
    eigs = (1 - rng.random(300)) ** (-1 / 2.0)  # Pareto, alpha = 3
    U, _ = np.linalg.qr(rng.normal(size=(300, 300)))
    P = (U * np.sqrt(eigs)) @ U.T
    assert pl_alpha_hill(torch.from_numpy(P)) == pytest.approx(reference_alpha_hill(P), rel=1e-9)


def test_pl_alpha_hill_without_a_valid_xmin_names_the_matrix():
    with pytest.raises(AllocationError, match="q_proj: no xmin up to 1.5 x"):
        pl_alpha_hill(torch.eye(8), name="q_proj")  # every eigenvalue 1: no tail
