"""A LoRA-MoE recipe sweep's table and choice (`kind: lora-moe` with `recipes`).

Every candidate (task x recipe) is fine-tuned by each method of the sweep (plain LoRA, uniform
LoRA-MoE, ...) and evaluated on the task's `select` rows, validation rows disjoint from every
evaluation row. Its gain over the base model on those rows, per fine-tuned method and seeds
averaged, is
    generative:      accuracy - the base model's best generative accuracy (zero-shot or k-shot)
    log-likelihood:  accuracy - the base model's (lm-eval, zero-shot)
and the candidate's criterion is the mean over methods of the smaller of the two (a setting
where fine-tuning helps must help on both). The choice is the candidate with the highest
criterion (the first listed on a tie); `choice.json` records it, with the task entry and training
keys a grid takes (`selection: .../choice.json`) and the rows the choice was made on, which that
grid's evaluation rows must not share.
"""

from __future__ import annotations

import numpy as np

from .moe_report import _items

CHOICE_FILE = "choice.json"


def _mean(records: list[dict], metric: str) -> float | None:
    """The metric's mean over items and seeds (None when no record has it)."""
    values = [_items(r["result"], metric).mean() for r in records
              if metric in _task(r["result"])["per_item"]]
    return float(np.mean(values)) if values else None


def _task(result: dict) -> dict:
    (task,) = result["tasks"].values()
    return task


def sweep_candidates(manifest: dict, records: list[dict]) -> list[dict]:
    """Per candidate: {recipe, task, training, methods: {method: {gen, acc, gain_gen,
    gain_acc}}, base: {gen, gen_shots, acc}, criterion} (accuracies as fractions; a candidate
    whose rows are not all evaluated yet has criterion None)."""
    out = []
    for cand in manifest["sweep"]["candidates"]:
        task = cand["task"]["task"]
        base = [r for r in records if r["task"] == task and r["method"] == "base"]
        shots = [r for r in records if r["task"] == task and r["seed"] is None
                 and r["method"].startswith("base-")]
        base_gen = _mean(base, "gen_acc")
        shots_gen = _mean(shots, "gen_acc")
        base_acc = _mean(base, "acc")
        best_gen = max((g for g in (base_gen, shots_gen) if g is not None), default=None)
        methods: dict[str, dict] = {}
        for r in records:
            if r["task"] == task and r.get("recipe") == cand["recipe"] and r["seed"] is not None:
                methods.setdefault(r["method"], []).append(r)
        rows = {}
        for method, rs in methods.items():
            gen, acc = _mean(rs, "gen_acc"), _mean(rs, "acc")
            rows[method] = {"gen": gen, "acc": acc, "seeds": len(rs),
                            "gain_gen": None if best_gen is None else gen - best_gen,
                            "gain_acc": None if base_acc is None else acc - base_acc}
        gains = [min(m["gain_gen"], m["gain_acc"]) for m in rows.values()
                 if m["gain_gen"] is not None and m["gain_acc"] is not None]
        complete = bool(rows) and len(gains) == len(rows)
        out.append({"recipe": cand["recipe"], "task": cand["task"], "training": cand["training"],
                    "base": {"gen": base_gen, "gen_shots": shots_gen, "acc": base_acc},
                    "methods": rows,
                    "criterion": float(np.mean(gains)) if complete else None})
    return out


def sweep_choice(manifest: dict, records: list[dict]) -> dict | None:
    """The choice.json of a finished sweep (None while a candidate lacks a result)."""
    table = sweep_candidates(manifest, records)
    if not table or any(c["criterion"] is None for c in table):
        return None
    best = max(range(len(table)), key=lambda i: (table[i]["criterion"], -i))
    chosen = table[best]
    return {"sweep": manifest["name"], "recipe": chosen["recipe"], "task": chosen["task"],
            "training": chosen["training"], "criterion": chosen["criterion"],
            "select": manifest["sweep"]["select"],
            "rule": "highest mean over fine-tuned methods of min(generative gain over the base "
                    "model's best prompt, log-likelihood gain), on the select rows",
            "candidates": table}


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def sweep_markdown(manifest: dict, records: list[dict], choice: dict | None) -> str:
    table = sweep_candidates(manifest, records)
    methods = list(dict.fromkeys(m for c in table for m in c["methods"]))
    selects = ", ".join(f"`{s}`" for s in manifest["sweep"]["select"].values())
    lines = [f"# {manifest['name']}", "",
             f"A recipe sweep: every candidate evaluated on validation rows only ({selects}), "
             "never on evaluation rows. Accuracy in %, seeds averaged; gain: over the base "
             "model (generative: its better of zero-shot and k-shot; log-likelihood: "
             "zero-shot). criterion: the mean over methods of the smaller gain.", "",
             "| task | recipe | rows | epochs | lr | base gen 0-shot / k-shot / ll | "
             + " | ".join(f"{m} gen / ll (gain)" for m in methods) + " | criterion |",
             "|" + "---|" * (len(methods) + 7)]
    for c in table:
        b = c["base"]
        cells = []
        for m in methods:
            r = c["methods"].get(m)
            cells.append("-" if r is None else
                         f"{_pct(r['gen'])} / {_pct(r['acc'])} ({_pct(r['gain_gen'], True)} / "
                         f"{_pct(r['gain_acc'], True)})")
        chosen = choice is not None and c["recipe"] == choice["recipe"] \
            and c["task"]["task"] == choice["task"]["task"]
        mark = " **chosen**" if chosen else ""
        lines.append(f"| {c['task']['task']} | {c['recipe']} | `{c['task']['train']}` | "
                     f"{c['training']['epochs']} | {c['training']['lr']:g} | "
                     f"{_pct(b['gen'])} / {_pct(b['gen_shots'])} / {_pct(b['acc'])} | "
                     + " | ".join(cells) + f" | {_pct(c['criterion'], True)}{mark} |")
    lines.append("")
    if choice is None:
        lines.append("No choice yet: a candidate has no result.")
    else:
        lines.append(f"Chosen: {choice['task']['task']} {choice['recipe']} (criterion "
                     f"{_pct(choice['criterion'], True)} points), written to {CHOICE_FILE}.")
    return "\n".join(lines) + "\n"
