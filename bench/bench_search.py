"""What re-running only the changed blocks saves the search: one candidate's fitness from the
parent's cached block inputs against a full forward of the same candidate, on the same windows,
for mutations drawn as the search draws them (1-3 swaps), on a real model.

    .venv/bin/python bench/bench_search.py --model smollm2-135m [--candidates 12 --windows 2]

Each candidate is timed both ways in the same run (alternating, after a warm-up), on the same
held windows; prints the median seconds of each, their ratio, the mean fraction of the blocks the
cached run skipped, the largest fitness difference between the two (it must be at float
precision) and the seconds one database level takes to write into the model; writes
bench/results/search-MODEL.json and .md."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="built-in name, folder or .gguf")
    parser.add_argument("--candidates", type=int, default=12, help="mutations timed (default 12)")
    parser.add_argument("--windows", type=int, default=2,
                        help="held windows of 512 tokens per candidate (default 2: the fast "
                        "preset's first stage)")
    parser.add_argument("--workspace", default=str(ROOT / "runs" / "bench-search"),
                        help="where the level database is kept")
    args = parser.parse_args()

    import numpy as np
    import torch

    from layerif.data.calibration import calibration_samples
    from layerif.fingerprint import model_fingerprint
    from layerif.models import discover_blocks, load_model
    from layerif.pruning.pruners import make_pruner
    from layerif.search import Ladder, LevelDatabase, WholeModelFitness, held_text, mutate
    from layerif.search.database import database_key
    from layerif.search.fitness import full_forward_fitness

    model, tokenizer = load_model(args.model, device="cpu")
    model.eval()
    params = [sum(m.numel for m in b.matrices) for b in discover_blocks(model)]
    ladder = Ladder.build(params, 0.7, 0.02, 0.4, 0.95)
    calibration = calibration_samples(tokenizer, "sciq:validation[0:600]", 32, 512, 0)
    pruner = make_pruner("wanda")
    key = database_key(model_fingerprint(model, args.model), pruner, calibration, ladder,
                       torch.float32)
    database = LevelDatabase(model, ladder, Path(args.workspace) / key)
    database.build(pruner, calibration, {"key": key}, progress=True)
    database.preload()
    text = held_text(tokenizer, "sciq:validation[800:1000]+hellaswag:validation[0:1000]",
                     max(args.windows, 2), 512)
    fitness = WholeModelFitness(model, database, text, "kl")
    rng = np.random.default_rng(0)
    parent = ladder.uniform()
    fitness.adopt(parent)
    windows = list(range(args.windows))
    cached, full, skipped, diffs = [], [], [], []
    began = time.perf_counter()
    database.apply(0, ladder.low[0])
    apply_s = time.perf_counter() - began
    database.apply(0, parent[0])
    fitness.current[0] = parent[0]
    for i in range(args.candidates + 1):  # the first of each: warm-up, not counted
        child = mutate(parent, ladder, rng)
        f = fitness.first_change(child)
        t0 = time.perf_counter()
        a = fitness.evaluate(child, windows)
        t1 = time.perf_counter()
        fitness.set_levels(child)
        b = float(np.mean(full_forward_fitness(model, [text.windows[w] for w in windows],
                                                "kl", [fitness.targets[w] for w in windows])))
        t2 = time.perf_counter()
        if i:
            cached.append(t1 - t0)
            full.append(t2 - t1)
            skipped.append(f / len(params))
            diffs.append(abs(a - b))
    database.restore()
    result = {"model": args.model, "candidates": args.candidates, "windows": args.windows,
              "tokens_per_candidate": args.windows * 512,
              "cached_s_median": statistics.median(cached),
              "full_s_median": statistics.median(full),
              "speedup": statistics.median(full) / statistics.median(cached),
              "blocks_skipped_mean": float(np.mean(skipped)),
              "max_fitness_difference": max(diffs), "apply_level_s": apply_s,
              "threads": torch.get_num_threads()}
    from layerif.environment import machine_record

    result["machine"] = machine_record()
    out = ROOT / "bench" / "results" / f"search-{Path(args.model).name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = (f"# search: cached re-run against a full forward ({args.model})\n\n"
          f"{args.candidates} candidates (1-3 swaps each, as the search draws them), "
          f"{args.windows} x 512 tokens each, both ways in the same run, "
          f"{result['threads']} threads:\n\n"
          "| full forward (median s) | from the first changed block (median s) | ratio | "
          "blocks skipped (mean) | largest fitness difference |\n|---|---|---|---|---|\n"
          f"| {result['full_s_median']:.2f} | {result['cached_s_median']:.2f} | "
          f"{result['speedup']:.2f}x | {result['blocks_skipped_mean']:.0%} | "
          f"{result['max_fitness_difference']:.1e} |\n\n"
          f"Writing one database level into the model: {apply_s * 1000:.0f} ms.\n")
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
