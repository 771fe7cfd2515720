"""The report's section on a grid with a measured sensitivity (`sensitivity:` in the config):

- the scoring slices (train spec, n, the profile's bootstrap stability);
- every layer score an allocator used held against D_l(s) at each target sparsity
  (sensitivity/compare.py: +1 when the method prunes more exactly where the measured damage is
  smaller, -1 when reversed), with a bootstrap 95% interval over the held windows and, for
  LayerIF, the training examples;
- per allocation of the first seed, the additive model's predicted NLL increase sum_l D_l(s_l)
  beside the measured one (the whole model pruned to it, on the same held windows), and the
  agreement of its own ratios with D_l(s) (where it prunes more, whatever direction its method
  chose);
- a plot of the agreements.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..influence.aggregate import aggregate
from ..sensitivity.compare import agreement_with_interval, delta_at

# per-layer statistics an allocation records, by method (the method's own layer score)
RECORDED_SCORES = {"alphapruning": "alphas", "owl": "outlier_ratios", "dlp": "unimportance",
                   "lsa": "errors"}


def _cells(out: Path, kind: str, key: str) -> Path:
    return out / "cells" / kind / key


def _scores(out: Path, manifest: dict, layerif_aggregates: list[str]) -> list[tuple]:
    """(name, method, profile(rows), n_examples, stability) per scoring slice and aggregate."""
    found = []
    for i, key in enumerate(manifest.get("scores", [])):
        if not key:  # a stored-only run's slice whose scores are not stored yet
            continue
        folder = _cells(out, "scores", key) / "scores"
        influence = np.load(folder / "influence.npy")
        meta = json.loads((folder / "scores.json").read_text())
        stability = (meta.get("stability") or {}).get("median_spearman")
        for how in layerif_aggregates:
            def profile(rows, influence=influence, how=how):
                x = influence if rows is None else influence[rows]
                return np.abs(aggregate(x, how))

            found.append((f"layerif {how} (slice {i}, n={influence.shape[0]})", "layerif",
                          profile, influence.shape[0], stability))
    return found


def _recorded(out: Path, manifest: dict, sparsity: float) -> list[tuple]:
    """(name, method, profile, None, None) per method whose allocation records its score,
    read from the first seed's allocation at this sparsity."""
    seen, found = set(), []
    rows = [r for r in manifest["rows"] if r.get("allocation") and r["sparsity"] == sparsity]
    first_seed = min((r["seed"] for r in rows), default=None)
    for r in rows:
        if r["seed"] != first_seed:
            continue
        alloc = json.loads((_cells(out, "allocation", r["allocation"]) / "alloc.json")
                           .read_text())
        field = RECORDED_SCORES.get(alloc["method"])
        if field is None or alloc["method"] in seen or field not in alloc["parameters"]:
            continue
        seen.add(alloc["method"])
        values = np.asarray(alloc["parameters"][field], dtype=np.float64)
        found.append((f"{alloc['method']} ({field.replace('_', ' ')})", alloc["method"],
                      lambda _rows, v=values: v, None, None))
    return found


