"""Plots of layer profiles (PNG, written atomically)."""

from __future__ import annotations

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
    return save_figure(fig, path)


def plot_expert_allocations(
    layers: Sequence[int],
    allocations: Mapping[str, Sequence[int]],
    path: str | Path,
    title: str = "experts per layer",
) -> Path:
    """One bar chart of experts per layer for each allocation, stacked vertically with a shared
    y axis (the paper's Figure 4 layout)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(allocations)
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.3 * n + 0.8), dpi=120, sharex=True,
                             sharey=True, squeeze=False)
    for ax, (name, experts) in zip(axes[:, 0], allocations.items(), strict=True):
        ax.bar(layers, experts, color="tab:blue" if name.startswith("layerif") else "tab:gray")
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xlabel("layer (decoder block)")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_sensitivity(layers: Sequence[int], levels: Sequence[float], delta: np.ndarray,
                     path: str | Path, title: str = "measured sensitivity") -> Path:
    """Heat map of D_l(s) (rows: pruning levels, columns: layers), log-scaled colours where
    every value is positive, each cell's value printed when there are few of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    delta = np.asarray(delta, dtype=float)  # (L, K)
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(layers) + 2), 0.5 * len(levels) + 1.8),
                           dpi=120)
    positive = (delta > 0).all()
    image = ax.imshow(delta.T, aspect="auto", origin="lower", cmap="magma_r",
                      norm=LogNorm() if positive else None)
    ax.set_xticks(range(len(layers)), [str(x) for x in layers], fontsize=7)
    ax.set_yticks(range(len(levels)), [f"{s:.0%}" for s in levels])
    ax.set_xlabel("layer (decoder block) pruned alone")
    ax.set_ylabel("its sparsity")
    fig.colorbar(image, ax=ax, label="NLL increase (nats per token)")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_search_trajectories(searches: Mapping[str, dict], path: str | Path,
                             title: str = "search: fitness of the parent") -> Path:
    """Left: each search's parent fitness on its whole held text (and, as dots, the validation
    NLL where it was checked, right axis) against generations; right: the same fitness against
    the tokens its candidates ran. searches: label -> an allocation's search record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_gen, by_tokens) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    twin = by_gen.twinx()
    for i, (label, record) in enumerate(searches.items()):
        colour = f"C{i % 10}"
        trajectory = record["trajectory"]
        gens = [t["generation"] for t in trajectory]
        fit = [t["fitness"] for t in trajectory]
        by_gen.plot(gens, fit, color=colour, label=label)
        by_tokens.plot([t["tokens"] / 1e6 for t in trajectory], fit, color=colour, label=label)
        checked = [(t["generation"], t["validation"]) for t in trajectory
                   if t.get("validation") is not None]
        if checked:
            twin.plot(*zip(*checked, strict=True), "o", ms=3, color=colour, alpha=0.6)
        best = record["final"].get("generation")
        if best is not None:
            by_gen.axvline(best, color=colour, ls=":", lw=0.8)
    kind = next(iter(searches.values()))["fitness"]["kind"] if searches else "kl"
    by_gen.set_xlabel("generation (dotted: the answer the validation picked)")
    by_gen.set_ylabel(f"fitness ({kind}, nats per token)")
    twin.set_ylabel("validation NLL (dots)")
    by_tokens.set_xlabel("tokens run by the candidates (millions)")
    for ax in (by_gen, by_tokens):
        ax.grid(alpha=0.3)
    by_tokens.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Write a PNG atomically (io's temp file + rename) and close the figure."""
    import matplotlib.pyplot as plt

    from ..io import _write_atomic

    path = Path(path)
    try:
        _write_atomic(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)
    return path
