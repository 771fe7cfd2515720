"""`layerif experiment report DIR`: results.csv, tables.md, plots and report.html from the cells
of a run (its manifest.json), written atomically.

Tables are Table-2 shaped: one per pruner and sparsity, a row per method (seeds averaged item by
item; each scoring slice of a LayerIF method its own row), with
- mean accuracy over all evaluated items with its bootstrap 95% interval, and the paired
  difference to the best baseline (the non-LayerIF method with the highest mean) with its
  interval and paired-bootstrap p-value; with several seeds, also the paired t-test over the
  seeds' means (as the paper's Table 9);
- perplexity of each set, exp(mean NLL per token), with its interval over windows, and the
  paired difference of log-perplexity to the best baseline (lowest perplexity) over windows;
  with several seeds, also the paired t-test over the seeds' log-perplexities;
- with several seeds, each seed's value beside the mean.
The best value is bold only when its interval excludes the runner-up. A table of the settings
searched on calibration data follows (settings_report: ATP's beta, LayerIF's --tune epsilon, each
grid point's held perplexity, per seed).
Both kinds end with the machines that computed the cells (a warning when more than one) and
the time per stage: the seconds each cell recorded, summed by kind.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np

from ..errors import LayerIFError
from ..evaluation.paired import bootstrap_interval
from ..io import write_json, write_text
from .cells import cell_damage, stored_machines
from .moe_report import moe_csv_rows, moe_figures, moe_markdown
from .pruning import MANIFEST, load_eval
from .reference_report import against_reference_section
from .search_report import search_figures, search_section, transfer_records
from .sensitivity_report import sensitivity_section
from .settings_report import searches_section
from .tables import Cell, table


def _label(row: dict, n_slices: int) -> str:
    if row["slice"] is None or n_slices < 2:
        return row["method"]
    return f"{row['method']} (slice {row['slice']})"


def _per_item(result: dict) -> np.ndarray:
    parts = [t["per_item"]["acc"] for _, t in sorted(result["tasks"].items())
             if t.get("per_item", {}).get("acc")]
    return np.concatenate(parts) if parts else np.zeros(0)


def _windows(result: dict) -> dict[str, np.ndarray]:
    return {source: np.asarray(p["window_nll"]) / (p["window"] - 1)
            for source, p in result.get("perplexity", {}).items()}


def damaged_cells(out: str | Path, manifest: dict) -> dict[str, str]:
    """{"kind/key": why} for every cell the manifest names that fails the runner's own check
    (cells.cell_damage: an edited or truncated artefact), so that a report never shows a number
    `experiment run` would refuse to reuse."""
    named = [("scores", k) for k in manifest.get("scores") or [] if k]  # (None: not stored)
    named += [("sensitivity", manifest["sensitivity"])] if manifest.get("sensitivity") else []
    named += [("additivity", c["key"]) for c in manifest.get("additivity") or []]
    for row in manifest["rows"]:
        named += [(kind, row[kind]) for kind in ("eval", "allocation") if row.get(kind)]
        named += [("eval", row["transfer"])] if row.get("transfer") else []
    damaged = {}
    for kind, key in dict.fromkeys(named):
        why = cell_damage(Path(out) / "cells" / kind / key)
        if why:
            damaged[f"{kind}/{key}"] = why
    return damaged


def collect(out: str | Path) -> tuple[dict, list[dict]]:
    """(manifest, one record per evaluated row with its eval results). Rows whose evaluation or
    allocation cell is damaged are left out (and warned about); the manifest's `damaged` lists
    every damaged cell it names, and its scores, sensitivity and additivity keys lose theirs."""
    path = Path(out) / MANIFEST
    if Path(out).is_file():
        raise LayerIFError(f"{out} is a file; give the folder a run wrote (the --out of "
                           f"`layerif experiment run {out} --out DIR`).")
    if not path.is_file():
        raise LayerIFError(f"{out}: no {MANIFEST}; run `layerif experiment run CONFIG --out "
                           f"{out}` first.")
    manifest = json.loads(path.read_text())
    damaged = damaged_cells(out, manifest)
    for cell, why in damaged.items():
        print(f"warning: {out}/cells/{cell} is damaged ({why}); the report leaves it out and "
              f"`layerif experiment run` recomputes it.", file=sys.stderr)
    manifest["damaged"] = damaged

    def intact(kind: str, key: str | None) -> bool:
        return not key or f"{kind}/{key}" not in damaged

    if not intact("sensitivity", manifest.get("sensitivity")) or any(
            not intact("scores", k) for k in manifest.get("scores") or []):
        manifest["sensitivity"] = None  # its section reads these cells
    manifest["additivity"] = [c for c in manifest.get("additivity") or []
                              if intact("additivity", c["key"])]
    manifest["rows"] = [r for r in manifest["rows"]
                        if intact("eval", r["eval"]) and intact("allocation", r.get("allocation"))]
    for r in manifest["rows"]:  # a damaged second-text evaluation leaves its row in the others
        if r.get("transfer") and not intact("eval", r["transfer"]):
            del r["transfer"]
    records = []
    for row in manifest["rows"]:
        try:
            records.append({**row, "result": load_eval(out, row["eval"])})
        except (OSError, ValueError) as exc:
            raise LayerIFError(f"{out}: the evaluation of {row['method']} ({row['eval']}) is "
                               f"missing or damaged ({exc}); run the config again to "
                               "recompute it.") from None
    return manifest, records


def group(records: list[dict], n_slices: int) -> dict[tuple, list[Cell]]:
    """(pruner, sparsity) -> cells; the dense model is its own group (None, 0.0)."""
    by_key: dict[tuple, dict[str, list[dict]]] = {}
    for r in records:
        by_key.setdefault((r["pruner"], r["sparsity"]), {}).setdefault(
            _label(r, n_slices), []).append(r)
    groups = {}
    for key, labels in by_key.items():
        cells = []
        for label, rs in labels.items():
            items = [_per_item(r["result"]) for r in rs]
            windows = [_windows(r["result"]) for r in rs]
            cells.append(Cell(
                label, not label.startswith("layerif"),
                np.mean(items, axis=0) if items[0].size else np.zeros(0),
                [float(i.mean()) for i in items if i.size],
                {s: np.mean([w[s] for w in windows], axis=0) for s in windows[0]},
                {s: [math.exp(float(w[s].mean())) for w in windows] for s in windows[0]},
                tuple(r["seed"] for r in rs)))
        groups[key] = cells
    return groups


def stage_times(out: str | Path) -> str:
    """A markdown table of the compute time per stage (cell kind): cells, total and mean
    seconds, as each cell recorded when it ran (cells of every run into `out`, including any
    left over from an earlier config; wall time of whatever machine and load ran them), plus
    the `resumed_seconds` a resumed cell's result records for the work its interrupted runs
    stored (a sensitivity measurement's finished blocks). Cells copied in from another
    experiment (`reused_from`) cost this one nothing: they are counted apart, by kind."""
    by_kind: dict[str, list[float]] = {}
    reused: dict[str, list[float]] = {}
    for path in sorted((Path(out) / "cells").glob("*/*/cell.json")):
        try:
            cell = json.loads(path.read_text())
            result = cell.get("result") if isinstance(cell.get("result"), dict) else {}
            seconds = float(cell["seconds"]) + float(result.get("resumed_seconds", 0.0))
            (reused if cell.get("reused_from") else by_kind).setdefault(
                cell["kind"], []).append(seconds)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged cell is reported and recomputed by the runner
    lines = ["**time per stage (seconds as recorded by each cell)**", "",
             "| stage | cells | total min | mean s per cell |", "|---|---|---|---|"]
    for kind, seconds in by_kind.items():
        lines.append(f"| {kind} | {len(seconds)} | {sum(seconds) / 60:.1f} | "
                     f"{sum(seconds) / len(seconds):.1f} |")
    total = sum(sum(s) for s in by_kind.values())
    lines.append(f"| all | {sum(map(len, by_kind.values()))} | {total / 60:.1f} | - |")
    if reused:
        lines += ["", "Taken from another experiment's stored cells (same keys, so the same "
                  "work; its time was spent there): " + ", ".join(
                      f"{len(s)} {kind} ({sum(s) / 60:.1f} min)" for kind, s in reused.items())
                  + "."]
    return "\n".join(lines)


def machines_note(out: str | Path) -> list[str]:
    """Lines naming the machines and builds that computed the cells of `out` (as each cell
    recorded it, reused ones included: a number is made where it was computed), with a warning
    when there is more than one, cells that recorded none (made before 2026-12-04) counted as
    one more; [] when no cell recorded one."""
    counts = stored_machines(Path(out) / "cells")
    if not counts or set(counts) == {"not recorded"}:
        return []
    if len(counts) == 1:
        [(name, n)] = counts.items()
        return [f"All {n} cells computed on {name}.", ""]
    unrecorded = counts.pop("not recorded", 0)
    listed = [f"{n} on {name}" for name, n in counts.items()]
    if unrecorded:  # made before cells recorded it: perhaps elsewhere, nobody can say
        listed.append(f"{unrecorded} made before cells recorded their machine (2026-12-04)")
    heading = ("cells from more than one machine or build" if len(counts) > 1
               else "cells from more than one machine or build, or from an unrecorded one")
    return [f"**{heading}** ({'; '.join(listed)}): float results "
            "repeat bit for bit on one machine and build, not across them (a SparseGPT prune at "
            "70% by 2-8% in held perplexity, docs/experiments.md); between methods whose cells "
            "ran apart, read the t-test over seeds, not one seed's paired p.", ""]


def results_csv(records: list[dict], n_slices: int) -> str:
    """One row per evaluated model, seed and metric."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "slice", "pruner", "sparsity", "seed", "metric", "value", "n"])
    for r in records:
        base = [_label(r, n_slices), r["slice"], r["pruner"], r["sparsity"], r["seed"]]
        for task, t in sorted(r["result"]["tasks"].items()):
            for metric in ("acc", "acc_norm"):
                if metric in t:
                    writer.writerow([*base, f"{metric}:{task}", t[metric], t.get("n")])
        for metric, value in sorted(r["result"].get("mean", {}).items()):
            writer.writerow([*base, f"{metric}:mean", value, ""])
        for source, p in r["result"].get("perplexity", {}).items():
            writer.writerow([*base, f"ppl:{source}", p["perplexity"], p["tokens"]])
    return buffer.getvalue()


def write_report(out: str | Path) -> list[Path]:
    """results.csv, tables.md, plots/*.png and report.html (the tables and plots in one file
    that opens offline) in `out`, each written atomically; returns their paths."""
    out = Path(out)
    manifest, records = collect(out)
    if manifest.get("kind") == "lora-moe":
        return _write_moe_report(out, manifest, records)
    n_slices = len(manifest.get("scores", []))
    groups = group(records, n_slices)
    dense = groups.pop((None, 0.0), None)
    parts = [f"# {manifest['name']}", "", *_partial_note(manifest)]
    if dense:
        parts += [table(dense, "dense (unpruned)"), ""]
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    for (pruner, sparsity), cells in ordered:
        parts += [table(cells, f"{pruner}, {sparsity:.0%} sparsity"), ""]
    moved = group(transfer_records(out, records), n_slices)  # the second text's rows
    if moved:
        moved_dense = moved.pop((None, 0.0), None)
        if moved_dense:
            parts += [table(moved_dense, "second text: dense (unpruned)"), ""]
        for (pruner, sparsity), cells in sorted(moved.items(), key=lambda kv: kv[0]):
            parts += [table(cells, f"second text: {pruner}, {sparsity:.0%} sparsity (the rows "
                                   "the config's transfer names)"), ""]
    against = against_reference_section(out, records, lambda row: _label(row, n_slices),
                                        dict(ordered))
    if against:
        parts += [against, ""]
    searches = searches_section(out, manifest["rows"], lambda row: _label(row, n_slices))
    if searches:
        parts += [searches, ""]
    whole = search_section(out, manifest["rows"], lambda row: _label(row, n_slices))
    if whole:
        parts += [whole, ""]
    section, sensitivity_figures = sensitivity_section(out, manifest)
    if section:
        parts += [section, ""]
    parts += _damaged_note(manifest)
    parts += machines_note(out)
    parts.append(stage_times(out))
    markdown = "\n".join(parts) + "\n"
    paths = [out / "results.csv", out / "tables.md"]
    write_text(paths[0], results_csv(records, n_slices))
    write_text(paths[1], markdown)
    figures = _figures(out, manifest, records, dict(ordered), n_slices) + sensitivity_figures
    figures += search_figures(out, manifest["rows"], lambda row: _label(row, n_slices),
                              out / "plots")
    html = render_html(manifest["name"], markdown, figures)
    write_text(out / "report.html", html)
    return [*paths, *(p for _, p in figures), out / "report.html"]


def _partial_note(manifest: dict) -> list[str]:
    """What a report of an unfinished grid (`experiment run --stored-only`) shows and leaves
    out, first in tables.md."""
    partial = manifest.get("partial")
    if not partial:
        return []
    seeds = ", ".join(map(str, partial["seeds"]))
    shown = (f"the tables show seed {seeds}, every method stored" if partial["whole"] else
             f"no seed is complete yet: the tables show seed {seeds}'s stored rows")
    line = (f"partial grid: {partial['stored']} of {partial['planned']} planned evaluated "
            f"models are stored; {shown}")
    if partial["left_out"]:
        line += f"; {partial['left_out']} stored rows of unfinished seeds are left out"
    if partial["not_run"]:
        line += f"; not run yet: {', '.join(partial['not_run'])}"
    return [line + ". `layerif experiment run` computes the rest.", ""]


def _damaged_note(manifest: dict) -> list[str]:
    if not manifest.get("damaged"):
        return []
    lines = ["**left out: damaged cells** (an artefact does not match its recorded SHA-256; "
             "`layerif experiment run` recomputes them)", ""]
    lines += [f"- cells/{cell}: {why}" for cell, why in manifest["damaged"].items()]
    return [*lines, ""]


def _write_moe_report(out: Path, manifest: dict, records: list[dict]) -> list[Path]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "task", "seed", "metric", "value", "n"])
    writer.writerows(moe_csv_rows(records))
    paths = [out / "results.csv", out / "tables.md"]
    if manifest.get("sweep"):  # a recipe sweep: its table and choice
        from .sweep_report import CHOICE_FILE, sweep_choice, sweep_markdown

        choice = sweep_choice(manifest, records)
        body = sweep_markdown(manifest, records, choice)
        if choice is not None:
            write_json(out / CHOICE_FILE, choice)
            paths.append(out / CHOICE_FILE)
    else:
        body = moe_markdown(manifest, records)
    markdown = "\n".join([body, *_damaged_note(manifest), *machines_note(out),
                          stage_times(out)]) + "\n"
    write_text(paths[0], buffer.getvalue())
    write_text(paths[1], markdown)
    figures = moe_figures(out, manifest, records)
    write_text(out / "report.html", render_html(manifest["name"], markdown, figures))
    return [*paths, *(p for _, p in figures), out / "report.html"]


