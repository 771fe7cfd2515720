"""The tables and plots of a LoRA-MoE grid (`kind: lora-moe`), for `experiment report`.

- per task: generative accuracy with its bootstrap 95% interval, log-likelihood (lm-eval)
  accuracy, and the share of items given the most common generated answer (an adapter that
  collapsed onto one answer shows ~100% there and the majority row's accuracy), seeds averaged
  item by item;
- mean over all items, generative and log-likelihood, Table-2 shaped by `report.table`: the
  paired difference to the best baseline (uniform, mola, alphalora: the non-LayerIF method with
  the highest mean) with its bootstrap interval and p-value, and the paired t-test over seeds;
- the no-skill row: always the fine-tuning slice's majority answer;
- the seed spread: each method's per-seed means, and how many seeds (or evaluation rows) a
  difference of 1.5 points would need to be told apart.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..evaluation.paired import bootstrap_interval
from .tables import Cell, table


def _items(result: dict, metric: str) -> np.ndarray:
    (task,) = result["tasks"].values()
    return np.asarray(task["per_item"][metric], dtype=float)


def _top_share(result: dict) -> float:
    """The share of the items whose generated answer is the most common one (unanswered items
    count as not answered, never as an answer)."""
    (task,) = result["tasks"].values()
    predicted = [g["predicted"] for g in task["generations"]]
    counts = Counter(p for p in predicted if p is not None)
    return counts.most_common(1)[0][1] / len(predicted) if counts else 0.0


def _by_method(records: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """method -> task -> its records (one per seed), in config order."""
    out: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        out.setdefault(r["method"], {}).setdefault(r["task"], []).append(r)
    return out


def _mean_cell(label: str, per_task: dict[str, list[dict]], tasks: list[str], metric: str
               ) -> Cell:
    """Items of every task in task order, each averaged over seeds; per-seed means."""
    seeds = len(per_task[tasks[0]])
    items = np.concatenate([np.mean([_items(r["result"], metric) for r in per_task[t]], axis=0)
                            for t in tasks])
    seed_means = [float(np.concatenate([_items(per_task[t][i]["result"], metric)
                                        for t in tasks]).mean()) for i in range(seeds)]
    baseline = not (label.startswith("layerif") or label == "base")
    return Cell(label, baseline, items, seed_means, {}, {})


def majority_row(manifest: dict, records: list[dict], tasks: list[str]) -> list[str]:
    """Per task: accuracy of always answering the fine-tuning slice's most common answer."""
    from ..data.instruct import load_instruct

    trains = {t["task"]: t["train"] for t in manifest.get("tasks", [])}
    cells = []
    for task in tasks:
        result = next(r["result"] for r in records if r["task"] == task)
        gold = [g["gold"] for g in result["tasks"][task]["generations"]]
        if task not in trains:
            cells.append("-")
            continue
        top = Counter(it.answer for it in load_instruct(trains[task])).most_common(1)[0][0]
        cells.append(f"{100 * gold.count(top) / len(gold):.1f} ({top})")
    return cells


def moe_markdown(manifest: dict, records: list[dict]) -> str:
    tasks = list(dict.fromkeys(r["task"] for r in records))
    methods = _by_method(records)
    seeds = sorted({r["seed"] for r in records if r["seed"] is not None})
    lines = [f"# {manifest['name']}", "",
             f"LoRA-MoE per method, {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); "
             "accuracy in %, seeds averaged item by item.", "",
             "**per task: generative acc [95% CI] / log-likelihood acc / share of items given "
             "the most common answer**", "",
             "| method | experts | " + " | ".join(tasks) + " |",
             "|" + "---|" * (len(tasks) + 2)]
    for label, per_task in methods.items():
        row = [label, _size(next(iter(per_task.values()))[0])]
        for task in tasks:
            rs = per_task.get(task, [])
            if not rs:
                row.append("-")
                continue
            gen = bootstrap_interval(np.mean([_items(r["result"], "gen_acc") for r in rs],
                                             axis=0))
            mc = (f"{100 * np.mean([_items(r['result'], 'acc').mean() for r in rs]):.1f}"
                  if all(_has(r, "acc") for r in rs) else "-")
            top = np.mean([_top_share(r["result"]) for r in rs])
            row.append(f"{100 * gen.mean:.1f} [{100 * gen.low:.1f}, {100 * gen.high:.1f}] / "
                       f"{mc} / {100 * top:.0f}%")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("| always the training slice's majority answer | - | "
                 + " | ".join(majority_row(manifest, records, tasks)) + " |")
    complete = {m: p for m, p in methods.items() if all(t in p for t in tasks)}
    for metric, name in (("gen_acc", "generative accuracy"),
                         ("acc", "log-likelihood accuracy (lm-eval)")):
        cells = [_mean_cell(m, p, tasks, metric) for m, p in complete.items()
                 if all(_has(r, metric) for t in tasks for r in p[t])]
        lines += ["", table(cells, f"mean {name} over the {', '.join(tasks)} items")]
    lines += seed_spread(complete, tasks)
    lines += _reference_note(manifest, records)
    return "\n".join(lines) + "\n"


# a difference this large is what the anchors report between allocations (MoLA's best pattern
# over uniform: 0.4-1.6 points); z for a two-sided 5% test plus z for 80% power
DETECT_POINTS = 1.5
_Z = 1.959964 + 0.841621


