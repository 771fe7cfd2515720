"""The report's record of the settings methods chose on held calibration windows: ATP's beta,
LayerIF's epsilon under `--tune` (and beta then epsilon under `--prior atp`). Per evaluated
row and seed, the choice and the held calibration perplexity at every point of its grid, read
from the allocation cells (the same numbers `alloc.json` records), so that a reader sees how
close each choice was and whether it moved between seeds without opening a cell.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def searched_setting(parameters: dict) -> tuple[str, str, dict] | None:
    """(the grid's parameter name, the choice in words, the search record {grid,
    held_perplexity, ...}) of an allocation's `parameters`, or None when nothing was searched
    (a fixed beta or epsilon). ATP keeps its search at the top level of its parameters,
    LayerIF under "search"."""
    if "search" in parameters:  # LayerIF --tune, with or without the ATP prior
        chosen = f"eps {parameters['epsilon']:.4g}"
        if parameters.get("prior") == "atp":
            chosen = f"beta {parameters['atp']['beta']:.4g}, {chosen}"
        return "eps", chosen, parameters["search"]
    if "grid" in parameters and "held_perplexity" in parameters:  # ATP
        return "beta", f"beta {parameters['beta']:.4g}", parameters
    return None


def searches_section(out: str | Path, rows: list[dict], label: Callable[[dict], str]) -> str:
    """A markdown table, one line per searched allocation and seed (rows in the order their
    labels first appear, then by seed); empty when no row searched. `rows` are the manifest's
    evaluated rows, `label(row)` their table label."""
    lines = []
    order = {}
    for row in rows:
        order.setdefault(label(row), len(order))
    for row in sorted(rows, key=lambda r: (order[label(r)], r["seed"] or 0)):
        if not row.get("allocation"):
            continue
        alloc = Path(out) / "cells" / "allocation" / row["allocation"] / "alloc.json"
        found = searched_setting(json.loads(alloc.read_text())["parameters"])
        if found is None:
            continue
        name, chosen, search = found
        points = ", ".join(f"{point:.4g}: {perplexity:.1f}" for point, perplexity in
                           zip(search["grid"], search["held_perplexity"], strict=True))
        lines.append(f"| {label(row)} | {row['seed']} | {chosen} | {name} {points} |")
    if not lines:
        return ""
    return "\n".join([
        "**settings chosen on held calibration windows** (the lowest held perplexity of the "
        "pruned model wins; the evaluation data are never read)", "",
        "| method | seed | chose | held calibration perplexity at each grid point |",
        "|---|---|---|---|", *lines])
