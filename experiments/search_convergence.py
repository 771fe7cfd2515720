"""The search's convergence study (issue 45): fitness and held perplexity against generations
and tokens, for each start and with and without the mutation bias, on one seed of a search grid.

It continues the grid's own searches (same settings, same workspace: their checkpoints, so the
first generations are the grid's, bit for bit) to --generations, runs the same two searches with
the sensitivity bias (the grid's measured D_l), and at every --every generations prunes the whole
model to the parent's ratios exactly as the grid does (sequential calibration, the seed's
windows) and measures its perplexity on the grid's evaluation text and second text. Those
evaluations choose nothing: the searches never see them. Every measured point is kept as a file,
so a killed study resumes.

    .venv/bin/python experiments/search_convergence.py search-smollm2-wanda70 --seed 0 \\
        --generations 100 --every 10

Writes experiments/results/search-convergence-NAME/{convergence.json, convergence.md,
convergence.png} (and keeps its points in runs/convergence/NAME/).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("grid", help="the search grid's name (experiments/NAME.yaml, run in "
                   "runs/exp/NAME)")
    p.add_argument("--seed", type=int, default=0, help="the calibration seed (default 0)")
    p.add_argument("--generations", type=int, default=100,
                   help="how far each search runs (default 100)")
    p.add_argument("--every", type=int, default=10,
                   help="measure the held perplexity every this many generations (default 10)")
    p.add_argument("--no-bias", action="store_true", help="skip the biased searches")
    args = p.parse_args(argv)

    import numpy as np

    from layerif.allocation.api import allocate_sparsity
    from layerif.data.calibration import calibration_samples
    from layerif.data.provenance import content_set
    from layerif.experiments import load_config
    from layerif.experiments.pruning import run_settings, transfer_settings
    from layerif.io import write_json, write_text
    from layerif.models import load_model
    from layerif.search.run import search_workspace

    config = load_config(ROOT / "experiments" / f"{args.grid}.yaml")
    cells = ROOT / "runs" / "exp" / args.grid / "cells"
    calibration, evaluation, _ = run_settings(config)
    transfer = transfer_settings(config, evaluation)
    keep = ROOT / "runs" / "convergence" / args.grid
    name = args.grid.removeprefix("search-")
    out = ROOT / "experiments" / "results" / f"search-convergence-{name}"
    searches = _grid_searches(cells, args.seed)
    if not searches:
        print(f"{cells}: no search allocation of seed {args.seed} yet; run the grid first "
              f"(bash experiments/run-required.sh {args.grid}).", file=sys.stderr)
        return 2
    sensitivity = next(d for d in sorted((cells / "sensitivity").iterdir())
                       if (d / "cell.json").exists()) / "sensitivity"
    model, tokenizer = load_model(config.model, device="cpu")
    samples = calibration_samples(tokenizer, calibration["source"], calibration["nsamples"],
                                  calibration["seqlen"], args.seed)
    calibration_set = content_set(calibration["source"], "calibration").to_dict()
    variants = []
    for label, arguments in searches.items():
        variants.append((label, arguments))
        if not args.no_bias:
            variants.append((f"{label}-biased", {**arguments, "bias": "sensitivity",
                                                 "sensitivity": str(sensitivity)}))
    results = {}
    for label, arguments in variants:
        began = time.perf_counter()
        with search_workspace(cells / "search-work"):
            alloc = allocate_sparsity(
                "search", config.sparsities[0], model=model, model_name=config.model,
                calibration=samples, calibration_set=calibration_set, tokenizer=tokenizer,
                **{**arguments, "generations": args.generations, "minutes": None,
                   "workspace": None})
        record = alloc.parameters
        print(f"{label}: {record['final']['start_fitness']:.4f} -> "
              f"{record['final']['fitness']:.4f} in {record['convergence']['generations']} "
              f"generations ({time.perf_counter() - began:.0f} s now)", flush=True)
        points = []
        for entry in record["trajectory"]:
            g = entry["generation"]
            if g % args.every and g != record["trajectory"][-1]["generation"]:
                continue
            ratios = (np.asarray(entry["levels"]) * record["ladder"]["step_weights"]
                      / np.asarray(record["ladder"]["params"])).tolist()
            point = _measured(keep / label / f"gen-{g:04d}.json", model, ratios, config,
                              samples, evaluation, transfer)
            points.append({"generation": g, "tokens": entry["tokens"],
                           "fitness": entry["fitness"], "validation": entry.get("validation"),
                           **point})
            print(f"  generation {g}: fitness {entry['fitness']:.4f}, "
                  + ", ".join(f"{s} {v:.2f}" for s, v in point["perplexity"].items()),
                  flush=True)
        results[label] = {"arguments": {k: v for k, v in arguments.items()},
                          "answer": record["final"], "convergence": record["convergence"],
                          "start": record["start"], "points": points,
                          "search_seconds": record["search_seconds"]}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "convergence.json", {"grid": args.grid, "seed": args.seed,
                                          "generations": args.generations, "every": args.every,
                                          "searches": results})
    write_text(out / "convergence.md", _markdown(args, results))
    _plot(results, out / "convergence.png")
    print(f"wrote {out}")
    return 0


def _grid_searches(cells: Path, seed: int) -> dict[str, dict]:
    """label -> the arguments the grid's search allocation of `seed` ran with (its recorded
    arguments: starts already resolved to the grid's allocation files)."""
    found = {}
    for cell in sorted((cells / "allocation").iterdir()):
        record = json.loads((cell / "cell.json").read_text())
        settings = record["settings"]
        if settings.get("method") != "search" or settings.get("seed") != seed:
            continue
        alloc = json.loads((cell / "alloc.json").read_text())
        label = record["label"].rsplit(" ", 2)[0]  # ("search-best 0.7 s0": the grid's label)
        found[label] = dict(alloc["parameters"]["arguments"])
    return dict(sorted(found.items()))


