"""The report's plots (PNG, written atomically): layer profiles per scoring slice with their
bootstrap bands, allocations per method, and accuracy and perplexity against sparsity (per
method, best first, when a grid has one sparsity)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..report.plots import save_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def profile_figures(out: Path, manifest: dict, caption: str) -> list[tuple[str, Path]]:
    """[(caption, plots/profiles.png)] for the scoring cells a run's manifest lists, [] when it
    has none."""
    scores = [out / "cells" / "scores" / key / "scores" / "scores.json"
              for key in manifest.get("scores", []) if key]  # (None: not stored yet)
    return [(caption, plot_profiles(scores, out / "plots" / "profiles.png"))] if scores else []


def plot_profiles(scores_files: list[Path], path: Path) -> Path:
    """Each slice's profile (its file's aggregate) with the bootstrap band of its stability."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    for i, f in enumerate(scores_files):
        d = json.loads(f.read_text())
        s = d["stability"]
        ax.plot(d["layers"], d["aggregates"][s["aggregate"]], marker="o", ms=3,
                label=f"slice {i}: {d['train']} ({s['aggregate']})")
        ax.fill_between(d["layers"], s["low"], s["high"], alpha=0.2,
                        label=f"{s['level']:.0%} bootstrap band")
    ax.set_xlabel("layer (decoder block)")
    ax.set_ylabel("layer score")
    ax.set_title("LayerIF profiles per scoring slice")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_allocations(allocations: dict[str, list[float]], sparsity: float, path: Path) -> Path:
    """Per-layer sparsity of each method at one global target."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    for label, ratios in allocations.items():
        ax.plot(range(len(ratios)), ratios, marker="o", ms=3, label=label,
                lw=2 if label.startswith("layerif") else 1)
    ax.axhline(sparsity, color="black", lw=0.8, ls=":")
    ax.set_xlabel("layer (decoder block)")
    ax.set_ylabel("sparsity")
    ax.set_title(f"allocations at {sparsity:.0%} global sparsity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_against_sparsity(series: dict[str, list[tuple[float, float, float, float]]],
                          ylabel: str, title: str, path: Path, log: bool = False) -> Path:
    """series: label -> [(sparsity, value, low, high)]; lines with interval bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for label, points in series.items():
        points = sorted(points)
        x = np.array([p[0] for p in points])
        y = np.array([p[1] for p in points])
        err = np.array([[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]])
        ax.errorbar(x, y, yerr=err, marker="o", ms=3, capsize=3, label=label)
    if log and all(p[1] > 0 for pts in series.values() for p in pts):
        ax.set_yscale("log")
    ax.set_xlabel("global sparsity")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_per_method(values: dict[str, tuple[float, float, float]], xlabel: str, title: str,
                    path: Path, log: bool = False, lower_is_better: bool = True) -> Path:
    """values: label -> (value, low, high) at one sparsity; a dot with its interval per method,
    the best at the top (a grid of one sparsity has no line to draw against it)."""
    plt = _pyplot()
    ordered = sorted(values.items(), key=lambda kv: kv[1][0], reverse=not lower_is_better)
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.32 * len(ordered)), dpi=110)
    for row, (label, (value, low, high)) in enumerate(ordered):
        ax.errorbar([value], [row], xerr=[[value - low], [high - value]], fmt="o", ms=4,
                    capsize=3, color="tab:blue" if label.startswith("layerif") else "gray")
    ax.set_yticks(range(len(ordered)), [label for label, _ in ordered], fontsize=8)
    ax.invert_yaxis()
    if log and all(v[1] > 0 for v in values.values()):
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return save_figure(fig, path)


def exp_interval(iv) -> tuple[float, float, float]:
    return math.exp(iv.mean), math.exp(iv.low), math.exp(iv.high)