def _figures(out: Path, manifest: dict, records: list[dict], groups: dict, n_slices: int
             ) -> list[tuple[str, Path]]:
    """(caption, png) for each plot of the report."""
    from .figures import plot_allocations, profile_figures

    plots = out / "plots"
    figures = profile_figures(out, manifest, "LayerIF layer profiles per scoring slice, with "
                              "bootstrap bands")
    by_sparsity: dict[float, dict[str, list[float]]] = {}
    for r in records:
        if r.get("allocation"):
            alloc = json.loads((out / "cells" / "allocation" / r["allocation"] /
                                "alloc.json").read_text())
            by_sparsity.setdefault(r["sparsity"], {}).setdefault(_label(r, n_slices),
                                                                 alloc["ratios"])
    for sparsity, allocations in sorted(by_sparsity.items()):
        figures.append((f"per-layer sparsity of each method at {sparsity:.0%}",
                        plot_allocations(allocations, sparsity,
                                         plots / f"allocations-{sparsity:g}.png")))
    for pruner in sorted({k[0] for k in groups}):
        acc: dict[str, list] = {}
        ppl: dict[str, dict[str, list]] = {}
        for (p, sparsity), cells in groups.items():
            if p != pruner:
                continue
            for c in cells:
                if c.items.size:
                    iv = bootstrap_interval(c.items)
                    acc.setdefault(c.label, []).append(
                        (sparsity, 100 * iv.mean, 100 * iv.low, 100 * iv.high))
                for source, w in c.windows.items():
                    iv = bootstrap_interval(w)
                    ppl.setdefault(source, {}).setdefault(c.label, []).append(
                        (sparsity, *(math.exp(x) for x in (iv.mean, iv.low, iv.high))))
        if acc:
            figures.append(_metric_figure(acc, "mean accuracy %", pruner,
                                          plots / f"accuracy-{pruner}.png", higher=True))
        for i, (source, series) in enumerate(sorted(ppl.items())):
            figures.append(_metric_figure(series, f"perplexity ({source})", pruner,
                                          plots / f"perplexity-{pruner}-{i}.png"))
    return figures


