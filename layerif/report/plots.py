"""Plots of layer profiles (PNG, written atomically)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def plot_layer_profiles(
    layers: Sequence[int],
    profiles: Mapping[str, Sequence[float]],
    path: str | Path,
    title: str = "LayerIF layer profiles",
    ylabel: str = "score (min-max normalised per profile)",
) -> Path:
    """Line plot of each profile over layers, each min-max normalised so shapes compare."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
    for name, values in profiles.items():
        v = np.asarray(values, dtype=float)
        span = v.max() - v.min()
        ax.plot(layers, (v - v.min()) / span if span > 0 else np.zeros_like(v), marker="o",
                ms=3, label=name)
    ax.set_xlabel("layer (decoder block)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