def seed_spread(methods: dict[str, dict[str, list[dict]]], tasks: list[str]) -> list[str]:
    """Per method and metric, the mean accuracy of each seed (all tasks' items) and their
    standard deviation; then, from uniform's (else the first fine-tuned method's) spread, the
    seeds a paired comparison needs to tell two methods 1.5 points apart (80% power, 5%
    two-sided, normal approximation: n = 2 (z sd / 1.5)^2 with sd over seeds), and the
    evaluation rows one seed needs (n = (z sd_d / 1.5)^2, sd_d the standard deviation of the
    per-item difference to the reference method, median over methods). Empty below 2 seeds."""

    def per_seed(per_task: dict[str, list[dict]], metric: str) -> list[float]:
        n = len(per_task[tasks[0]])
        return [100 * float(np.concatenate([_items(per_task[t][i]["result"], metric)
                                            for t in tasks]).mean()) for i in range(n)]

    tuned = [m for m, p in methods.items() if len(p[tasks[0]]) >= 2]
    if not tuned:
        return []
    lines = ["", "**seed spread: mean accuracy % of each seed (generative / log-likelihood), "
                 "standard deviation over seeds**", "",
             "| method | generative per seed | sd | log-likelihood per seed | sd |",
             "|---|---|---|---|---|"]
    for m in tuned:
        cols = []
        for metric in ("gen_acc", "acc"):
            if not all(_has(r, metric) for t in tasks for r in methods[m][t]):
                cols += ["-", "-"]
                continue
            values = per_seed(methods[m], metric)
            cols += [" / ".join(f"{v:.1f}" for v in values), f"{np.std(values, ddof=1):.1f}"]
        lines.append(f"| {m} | " + " | ".join(cols) + " |")
    ref = "uniform" if "uniform" in tuned else tuned[0]
    notes = []
    for metric, name in (("gen_acc", "generative"), ("acc", "log-likelihood")):
        if not all(_has(r, metric) for t in tasks for r in methods[ref][t]):
            continue
        sd = float(np.std(per_seed(methods[ref], metric), ddof=1))
        seeds = int(np.ceil(2 * (_Z * sd / DETECT_POINTS) ** 2))
        ref_items = np.concatenate([_items(methods[ref][t][0]["result"], metric)
                                    for t in tasks])
        sds = [float(np.std(100 * (ref_items - np.concatenate(
                   [_items(methods[m][t][0]["result"], metric) for t in tasks])), ddof=1))
               for m in tuned if m != ref
               and all(_has(r, metric) for t in tasks for r in methods[m][t])]
        n_rows = int(np.ceil((_Z * np.median(sds) / DETECT_POINTS) ** 2)) if sds else 0
        rows = (f"; the items' sampling alone: ~{n_rows} evaluation rows per seed (per-item "
                f"difference sd {np.median(sds):.0f} points)" if sds else "")
        notes.append(f"{name}: {ref}'s seeds spread sd {sd:.1f} points, so telling two methods "
                     f"{DETECT_POINTS} points apart needs ~{max(seeds, 2)} seeds per method"
                     + rows)
    if notes:
        lines += ["", "To tell allocations " + f"{DETECT_POINTS} points apart (80% power, 5% "
                  "two-sided): " + "; ".join(notes) + "."]
    return lines


def _has(record: dict, metric: str) -> bool:
    (task,) = record["result"]["tasks"].values()
    return metric in task.get("per_item", {})


def _size(record: dict) -> str:
    """The experts column: a mixture's experts; plain LoRA's rank and trainable parameters."""
    if record.get("rank"):
        return (f"LoRA r{record['rank']}: {record['parameters'] / 1e6:.2f}M params (uniform "
                f"mixture {record['mixture_parameters'] / 1e6:.2f}M)")
    return str(sum(record.get("experts") or []) or "-")


def _reference_note(manifest: dict, records: list[dict]) -> list[str]:
    """Where the rows' setting came from, and what the k-shot base row was shown."""
    lines = []
    if manifest.get("selection"):
        lines += ["", f"Tasks and training from the sweep's choice `{manifest['selection']}` "
                      "(made on validation rows this grid's evaluation rows do not share)."]
    shots = {r["task"]: r["shots"] for r in records if r.get("shots")}
    if shots:
        lines += ["", "k-shot base rows: generative accuracy after worked examples ("
                  + "; ".join(f"{t}: `{s}`" for t, s in shots.items()) + "), rows shared with "
                  "no evaluation or fine-tuning row; their log-likelihood accuracy is the "
                  "zero-shot base row's."]
    return lines


def moe_figures(out: Path, manifest: dict, records: list[dict]) -> list[tuple[str, Path]]:
    from ..report.plots import plot_expert_allocations
    from .figures import profile_figures

    plots = out / "plots"
    figures = profile_figures(out, manifest, "LayerIF layer profiles per task, with bootstrap "
                              "bands")
    for task in dict.fromkeys(r["task"] for r in records):
        allocations = {r["method"]: r["experts"] for r in records
                       if r["task"] == task and r.get("experts")}
        if not allocations:
            continue
        n_layers = len(next(iter(allocations.values())))
        figures.append((f"{task}: experts per layer of each method",
                        plot_expert_allocations(list(range(n_layers)), allocations,
                                                plots / f"experts-{task}.png",
                                                title=f"{task}: experts per layer")))
    return figures


def moe_csv_rows(records: list[dict]) -> list[list]:
    """[method, task, seed, metric, value, n] per evaluated adapter and metric."""
    rows = []
    for r in records:
        for task, t in r["result"]["tasks"].items():
            for metric in ("gen_acc", "acc", "acc_norm"):
                if metric in t:
                    rows.append([r["method"], task, r["seed"], metric, t[metric], t.get("n")])
    return rows