def _metric_figure(series: dict[str, list[tuple]], metric: str, pruner: str, path: Path,
                   higher: bool = False) -> tuple[str, Path]:
    """(caption, png): the metric against sparsity, or per method (best first) when every
    method was evaluated at one sparsity. series: label -> [(sparsity, value, low, high)]."""
    from .figures import plot_against_sparsity, plot_per_method

    sparsities = {point[0] for points in series.values() for point in points}
    if len(sparsities) == 1:
        [sparsity] = sparsities
        title = f"{pruner}, {sparsity:.0%} sparsity"
        values = {label: points[0][1:] for label, points in series.items()}
        return (f"{title}: {metric} per method, best first (95% intervals)",
                plot_per_method(values, metric, title, path, log=not higher,
                                lower_is_better=not higher))
    return (f"{pruner}: {metric} against sparsity (95% intervals)",
            plot_against_sparsity(series, metric, pruner, path, log=not higher))


def render_html(title: str, markdown: str, figures: list[tuple[str, Path]]) -> str:
    """One self-contained page: the markdown tables as HTML tables, the plots inlined."""
    import base64
    import html

    body, rows = [], []

    def flush():
        if rows:
            head, *rest = rows
            body.append("<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in head)
                        + "</tr></thead><tbody>" + "".join(
                            "<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
                            for r in rest) + "</tbody></table>")
            rows.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            if set(line) <= set("|-: "):
                continue  # the separator row
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            rows.append([f"<b>{c[2:-2]}</b>" if c.startswith("**") and c.endswith("**")
                         else c for c in cells])
            continue
        flush()
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("**") and line.endswith("**"):
            body.append(f"<h2>{html.escape(line[2:-2])}</h2>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    for caption, png in figures:
        data = base64.b64encode(png.read_bytes()).decode()
        body.append(f'<figure><img alt="{html.escape(caption)}" '
                    f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}'
                    "</figcaption></figure>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:"
             "collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:"
             "left}img{max-width:100%}")
    # marks each image with the width the browser decoded (0: broken), for checks in a browser
    script = ("addEventListener('load',()=>{for(const i of document.images)"
              "i.dataset.decodedWidth=i.naturalWidth})")
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{style}</style><script>{script}</script></head><body>"
            f"{''.join(body)}</body></html>\n")
