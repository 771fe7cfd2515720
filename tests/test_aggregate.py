"""Aggregates on hand-made influence matrices, and rank correlations."""

from __future__ import annotations

import numpy as np
import pytest

from layerif.influence import AGGREGATES, aggregate, spearman, spearman_per_layer
from layerif.influence.aggregate import AggregateError, top_quarter
from layerif.influence.stability import profile_stability

IF = np.array([  # 5 training examples x 3 layers
    [1.0, -2.0, 0.5],
    [-3.0, 4.0, 0.0],
    [2.0, 1.0, -1.0],
    [0.0, -0.5, -0.5],
    [-1.0, -1.0, 6.0],
])


def test_hand_computed_aggregates():
    np.testing.assert_array_equal(aggregate(IF, "harmful"), [3.0, 5.0, 6.5])
    np.testing.assert_array_equal(aggregate(IF, "helpful"), [-4.0, -3.5, -1.5])
    np.testing.assert_array_equal(aggregate(IF, "net"), [-1.0, 1.5, 5.0])
    np.testing.assert_array_equal(aggregate(IF), aggregate(IF, "helpful"))  # the default
    # sum_l |IF|: [3.5, 7, 4, 1, 8] -> top ceil(5/4) = 2 examples: 4 and 1
    np.testing.assert_array_equal(top_quarter(IF), [1, 4])
    np.testing.assert_array_equal(aggregate(IF, "top25"), [-4.0, 3.0, 6.0])


def test_aggregate_identities():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(17, 6))
    np.testing.assert_allclose(aggregate(x, "harmful") + aggregate(x, "helpful"),
                               aggregate(x, "net"))
    assert (aggregate(x, "harmful") >= 0).all() and (aggregate(x, "helpful") <= 0).all()
    assert len(top_quarter(x)) == 5  # ceil(17/4)
    assert set(AGGREGATES) == {"helpful", "harmful", "net", "top25"}
    with pytest.raises(ValueError, match="unknown aggregate"):
        aggregate(x, "mean")
    with pytest.raises(ValueError, match="n_train >= 1"):
        aggregate(np.zeros((0, 3)), "net")


def test_top25_ties_keep_input_order():
    x = np.ones((8, 2))
    np.testing.assert_array_equal(top_quarter(x), [0, 1])


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    a = np.array([[1, 4], [2, 3], [3, 2], [4, 1.0]])
    np.testing.assert_allclose(spearman_per_layer(a, a), [1.0, 1.0])
    np.testing.assert_allclose(spearman_per_layer(a, a[:, ::-1]), [-1.0, -1.0])


@pytest.mark.parametrize(("old", "new"), [("positive", "harmful"), ("negative", "helpful"),
                                          ("all", "net")])
def test_old_names_fail_naming_their_replacement(old, new):
    with pytest.raises(AggregateError, match=f"'{old}' was renamed: use '{new}'"):
        aggregate(IF, old)


def test_stability_of_a_dominant_layer_and_of_noise():
    rng = np.random.default_rng(1)
    # Layer j's influences centre on -(j + 1) * 10 with unit noise: the ranking is sharp.
    sharp = -(np.arange(8) + 1) * 10.0 - np.abs(rng.normal(size=(64, 8)))
    s = profile_stability(sharp, "helpful", resamples=100, seed=0)
    assert s.median_spearman > 0.99 and s.stable
    full = aggregate(sharp, "helpful")
    assert (np.array(s.low) <= full).all() and (full <= np.array(s.high)).all()
    assert "stable: median Spearman 1.00 over 100 resamples of the 64" in s.summary()
    # Pure noise, every layer alike: resampled rankings are unrelated to the full one.
    noise = -np.abs(rng.normal(size=(64, 8)))
    n = profile_stability(noise, "helpful", resamples=100, seed=0)
    assert n.median_spearman < 0.8 and not n.stable
    assert "UNSTABLE" in n.summary() and "more training examples" in n.summary()
    again = profile_stability(noise, "helpful", resamples=100, seed=0)
    assert again.to_dict() == n.to_dict()  # the seed fixes the resamples
    assert profile_stability(noise, "helpful", resamples=100, seed=1).low != n.low
    flat = profile_stability(np.zeros((5, 3)), "harmful", resamples=10)
    assert flat.median_spearman is None and "undefined" in flat.summary()
    # one example: every resample is the full data; the bootstrap says nothing, and says so
    one = profile_stability(sharp[:1], "helpful", resamples=50)
    assert one.median_spearman == pytest.approx(1.0) and not one.stable
    assert "untested: 1 training example(s) are too few" in one.summary()


def test_zero_gradient_is_judged_at_the_rounding_level_of_the_models_dtype():
    """A matrix whose mean ||g||^2 is rounding noise next to the others' (what a fused attention
    backward leaves of a gradient that is 0 in exact arithmetic) counts as zero; one that is
    merely small does not, and in fp64 the same noise level is a real gradient."""
    from types import SimpleNamespace

    import torch

    from layerif.influence.base import Estimator

    def matrix(name, dtype):
        return SimpleNamespace(name=name, module=SimpleNamespace(weight=torch.zeros(1,
                                                                                    dtype=dtype)))

    sq = {"q": torch.tensor([4e-16, 4e-16]), "small": torch.tensor([1e-6, 1e-6]),
          "v": torch.tensor([8.0, 8.0])}
    fp32 = [matrix(n, torch.float32) for n in sq]
    assert Estimator.zero_gradient(fp32, sq) == ["q"]
    fp64 = [matrix(n, torch.float64) for n in sq]
    assert Estimator.zero_gradient(fp64, sq) == []
