"""Paired bootstrap and McNemar on hand-made per-item vectors."""

from __future__ import annotations

import numpy as np
import pytest

from layerif.evaluation.paired import bootstrap_interval, mcnemar, paired_bootstrap


def test_identical_methods_give_a_zero_interval_and_p_one():
    a = np.random.default_rng(0).integers(0, 2, 50)
    d = paired_bootstrap(a, a)
    assert (d.difference, d.low, d.high, d.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert mcnemar(a, a) == 1.0


def test_a_clear_difference_is_significant_and_its_interval_excludes_zero():
    b = np.zeros(60)
    a = np.r_[np.ones(30), np.zeros(30)]  # right on 30 items where b is wrong
    d = paired_bootstrap(a, b)
    assert d.difference == 0.5 and 0 < d.low < 0.5 < d.high and d.p_value < 1e-3
    # McNemar by hand: 30 discordant items all one way, p = 2 x 0.5^30
    assert mcnemar(a, b) == pytest.approx(2 * 0.5**30)


def test_mcnemar_against_a_hand_computed_binomial():
    # 7 items only a is right, 2 only b is right: p = 2 x P(X <= 2), X ~ Bin(9, 1/2)
    a = [1] * 7 + [0] * 2 + [1] * 5 + [0] * 4
    b = [0] * 7 + [1] * 2 + [1] * 5 + [0] * 4
    by_hand = 2 * (1 + 9 + 36) / 2**9
    assert mcnemar(a, b) == pytest.approx(by_hand)


def test_the_bootstrap_interval_covers_the_normal_one():
    v = np.random.default_rng(1).integers(0, 2, 400).astype(float)
    iv = bootstrap_interval(v)
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size)
    assert iv.mean == v.mean()
    assert iv.low == pytest.approx(v.mean() - half, abs=0.01)
    assert iv.high == pytest.approx(v.mean() + half, abs=0.01)