def sensitivity_section(out: str | Path, manifest: dict) -> tuple[str, list[tuple[str, Path]]]:
    """(markdown, [(caption, png)]) of the section; ("", []) without a measured sensitivity."""
    from ..sensitivity import load

    out = Path(out)
    key = manifest.get("sensitivity")
    if not key:
        return "", []
    measured, record = load(_cells(out, "sensitivity", key) / "sensitivity")
    window_delta = np.asarray(record["window_delta"], dtype=np.float64)
    sparsities = sorted({r["sparsity"] for r in manifest["rows"] if r.get("allocation")})
    aggregates = sorted({json.loads((_cells(out, "allocation", r["allocation"]) / "alloc.json")
                                    .read_text())["parameters"].get("aggregate") or "helpful"
                         for r in manifest["rows"]
                         if r.get("allocation") and r["method"].startswith("layerif")})
    lines = [f"## Layer scores against the measured sensitivity ({record['pruner']})", "",
             f"D_l(s): the mean token NLL increase with block l alone pruned to s, on "
             f"{record['held']['windows']} held windows of {record['held']['seqlen']} tokens of "
             f"{record['held']['source']} (dense NLL {record['dense_nll']:.4f}); levels "
             f"{', '.join(f'{s:.2f}' for s in record['levels'])}. Agreement: Spearman of the "
             "score with D_l(s), oriented so that +1 means the method prunes more exactly where "
             "the damage is smaller and -1 the reverse; 95% bootstrap interval over the held "
             "windows (and LayerIF's training examples).", ""]
    if len(manifest.get("slices") or []) > 1:
        lines += ["**scoring slices**", "", "| slice | train | val |", "|---|---|---|"]
        lines += [f"| {i} | {s['train']} | {s['val']} |"
                  for i, s in enumerate(manifest["slices"])] + [""]
    figures = []
    rows_for_plot = {}
    for sparsity in sparsities:
        truth = delta_at(record["levels"], window_delta, sparsity)
        depth = np.arange(len(record["layers"]), dtype=np.float64)
        scored = [("depth (ATP's progression)", "depth", lambda _r, d=depth: d, None, None),
                  *_scores(out, manifest, aggregates), *_recorded(out, manifest, sparsity)]
        lines += [f"**agreement with D_l({sparsity:.2f})**", "",
                  "| layer score | agreement [95% CI] | profile stability |", "|---|---|---|"]
        for name, method, profile, n_examples, stability in scored:
            a = agreement_with_interval(name, method, profile, truth, n_examples)
            stable = "" if stability is None else f"{stability:.2f}"
            lines.append(f"| {name} | {a.agreement:+.2f} [{a.low:+.2f}, {a.high:+.2f}] | "
                         f"{stable} |")
            rows_for_plot[(sparsity, name)] = a
        lines.append("")
    checks = manifest.get("additivity") or []
    if checks:
        lines += ["**the additive model: predicted sum_l D_l(s_l) against the measured NLL "
                  "increase (first seed, same held windows)**", "",
                  "| method | sparsity | predicted | measured | measured / predicted | "
                  "its ratios' agreement with D_l(s) [95% CI] |",
                  "|---|---|---|---|---|---|"]
        for c in checks:
            result = json.loads((_cells(out, "additivity", c["key"]) / "additivity.json")
                                .read_text())
            label = c["method"] + (f" (slice {c['slice']})" if c["slice"] is not None else "")
            ratio = result["measured"] / result["predicted"] if result["predicted"] else np.nan
            # where the allocation actually prunes more, against the truth at its target
            ratios = np.asarray(result["ratios"], dtype=np.float64)
            a = agreement_with_interval(label, "allocation", lambda _rows, r=ratios: r,
                                        delta_at(record["levels"], window_delta, c["sparsity"]))
            agrees = ("- (equal ratios)" if not np.isfinite(a.agreement) else
                      f"{a.agreement:+.2f} [{a.low:+.2f}, {a.high:+.2f}]")
            lines.append(f"| {label} | {c['sparsity']:.2f} | {result['predicted']:.4f} | "
                         f"{result['measured']:.4f} | {ratio:.2f} | {agrees} |")
        lines.append("")
    figures.append(("layer scores against the measured sensitivity",
                    _plot(out, rows_for_plot)))
    figures.append(("measured sensitivity", _copy_heat_map(out, key)))
    return "\n".join(lines), figures


def _plot(out: Path, rows: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report.plots import save_figure

    names = list(dict.fromkeys(name for _, name in rows))
    sparsities = sorted({s for s, _ in rows})
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) * len(sparsities) + 1.5), dpi=120)
    y = 0
    ticks, labels = [], []
    for name in names:
        for s in sparsities:
            a = rows[(s, name)]
            ax.errorbar(a.agreement, y, xerr=[[a.agreement - a.low], [a.high - a.agreement]],
                        fmt="o", color="tab:blue" if a.method == "layerif" else "tab:gray",
                        capsize=3)
            ticks.append(y)
            labels.append(f"{name} @ {s:.2f}")
            y += 1
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("agreement with the measured sensitivity (+1: prunes where it hurts least)")
    ax.invert_yaxis()
    fig.tight_layout()
    return save_figure(fig, out / "plots" / "layer-scores-vs-sensitivity.png")


def _copy_heat_map(out: Path, key: str) -> Path:
    from ..io import _write_atomic

    source = _cells(out, "sensitivity", key) / "sensitivity" / "sensitivity.png"
    target = out / "plots" / "sensitivity.png"
    _write_atomic(target, lambda f: f.write(source.read_bytes()))
    return target
