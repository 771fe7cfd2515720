"""Aggregates on hand-made influence matrices, and rank correlations."""

from __future__ import annotations

import numpy as np
import pytest

from layerif.influence import AGGREGATES, aggregate, spearman, spearman_per_layer
from layerif.influence.aggregate import top_quarter

IF = np.array([  # 5 training examples x 3 layers
    [1.0, -2.0, 0.5],
    [-3.0, 4.0, 0.0],
    [2.0, 1.0, -1.0],
    [0.0, -0.5, -0.5],
    [-1.0, -1.0, 6.0],
])


def test_hand_computed_aggregates():
    np.testing.assert_array_equal(aggregate(IF, "positive"), [3.0, 5.0, 6.5])
    np.testing.assert_array_equal(aggregate(IF, "negative"), [-4.0, -3.5, -1.5])
    np.testing.assert_array_equal(aggregate(IF, "all"), [-1.0, 1.5, 5.0])
    # sum_l |IF|: [3.5, 7, 4, 1, 8] -> top ceil(5/4) = 2 examples: 4 and 1
    np.testing.assert_array_equal(top_quarter(IF), [1, 4])
    np.testing.assert_array_equal(aggregate(IF, "top25"), [-4.0, 3.0, 6.0])


def test_aggregate_identities():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(17, 6))
    np.testing.assert_allclose(aggregate(x, "positive") + aggregate(x, "negative"),
                               aggregate(x, "all"))
    assert (aggregate(x, "positive") >= 0).all() and (aggregate(x, "negative") <= 0).all()
    assert len(top_quarter(x)) == 5  # ceil(17/4)
    assert set(AGGREGATES) == {"positive", "negative", "all", "top25"}
    with pytest.raises(ValueError, match="unknown aggregate"):
        aggregate(x, "mean")
    with pytest.raises(ValueError, match="n_train >= 1"):
        aggregate(np.zeros((0, 3)), "all")


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