def _measured(path: Path, model, ratios, config, samples, evaluation, transfer) -> dict:
    """The held perplexity of the model pruned to `ratios` (as the grid prunes), kept in
    `path`; the weights are put back afterwards."""
    import torch

    from layerif.data.calibration import perplexity_text
    from layerif.evaluation.perplexity import perplexity
    from layerif.io import write_json
    from layerif.models import discover_blocks, load_tokenizer
    from layerif.pruning.prune import oriented_weight, prune_model

    if path.exists():
        return json.loads(path.read_text())
    pruner = config.pruners[0]
    saved = {m.name: oriented_weight(m).clone() for b in discover_blocks(model)
             for m in b.matrices}
    tokenizer = load_tokenizer(config.model)
    try:
        prune_model(model, ratios, pruner.name, samples, progress=False)
        out = {}
        for settings in (evaluation, transfer):
            if settings is None:
                continue
            for source in settings["ppl"]:
                text, windows = perplexity_text(source)
                out[source] = perplexity(model, tokenizer, text, settings["ppl_seqlen"],
                                         windows, source)["perplexity"]
    finally:
        with torch.no_grad():
            for b in discover_blocks(model):
                for m in b.matrices:
                    oriented_weight(m).copy_(saved[m.name])
    point = {"ratios": ratios, "perplexity": out}
    write_json(path, point)
    return point


def _markdown(args, results: dict) -> str:
    lines = [f"# search convergence: {args.grid}, seed {args.seed}", "",
             "Each search's parent at every measured generation: its fitness on the held "
             "fitness windows, its validation NLL where checked, and the perplexity of the model "
             "pruned to its ratios as the grid prunes (the evaluation texts; never read by the "
             "search).", ""]
    for label, r in results.items():
        sources = list(r["points"][0]["perplexity"]) if r["points"] else []
        lines += [f"**{label}** (start {Path(r['start']).parent.name or r['start']}; answer of "
                  f"generation {r['answer']['generation']}, fitness {r['answer']['fitness']:.4f}"
                  f" [{r['answer']['interval'][0]:.4f}, {r['answer']['interval'][1]:.4f}]; last "
                  f"tenth improved {r['convergence']['last_tenth_improvement']:.4f}: "
                  f"{'converged' if r['convergence']['converged'] else 'not converged'}; "
                  f"{r['search_seconds'] / 60:.0f} min)", "",
                  "| generation | candidate tokens | fitness | validation NLL | "
                  + " | ".join(f"ppl {s}" for s in sources) + " |",
                  "|" + "---|" * (4 + len(sources))]
        for pt in r["points"]:
            v = pt["validation"]
            lines.append(f"| {pt['generation']} | {pt['tokens']:,} | {pt['fitness']:.4f} | "
                         f"{'-' if v is None else f'{v:.4f}'} | "
                         + " | ".join(f"{pt['perplexity'][s]:.2f}" for s in sources) + " |")
        lines.append("")
    return "\n".join(lines)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from layerif.report.plots import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), dpi=120)
    for i, (label, r) in enumerate(results.items()):
        pts = r["points"]
        if not pts:
            continue
        colour = f"C{i}"
        gens = [p["generation"] for p in pts]
        axes[0].plot(gens, [p["fitness"] for p in pts], color=colour, marker="o", ms=3,
                     label=label)
        axes[1].plot([p["tokens"] / 1e6 for p in pts], [p["fitness"] for p in pts],
                     color=colour, marker="o", ms=3, label=label)
        for j, source in enumerate(pts[0]["perplexity"]):
            axes[2].plot(gens, [math.log(p["perplexity"][source]) for p in pts], color=colour,
                         ls="-" if j == 0 else "--", marker="o", ms=3,
                         label=f"{label}: {source}")
    axes[0].set_xlabel("generation")
    axes[1].set_xlabel("candidate tokens (millions)")
    axes[2].set_xlabel("generation")
    axes[0].set_ylabel("fitness (held fitness windows)")
    axes[2].set_ylabel("log perplexity of the pruned model (evaluation texts)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=6)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
