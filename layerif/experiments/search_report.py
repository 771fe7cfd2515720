"""The report's section on the whole-model search (method `search`) and on the grid's second
evaluation text (`transfer`).

Per search row and seed, read from its allocation cell: where it started (the grid row it took,
or a method computed in place), its fitness on the held fitness windows at the start and at the
answer with a bootstrap interval over those windows, the gain (start minus answer, paired over
windows), the generation the validation text picked, whether the last tenth of the generations
still moved the fitness by more than half the interval (converged or not), the tokens its
candidates ran and its minutes (database and search apart). Beside the gain on the fitness text,
the gain on the evaluation texts: the search row's mean NLL per token minus its start row's, on
the same windows and seed (negative: the search is better there too), so that the transfer is
measured, not assumed. Then, per seed, whether two searches from different starts land within
each other's interval. The second text's table has the rows `transfer` names, Table-2 shaped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..sensitivity.measure import bootstrap_interval as window_interval
from .pruning import load_eval


def _alloc(out: Path, key: str) -> dict:
    return json.loads((out / "cells" / "allocation" / key / "alloc.json").read_text())


def _start_key(name: str) -> str | None:
    """The allocation cell a start names (`.../allocation/KEY/alloc.json`), or None."""
    parts = Path(name).parts
    return parts[-2] if len(parts) >= 3 and parts[-3] == "allocation" else None


def _window_nll(result: dict) -> dict[str, np.ndarray]:
    return {s: np.asarray(p["window_nll"], dtype=np.float64) / (p["tokens"] / p["windows"])
            for s, p in result.get("perplexity", {}).items()}


def _nll_gain(out: Path, row: dict, start_row: dict | None, kind: str) -> str:
    """The search row's mean NLL per token minus its start row's on each text of the
    evaluation `kind` ("eval" or "transfer"), with a bootstrap interval over the windows."""
    if start_row is None or not row.get(kind) or not start_row.get(kind):
        return "-"
    mine, theirs = _window_nll(load_eval(out, row[kind])), _window_nll(load_eval(out,
                                                                              start_row[kind]))
    parts = []
    for source, values in mine.items():
        if source in theirs and len(theirs[source]) == len(values):
            d = values - theirs[source]
            low, high = window_interval(d)
            parts.append(f"{d.mean():+.4f} [{low:+.4f}, {high:+.4f}]")
    return "; ".join(parts) or "-"


def search_rows(out: Path, rows: list[dict]) -> list[tuple[dict, dict]]:
    """(row, its allocation's search record) for every evaluated row a search made."""
    found = []
    for row in rows:
        if row.get("allocation"):
            alloc = _alloc(out, row["allocation"])
            if alloc["method"] == "search":
                found.append((row, alloc["parameters"]))
    return found


def search_section(out: str | Path, rows: list[dict], label: Callable[[dict], str]) -> str:
    """The markdown of the section (module docstring); empty without a search row."""
    out = Path(out)
    found = search_rows(out, rows)
    if not found:
        return ""
    by_alloc = {(r["allocation"], r["seed"], r["pruner"]): r for r in rows if r.get("allocation")}
    lines = ["**the whole-model search** (fitness: "
             f"{found[0][1]['fitness']['kind']} from the dense model on "
             f"{' + '.join(found[0][1]['fitness']['sources'])}, "
             f"{found[0][1]['fitness']['tokens']} tokens; the answer picked by the NLL on "
             f"{_validation(found[0][1])}; interval: bootstrap over the held windows; gain: "
             "start minus answer, paired; on the evaluation texts: the search row's NLL per "
             "token minus its start row's, same windows and seed, negative = better)", "",
             "| method | seed | start | fitness: start -> answer [95% CI] | gain [95% CI] | "
             "answer's generation / run | last tenth improved (converged?) | on the evaluation "
             "text | on the second text | candidate tokens | minutes (database + search) |",
             "|" + "---|" * 11]
    for row, record in sorted(found, key=lambda f: (label(f[0]), f[0]["seed"] or 0)):
        final, conv = record["final"], record["convergence"]
        start_key = _start_key(record["start"])
        start_row = by_alloc.get((start_key, row["seed"], row["pruner"])) if start_key else None
        start = label(start_row) if start_row else (
            record["start"] if start_key is None else "a grid allocation")
        low, high = final["interval"]
        glow, ghigh = final["gain_interval"]
        lines.append(
            f"| {label(row)} | {row['seed']} | {start} | {final['start_fitness']:.4f} -> "
            f"{final['fitness']:.4f} [{low:.4f}, {high:.4f}] | {final['gain']:+.4f} "
            f"[{glow:+.4f}, {ghigh:+.4f}] | {final['generation']} / {conv['generations']} | "
            f"{conv['last_tenth_improvement']:.4f} ({'yes' if conv['converged'] else 'no'}) | "
            f"{_nll_gain(out, row, start_row, 'eval')} | "
            f"{_nll_gain(out, row, start_row, 'transfer')} | {record['tokens']:,} | "
            f"{record['database']['seconds'] / 60:.1f} + {record['search_seconds'] / 60:.1f} |")
    restarts = _restarts(found, label)
    if restarts:
        lines += ["", "**restarts from different starts** (the two answers' fitness on the same "
                  "held windows: paired difference with its interval; within = each answer's "
                  "fitness lies in the other's interval)", "",
                  "| seed | searches | fitness | difference [95% CI] | within each other's "
                  "interval |", "|---|---|---|---|---|", *restarts]
    return "\n".join(lines)


def _validation(record: dict) -> str:
    validation = record.get("validation")
    return " + ".join(validation["sources"]) if validation else "(no validation text)"


def _restarts(found: list[tuple[dict, dict]], label) -> list[str]:
    lines = []
    by_seed: dict = {}
    for row, record in found:
        by_seed.setdefault((row["seed"], row["pruner"]), []).append((row, record))
    for (seed, _), searches in sorted(by_seed.items(), key=lambda kv: kv[0][0] or 0):
        for i, (a, ra) in enumerate(searches):
            for b, rb in searches[i + 1:]:
                wa = np.asarray(ra["final"]["window_fitness"])
                wb = np.asarray(rb["final"]["window_fitness"])
                if wa.shape != wb.shape or ra["fitness"] != rb["fitness"]:
                    continue
                low, high = window_interval(wa - wb)
                ia, ib = ra["final"]["interval"], rb["final"]["interval"]
                within = ia[0] <= wb.mean() <= ia[1] and ib[0] <= wa.mean() <= ib[1]
                lines.append(f"| {seed} | {label(a)} vs {label(b)} | {wa.mean():.4f} vs "
                             f"{wb.mean():.4f} | {wa.mean() - wb.mean():+.4f} [{low:+.4f}, "
                             f"{high:+.4f}] | {'yes' if within else 'no'} |")
    return lines


def transfer_records(out: str | Path, records: list[dict]) -> list[dict]:
    """The evaluated rows that have a second-text evaluation, each with that as its result."""
    return [{**r, "result": load_eval(out, r["transfer"])} for r in records
            if r.get("transfer")]


def search_figures(out: str | Path, rows: list[dict], label, plots: Path) -> list:
    """One trajectory plot per seed and pruner with a search (figures: (caption, path))."""
    from ..report import plot_search_trajectories

    found = search_rows(Path(out), rows)
    by_seed: dict = {}
    for row, record in found:
        by_seed.setdefault((row["pruner"], row["seed"]), {})[label(row)] = record
    figures = []
    for (pruner, seed), searches in sorted(by_seed.items(), key=lambda kv: (kv[0][0],
                                                                           kv[0][1] or 0)):
        path = plots / f"search-{pruner}-seed{seed}.png"
        plot_search_trajectories(searches, path, title=f"search ({pruner}, seed {seed}): the "
                                 "parent's fitness")
        figures.append((f"search trajectories, {pruner}, seed {seed}", path))
    return figures
