"""How much to believe a layer profile: a bootstrap over the training examples.

From the saved influence matrix alone (no model pass): B resamples of the n training examples,
drawn with replacement by a seeded generator, each aggregated into a profile. Reported: the
per-layer interval of the aggregate (the central `level` mass of the resampled values) and the
median Spearman correlation between the full-data profile and the resampled ones. A median below
`STABLE_SPEARMAN` means the layer ranking, and so any allocation built from it, rests on which
training examples happened to be drawn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .aggregate import aggregate, spearman

STABLE_SPEARMAN = 0.8
# Below this many training examples a bootstrap mostly redraws the same few (one example: every
# resample is the full data, Spearman 1 by construction), so it says nothing either way.
MIN_EXAMPLES = 5


@dataclass
class ProfileStability:
    """Bootstrap summary of one aggregate's layer profile.

    low, high: (n_layers,) the interval holding the central `level` of resampled values, in the
    aggregate's units (DataInf's sign). median_spearman: None when the full profile is flat (every
    layer equal), where a ranking does not exist."""

    aggregate: str
    resamples: int
    seed: int
    level: float
    low: list[float]
    high: list[float]
    median_spearman: float | None
    n_train: int

    @property
    def stable(self) -> bool:
        return (self.median_spearman is not None and self.n_train >= MIN_EXAMPLES
                and self.median_spearman >= STABLE_SPEARMAN)

    def summary(self) -> str:
        """One line for the terminal."""
        if self.median_spearman is None:
            return (f"layer ranking undefined: the {self.aggregate!r} profile is the same for "
                    "every layer")
        if self.n_train < MIN_EXAMPLES:
            return (f"layer ranking untested: {self.n_train} training example(s) are too few "
                    f"for the bootstrap to say anything (it needs at least {MIN_EXAMPLES}); "
                    "score more training examples before allocating from this profile")
        word = "stable" if self.stable else "UNSTABLE"
        line = (f"layer ranking {word}: median Spearman {self.median_spearman:.2f} over "
                f"{self.resamples} resamples of the {self.n_train} training examples")
        if not self.stable:
            line += (f" (below {STABLE_SPEARMAN}); score more training examples before "
                     "allocating from this profile")
        return line

    def to_dict(self) -> dict:
        return asdict(self)


def profile_stability(
    influence: np.ndarray, how: str, resamples: int = 200, seed: int = 0, level: float = 0.9
) -> ProfileStability:
    """Bootstrap the `how` aggregate of an (n_train, n_layers) influence matrix."""
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and level in (0, 1), got {resamples}, {level}")
    x = np.asarray(influence, dtype=np.float64)
    n = x.shape[0]
    full = aggregate(x, how)
    rng = np.random.default_rng(seed)
    boots = np.stack([aggregate(x[rng.integers(0, n, n)], how) for _ in range(resamples)])
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2], axis=0)
    median = None
    if x.shape[1] >= 2 and np.ptp(full) > 0:
        rhos = np.array([spearman(full, b) for b in boots])
        # A resampled profile can come out flat (nan): it ranks nothing, so it counts as 0.
        median = float(np.median(np.nan_to_num(rhos, nan=0.0)))
    return ProfileStability(how, resamples, seed, level, low.tolist(), high.tolist(), median, n)
