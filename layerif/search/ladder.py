"""The ladder of levels a search moves on: per block, pruned-weight counts in equal steps.

Level k of block l prunes k * step_weights of its P_l weights, i.e. ratio k * step_weights / P_l.
The step is the same number of weights for every block (EvoPress's database), so lowering one
block by one level and raising another by one (a swap) leaves the number of pruned weights, and
so the parameter-weighted global sparsity, exactly where it was, whatever the blocks' sizes.
The step is chosen so that the global target is a whole number of steps:

    step_weights = s * sum_l P_l / N,   N = round(s * sum_l P_l / (step * mean_l P_l)),

so sum_l k_l = N is the global target exactly; `step` is the step as a fraction of a mean-sized
block (0.02: two points of sparsity on an average block).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..allocation.experts import AllocationError


@dataclass(frozen=True)
class Ladder:
    """params: (L,) prunable weights per block; step_weights: weights per level; low / high:
    (L,) each block's lowest and highest level; total: the levels' sum at the global target."""

    params: tuple[int, ...]
    step_weights: float
    low: tuple[int, ...]
    high: tuple[int, ...]
    total: int

    @classmethod
    def build(cls, params: Sequence[int], sparsity: float, step: float, min_ratio: float,
              max_ratio: float) -> Ladder:
        """The ladder for target `sparsity`; every level's ratio lies in [min_ratio,
        max_ratio]. Refused (one line) when the ladder cannot reach the target."""
        P = np.asarray(params, dtype=np.float64)
        if not (0 < sparsity < 1) or not (0 < step <= 0.5):
            raise AllocationError(f"search: need a sparsity in (0, 1) and a step in (0, 0.5], "
                                  f"got {sparsity} and {step}.")
        if not (0 <= min_ratio <= sparsity <= max_ratio < 1):
            raise AllocationError(
                f"search: the ladder [{min_ratio}, {max_ratio}] cannot reach the target "
                f"{sparsity}; give --search-min-ratio <= {sparsity} <= --search-max-ratio < 1.")
        total = max(int(round(sparsity * P.sum() / (step * P.mean()))), 1)
        step_weights = sparsity * P.sum() / total
        low = tuple(int(math.ceil(min_ratio * p / step_weights - 1e-9)) for p in P)
        high = tuple(int(math.floor(max_ratio * p / step_weights + 1e-9)) for p in P)
        if sum(low) > total or sum(high) < total or any(h < lo for lo, h in zip(low, high,
                                                                                strict=True)):
            raise AllocationError(
                f"search: no levels in [{min_ratio}, {max_ratio}] with step {step} reach the "
                f"target {sparsity}; widen the ladder or use a finer --search-step.")
        return cls(tuple(int(p) for p in params), float(step_weights), low, high, total)

    @property
    def n_blocks(self) -> int:
        return len(self.params)

    def ratio(self, block: int, level: int) -> float:
        return level * self.step_weights / self.params[block]

    def ratios(self, levels: Sequence[int]) -> np.ndarray:
        """(L,) pruning ratios of one level per block."""
        return np.asarray(levels, dtype=np.float64) * self.step_weights / np.asarray(
            self.params, dtype=np.float64)

    def levels_of(self, block: int) -> range:
        return range(self.low[block], self.high[block] + 1)

    def check(self, levels: Sequence[int]) -> None:
        """Raise unless `levels` lie on the ladder and meet the target exactly."""
        if len(levels) != self.n_blocks or sum(levels) != self.total or any(
                not lo <= k <= hi for k, lo, hi in zip(levels, self.low, self.high, strict=True)):
            raise AllocationError(f"levels {list(levels)} are not on the ladder (sum "
                                  f"{self.total}, within [{self.low}, {self.high}]).")

    def project(self, ratios: Sequence[float]) -> tuple[int, ...]:
        """The levels nearest an allocation (ratios clipped to the ladder), their sum brought to
        the target by moving the blocks whose rounding was closest to the other side first."""
        want = np.clip(np.asarray(ratios, dtype=np.float64) * np.asarray(self.params)
                       / self.step_weights, self.low, self.high)
        levels = np.clip(np.rint(want), self.low, self.high).astype(int)
        for _ in range(4 * self.n_blocks * max(self.high)):  # (bounded; each pass moves one)
            gap = self.total - int(levels.sum())
            if gap == 0:
                break
            sign = 1 if gap > 0 else -1
            movable = [b for b in range(self.n_blocks)
                       if self.low[b] <= levels[b] + sign <= self.high[b]]
            # the block whose level moves toward (or least away from) its wanted value
            b = min(movable, key=lambda b: (abs(levels[b] + sign - want[b]), b))
            levels[b] += sign
        levels = tuple(int(k) for k in levels)
        self.check(levels)
        return levels

    def uniform(self) -> tuple[int, ...]:
        """The allocation closest to equal ratios on this ladder."""
        return self.project([self.total * self.step_weights / sum(self.params)] * self.n_blocks)

    def to_dict(self) -> dict:
        return {"params": list(self.params), "step_weights": self.step_weights,
                "low": list(self.low), "high": list(self.high), "total": self.total}


def mutate(levels: Sequence[int], ladder: Ladder, rng: np.random.Generator,
           lower_weights: np.ndarray | None = None, raise_weights: np.ndarray | None = None,
           ) -> tuple[int, ...]:
    """One offspring of `levels`: 1-3 swaps (EvoPress: min of two draws of 1..3, so one swap
    5/9 of the time), each lowering one block by a level and raising another by one, so the
    target stays exact. lower_weights / raise_weights: (L,) probabilities of choosing a block to
    lower / raise (None: uniform); only blocks that can move are drawn."""
    child = list(levels)
    swaps = min(int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    n = ladder.n_blocks
    for _ in range(swaps):
        down = [b for b in range(n) if child[b] > ladder.low[b]]
        up = [b for b in range(n) if child[b] < ladder.high[b]]
        if not down or not up:
            break
        d = _draw(rng, down, lower_weights)
        up = [b for b in up if b != d] or up
        u = _draw(rng, up, raise_weights)
        if u == d:
            continue
        child[d] -= 1
        child[u] += 1
    return tuple(child)


def _draw(rng: np.random.Generator, blocks: list[int], weights: np.ndarray | None) -> int:
    if weights is None:
        return blocks[int(rng.integers(len(blocks)))]
    w = np.asarray([weights[b] for b in blocks], dtype=np.float64)
    return blocks[int(rng.choice(len(blocks), p=w / w.sum()))]


def deviation(levels: Sequence[int], start: Sequence[int]) -> int:
    """sum_l |k_l - k_l(start)|, in ladder steps (EvoPress's total deviation, from the start)."""
    return int(sum(abs(a - b) for a, b in zip(levels, start, strict=True)))
