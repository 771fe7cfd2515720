"""The Table-2 shaped rendering both experiment reports share (report.py for pruning grids,
moe_report.py for LoRA-MoE grids): a row per method with its mean and bootstrap 95% interval,
the paired difference to the best baseline with its interval and p-value, and, with several
seeds (when the cells know them), each seed's value and the paired t-test over the seeds' means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..evaluation.paired import bootstrap_interval, paired_bootstrap


@dataclass
class Cell:
    """One method under one pruner and sparsity: per-item correctness and per-window NLL per
    token, each averaged over seeds, and the per-seed means."""

    label: str
    baseline: bool
    items: np.ndarray  # (n_items,) accuracy, mean over seeds
    seed_means: list[float]
    windows: dict[str, np.ndarray]  # ppl source -> per-window NLL per token, mean over seeds
    seed_ppl: dict[str, list[float]]
    seeds: tuple[int, ...] = ()  # the seeds of seed_means and seed_ppl, in their order


def _fmt_ci(mean: float, low: float, high: float, scale: float = 100, digits: int = 1) -> str:
    return f"{mean * scale:.{digits}f} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def t_test_over_seeds(a: list[float], b: list[float], unit: str = "{:+.1f}",
                      scale: float = 100) -> str:
    """The paired t-test over seeds of the per-seed values a and b (the paper's Table 9);
    empty with fewer than two seeds."""
    if len(a) < 2 or len(a) != len(b):
        return ""
    from scipy.stats import ttest_rel

    d = np.subtract(a, b)
    if np.allclose(d, d[0]):
        return f", t-test: constant difference {unit.format(d[0] * scale)}"
    return f", t-test p = {ttest_rel(a, b).pvalue:.3f}"


def paired_log_ppl(a: Cell, b: Cell, source: str) -> str:
    """a's mean log-perplexity (NLL per token, nats) minus b's over the same held windows of
    `source`, with its bootstrap interval and p, and the t-test over the seeds' log-perplexities
    when both have several (negative: a is lower)."""
    d = paired_bootstrap(a.windows[source], b.windows[source])
    return (f"{d.difference:+.4f} [{d.low:+.4f}, {d.high:+.4f}], p = {d.p_value:.3f}"
            + t_test_over_seeds(np.log(a.seed_ppl[source]).tolist(),
                                np.log(b.seed_ppl[source]).tolist(), "{:+.4f}", 1))


def _per_seed_header(cells: list[Cell]) -> str | None:
    """The per-seed column's header when the cells share two or more seeds, else None (one
    seed: the column would repeat the mean)."""
    seeds = {c.seeds for c in cells}
    if len(seeds) != 1 or len(next(iter(seeds))) < 2:
        return None
    return f"per seed ({', '.join(map(str, next(iter(seeds))))})"


def table(cells: list[Cell], title: str) -> str:
    """One Table-2 shaped markdown table (see the module docstring)."""
    has_acc = any(c.items.size for c in cells)
    sources = list(cells[0].windows) if cells else []
    per_seed = _per_seed_header(cells)
    header = ["method"]
    if has_acc:
        header += ["mean acc % [95% CI]"] + ([f"acc % {per_seed}"] if per_seed else []) + [
            "vs best baseline: diff [95% CI], p"]
    for s in sources:
        header += [f"ppl {s} [95% CI]"] + ([f"ppl {per_seed}"] if per_seed else []) + [
            "vs best baseline: log-ppl diff [95% CI], p"]
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    acc = {c.label: bootstrap_interval(c.items) for c in cells if c.items.size}
    ppl = {s: {c.label: bootstrap_interval(c.windows[s]) for c in cells} for s in sources}
    baselines = [c for c in cells if c.baseline]
    best_acc = max(baselines, key=lambda c: acc[c.label].mean) if has_acc and baselines else None
    best_ppl = {s: min(baselines, key=lambda c: ppl[s][c.label].mean) for s in sources} \
        if baselines else {}
    bold_acc = _bold(acc, higher=True) if has_acc else None
    bold_ppl = {s: _bold(ppl[s], higher=False) for s in sources}
    for c in cells:
        row = [c.label]
        if has_acc:
            iv = acc[c.label]
            cell = _fmt_ci(iv.mean, iv.low, iv.high)
            row.append(f"**{cell}**" if c.label == bold_acc else cell)
            if per_seed:
                row.append(", ".join(f"{100 * m:.1f}" for m in c.seed_means))
            if best_acc is None or c is best_acc:
                row.append("(best baseline)" if c is best_acc else "-")
            else:
                d = paired_bootstrap(c.items, best_acc.items)
                row.append(f"{_fmt_ci(d.difference, d.low, d.high)}, p = {d.p_value:.3f}"
                           + t_test_over_seeds(c.seed_means, best_acc.seed_means))
        for s in sources:
            iv = ppl[s][c.label]
            cell = f"{math.exp(iv.mean):.2f} [{math.exp(iv.low):.2f}, {math.exp(iv.high):.2f}]"
            row.append(f"**{cell}**" if c.label == bold_ppl[s] else cell)
            if per_seed:
                row.append(", ".join(f"{p:.2f}" for p in c.seed_ppl[s]))
            base = best_ppl.get(s)
            if base is None or c is base:
                row.append("(best baseline)" if c is base else "-")
            else:
                row.append(paired_log_ppl(c, base, s))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _bold(intervals: dict, higher: bool) -> str | None:
    """The best label when its interval excludes the runner-up's value, else None."""
    if len(intervals) < 2:
        return None
    ranked = sorted(intervals.items(), key=lambda kv: kv[1].mean, reverse=higher)
    (best, iv), (_, runner) = ranked[0], ranked[1]
    return best if not iv.low <= runner.mean <= iv.high else None
