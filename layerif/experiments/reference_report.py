"""The report's answer to "does LayerIF improve on what it departs from?": each LayerIF row
against the allocation its epsilon 0 reproduces (uniform for LayerIF's own map, ATP at the
same beta under `--prior atp`), as the same paired comparison the main table makes against the
best baseline: the log-perplexity difference over the shared held windows with its bootstrap
interval and p-value, the t-test over the seeds, and on how many seeds LayerIF came out lower.

The best-baseline column cannot answer this: where another method is best (the measured-
sensitivity allocation, say), every row is compared with that one, and a correction that
beats its own prior by a wide margin reads only as "worse than the best".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .tables import Cell, paired_log_ppl


def reference_method(alloc: dict) -> str | None:
    """The sparsity method whose ratios a LayerIF allocation (alloc.json) falls back to at
    epsilon 0: "atp" under `--prior atp`, else "uniform"; None for any other method."""
    if alloc.get("method") != "layerif":
        return None
    return "atp" if alloc.get("parameters", {}).get("prior") == "atp" else "uniform"


def against_reference_section(out: str | Path, records: list[dict],
                              label: Callable[[dict], str], groups: dict[tuple, list[Cell]]) -> str:
    """A markdown table, one line per LayerIF cell and held-text source whose reference method
    is in the same (pruner, sparsity) group with the same seeds; empty when there is none.
    `records` are the report's evaluated rows, `label(row)` their table label, `groups` the
    report's (pruner, sparsity) -> cells. Negative differences: LayerIF's perplexity is lower."""
    methods: dict[str, dict] = {}  # label -> alloc.json of its first row
    for row in records:
        if row.get("allocation") and label(row) not in methods:
            path = Path(out) / "cells" / "allocation" / row["allocation"] / "alloc.json"
            methods[label(row)] = json.loads(path.read_text())
    lines = []
    for (pruner, sparsity), cells in groups.items():
        first_of = {}  # method -> the first non-LayerIF cell of that method in this group
        for c in cells:
            method = methods.get(c.label, {}).get("method")
            if method and method != "layerif":
                first_of.setdefault(method, c)
        for c in cells:
            ref = first_of.get(reference_method(methods.get(c.label, {})) or "")
            if ref is None or ref.seeds != c.seeds:
                continue
            for source in c.windows:
                if np.array_equal(c.windows[source], ref.windows[source]):
                    lines.append(f"| {c.label} | {ref.label} | {pruner} {sparsity:.0%} | "
                                 f"{source} | 1 | the same pruned model (epsilon 0) | - |")
                    continue
                ratio = np.exp(c.windows[source].mean() - ref.windows[source].mean())
                lower = sum(a < b for a, b in zip(c.seed_ppl[source], ref.seed_ppl[source],
                                                  strict=True))
                lines.append(f"| {c.label} | {ref.label} | {pruner} {sparsity:.0%} | {source} | "
                             f"{ratio:.3f} | {paired_log_ppl(c, ref, source)} | "
                             f"{lower} of {len(c.seed_ppl[source])} |")
    if not lines:
        return ""
    return "\n".join([
        "**LayerIF against the allocation it departs from** (its epsilon 0: uniform for "
        "LayerIF's own map, ATP at the same beta under --prior atp; paired over the held "
        "windows; below 1 / negative: LayerIF's perplexity is lower)", "",
        "| method | against | pruner, sparsity | held text | ppl ratio | "
        "log-ppl diff [95% CI], p | lower on seeds |", "|---|---|---|---|---|---|---|", *lines])
