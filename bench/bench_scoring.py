"""Scoring benchmarks on SmolLM2-135M (CPU), printed as ratios against baselines run in the same
invocation. Each configuration runs in its own process so peak memory (ru_maxrss, whole process,
model included) is clean.

    .venv/bin/python bench/bench_scoring.py              # everything (~25 min on 2 cores)
    .venv/bin/python bench/bench_scoring.py --part throughput|memory|exact

throughput: 32 train / 8 val BoolQ texts at 128 tokens, --params attn and all:
    oracle        batch size 1, plain autograd, every per-example gradient materialised (fp32)
    authors       the authors' scheme: one full set of per-example passes per layer, i.e. L x the
                  oracle's gradient passes (extrapolated from the oracle's measured pass time)
    cached        layerif DataInf, cached mode (1 val + 1 train pass)
    streaming     layerif DataInf, streaming mode (1 val + 3 train passes)
memory: peak RSS of streaming mode for n_train = 32, 64, 128 (must be flat within 10%).
exact: per-layer Spearman correlation of exact vs DataInf influences on a tiny model.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN, VAL, MAX_LENGTH = "boolq:validation[0:{n}]", "boolq:validation[200:208]", 128


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_one(config: dict) -> dict:
    """Runs in a child process: one configuration, returns timings and peak memory."""
    import torch

    import layerif
    from layerif.data import encode_examples, load_examples
    from layerif.models import discover_blocks

    torch.manual_seed(0)
    model, tokenizer = layerif.load_model("smollm2-135m", device="cpu")
    train = TRAIN.format(n=config["n_train"])
    start = time.perf_counter()
    if config["method"] == "oracle":
        sys.path.insert(0, str(ROOT / "tests"))
        from oracle import oracle_block_influence

        blocks = discover_blocks(model, config["params"])
        tr = encode_examples(load_examples(train), tokenizer, MAX_LENGTH)
        va = encode_examples(load_examples(VAL), tokenizer, MAX_LENGTH)
        influence = oracle_block_influence(model, blocks, tr, va, "datainf", dtype=torch.float32)
        mode = "batch-1"
    else:
        result = layerif.score_layers(
            model, train, VAL, tokenizer=tokenizer, params=config["params"],
            mode=config["method"], max_length=MAX_LENGTH, progress=False,
        )
        influence, mode = result.influence, result.mode
    seconds = time.perf_counter() - start
    return {**config, "seconds": seconds, "peak_gb": _peak_gb(), "mode": mode,
            "influence": influence.tolist()}


def spawn(config: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(config)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def throughput() -> list[str]:
    import numpy as np

    lines = ["| params | method | seconds | peak RSS (GB) | speed-up vs oracle | "
             "speed-up vs authors | max rel. diff vs oracle |", "|---|---|---|---|---|---|---|"]
    for params in ("attn", "all"):
        runs = {m: spawn({"method": m, "params": params, "n_train": 32})
                for m in ("oracle", "cached", "streaming")}
        oracle = runs["oracle"]
        ref = np.array(oracle["influence"])
        authors = 30 * oracle["seconds"]  # SmolLM2 has 30 blocks: L x the oracle's passes
        lines.append(f"| {params} | oracle (batch 1) | {oracle['seconds']:.1f} | "
                     f"{oracle['peak_gb']:.2f} | 1.00 | {authors / oracle['seconds']:.1f} | 0 |")
        lines.append(f"| {params} | authors' scheme (30 x oracle, extrapolated) | {authors:.0f} "
                     "| - | 0.03 | 1.0 | - |")
        for m in ("cached", "streaming"):
            r = runs[m]
            diff = np.abs(np.array(r["influence"]) - ref).max() / np.abs(ref).max()
            lines.append(
                f"| {params} | layerif {m} | {r['seconds']:.1f} | {r['peak_gb']:.2f} | "
                f"{oracle['seconds'] / r['seconds']:.2f} | {authors / r['seconds']:.1f} | "
                f"{diff:.1e} |")
        print("\n".join(lines[-4:]), flush=True)
    return lines


def memory() -> list[str]:
    lines = ["| n_train | seconds | peak RSS (GB) | ratio to n=32 |", "|---|---|---|---|"]
    base = None
    for n in (32, 64, 128):
        r = spawn({"method": "streaming", "params": "all", "n_train": n})
        base = base or r["peak_gb"]
        lines.append(f"| {n} | {r['seconds']:.1f} | {r['peak_gb']:.2f} | "
                     f"{r['peak_gb'] / base:.3f} |")
        print(lines[-1], flush=True)
    return lines


def exact_vs_datainf() -> list[str]:
    """Exact inverse vs DataInf on a tiny 4-block Llama (the exact inverse is infeasible on
    SmolLM2: its smallest matrix has 110,592 entries)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tiny_model

    import layerif
    from layerif.influence import spearman_per_layer

    tokenizer = layerif.load_tokenizer("smollm2-135m")
    model = build_tiny_model("llama", len(tokenizer), layers=4)
    kw = dict(tokenizer=tokenizer, max_length=64, progress=False)
    train, val = "boolq:validation[0:64]", "boolq:validation[64:80]"
    exact = layerif.score_layers(model, train, val, estimator="exact", **kw)
    datainf = layerif.score_layers(model, train, val, estimator="datainf", **kw)
    tracin = layerif.score_layers(model, train, val, estimator="tracin", **kw)
    rho = spearman_per_layer(exact.influence, datainf.influence)
    rho_t = spearman_per_layer(exact.influence, tracin.influence)
    lines = ["| layer | Spearman(exact, DataInf) | Spearman(exact, TracIn) |", "|---|---|---|"]
    lines += [f"| {layer} | {a:.3f} | {b:.3f} |" for layer, a, b in
              zip(exact.layers, rho, rho_t, strict=True)]
    print("\n".join(lines), flush=True)
    return lines


PARTS = {"throughput": throughput, "memory": memory, "exact": exact_vs_datainf}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    report = []
    for name, part in PARTS.items():
        if args.part in (name, "all"):
            print(f"\n## {name}", flush=True)
            report += [f"\n### {name}\n", *part()]
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"scoring-{args.part}.md").write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
