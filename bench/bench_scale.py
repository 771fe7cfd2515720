"""Scale: time per training example and peak memory of `layerif score` against model size and
the number of processes, each as a ratio against one forward+backward pass of the same batch
(the floor any per-example method pays), on models built from the configs of real families with
random weights (seeded; influence and pruning costs do not depend on trained weights), so no
download is needed.

    .venv/bin/python bench/bench_scale.py --models smollm2-135m,qwen2.5-0.5b,llama-3.2-1b
    .venv/bin/python bench/bench_scale.py --models mistral-7b --device cuda --dtype bfloat16 \\
        --train 300 --val 50                                  # on a GPU
    .venv/bin/python bench/bench_scale.py --processes 1,2     # SmolLM2, gloo on the CPU

Every measurement is a fresh process timed from outside (wall seconds, peak RSS via os.wait4;
on CUDA the peak GPU memory torch reports). `score` runs with --params all in streaming mode
(memory independent of n_train), n_train / n_val BoolQ texts at --tokens tokens; its memory
plan's estimate is recorded next to the measured peak. The floor is one training pass of one
batch of the same examples (weights requiring gradients, loss.backward()), timed after a warm-up
pass. Random-weight folders are written once under runs/bench-models/. Results:
bench/results/scale-DEVICE.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "runs" / "bench-models"
RESULTS = ROOT / "bench" / "results"

# The published configs' shapes (hub config.json of each family).
SHAPES = {
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6),
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192,
                         num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         head_dim=64, vocab_size=128256, tie_word_embeddings=True,
                         rope_theta=5e5),
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       vocab_size=32000, tie_word_embeddings=False, sliding_window=None),
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       vocab_size=32000, tie_word_embeddings=False),
}


def model_folder(name: str, dtype: str) -> str:
    """A built-in real model (SmolLM2, Qwen2.5-Coder) itself, or a random-weight folder with a
    family's shape (built once, seed 0, the SmolLM2 tokenizer: its ids fit every vocabulary
    here)."""
    from layerif.models import BUILTIN_MODELS

    if name in BUILTIN_MODELS:  # a real model (Qwen2.5-Coder: scripts/setup.sh --qwen)
        return name
    folder = MODELS_DIR / f"{name}-{dtype}"
    if (folder / "config.json").exists():
        return str(folder)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from layerif.models import DTYPES, load_tokenizer

    shape = dict(SHAPES[name])
    config = AutoConfig.for_model(shape.pop("model_type"), max_position_embeddings=4096,
                                  **shape)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype])
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    load_tokenizer("smollm2-135m").save_pretrained(tmp)
    tmp.rename(folder)
    return str(folder)


def timed(cmd: list[str], env: dict | None = None) -> tuple[dict, str]:
    """A whole process: (wall seconds and peak RSS GB, its stderr)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return {"seconds": seconds, "stdout": out}, err


def floor_job(model: str, n: int, tokens: int, device: str, dtype: str) -> None:
    """Child process: one training forward+backward of one batch of n examples (after a
    warm-up pass); prints its seconds and the peak GPU memory."""
    import torch

    from layerif.data import encode_examples, load_examples, make_batches
    from layerif.data.encode import batch_losses
    from layerif.models import load_model

    net, tokenizer = load_model(model, device=device, dtype=dtype)
    batch = make_batches(encode_examples(load_examples(f"boolq:validation[0:{n}]"), tokenizer,
                                         tokens), n, tokenizer.pad_token_id)[0].to(device)
    for p in net.parameters():
        p.requires_grad_(True)
    seconds = []
    for _ in range(2):
        net.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        batch_losses(net, batch).sum().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    gpu = torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else None
    print(json.dumps({"seconds": seconds[-1], "gpu_peak_gb": gpu}))


def measure(name: str, args, processes: int = 1) -> dict:
    from resource import RUSAGE_CHILDREN, getrusage

    model = model_folder(name, args.dtype)
    floor, _ = timed([sys.executable, __file__, "--floor", model, "--n", str(args.batch_size),
                      "--tokens", str(args.tokens), "--device", args.device,
                      "--dtype", args.dtype])
    floor = json.loads(floor["stdout"].strip().splitlines()[-1])
    out = ROOT / "runs" / "bench-scale" / f"{name}-{processes}"
    score = ["-m", "layerif", "score", "--model", model, "--train",
             f"boolq:validation[0:{args.train}]", "--val",
             f"boolq:validation[{args.train}:{args.train + args.val}]", "--max-length",
             str(args.tokens), "--batch-size", str(args.batch_size), "--mode", "streaming",
             "--params", "all", "--device", args.device, "--dtype", args.dtype,
             "--bootstrap", "10", "--no-resume", "--out", str(out)]
    before = getrusage(RUSAGE_CHILDREN).ru_maxrss
    if processes == 1:
        run, err = timed([sys.executable, *score])
    else:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        run, err = timed([torchrun, "--nproc_per_node", str(processes), *score])
    peak = getrusage(RUSAGE_CHILDREN).ru_maxrss
    planned = re.search(r"peak \(estimated\)\s+([\d.]+) GiB", err)
    meta = json.loads((out / "scores.json").read_text())
    return {"model": name, "processes": processes,
            "n_train": args.train, "n_val": args.val, "tokens": args.tokens,
            "device": args.device, "dtype": args.dtype, "wall_s": run["seconds"],
            "score_s": meta["seconds"],
            "floor_s_per_example": floor["seconds"] / args.batch_size,
            "ratio_to_floor": meta["seconds"] / args.train
            / (floor["seconds"] / args.batch_size),
            # ru_maxrss of children is the largest child so far: a new maximum is this run's
            "peak_rss_gb": peak * 1024 / 1e9 if peak > before else None,
            "planned_gib": float(planned.group(1)) if planned else None,
            "floor_gpu_peak_gb": floor["gpu_peak_gb"]}


def measure_prune(name: str, args) -> dict:
    """`prune --pruner sparsegpt` on the model: its peak RSS against the plan, and what it held
    above the model's own weights, against one block's weights in fp32 plus the calibration
    activations (what block-by-block pruning should keep at most besides the model)."""
    from resource import RUSAGE_CHILDREN, getrusage

    from layerif.memory import DTYPE_BYTES, RUNTIME_CPU
    from layerif.models import discover_blocks, load_skeleton

    model = model_folder(name, args.dtype)
    alloc = ROOT / "runs" / "bench-scale" / f"{name}-uniform.json"
    alloc.parent.mkdir(parents=True, exist_ok=True)
    timed([sys.executable, "-m", "layerif", "allocate", "sparsity", "--method", "uniform",
           "--sparsity", "0.5", "--model", model, "--out", str(alloc)])
    before = getrusage(RUSAGE_CHILDREN).ru_maxrss
    run, err = timed([sys.executable, "-m", "layerif", "prune", "--model", model, "--allocation",
                      str(alloc), "--pruner", "sparsegpt", "--nsamples", str(args.nsamples),
                      "--seqlen", str(args.tokens), "--device", args.device, "--dtype",
                      args.dtype, "--out", str(ROOT / "runs" / "bench-scale" / f"{name}-pruned")])
    peak = getrusage(RUSAGE_CHILDREN).ru_maxrss * 1024
    skeleton = load_skeleton(model)
    blocks = discover_blocks(skeleton)
    size = DTYPE_BYTES[args.dtype]
    weights = sum(p.numel() for p in skeleton.parameters()) * size
    block = max(sum(m.numel for m in b.matrices) for b in blocks) * 4
    activations = 2 * args.nsamples * args.tokens * skeleton.config.hidden_size * size
    planned = re.search(r"peak \(estimated\)\s+([\d.]+) GiB", err)
    return {"model": name, "pruner": "sparsegpt", "nsamples": args.nsamples,
            "tokens": args.tokens, "wall_s": run["seconds"],
            "peak_rss_gb": peak / 1e9 if peak > before * 1024 else None,
            "planned_gib": float(planned.group(1)) if planned else None,
            "above_model_gb": (peak - weights - RUNTIME_CPU) / 1e9,
            "one_block_fp32_plus_activations_gb": (block + activations) / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smollm2-135m",
                        help="comma-separated: built-in models (smollm2-135m, "
                        f"qwen2.5-coder-0.5b, qwen2.5-coder-1.5b) or shapes ({', '.join(SHAPES)})")
    parser.add_argument("--processes", default="1", help="comma-separated process counts")
    parser.add_argument("--train", type=int, default=16, help="training examples (16)")
    parser.add_argument("--val", type=int, default=4, help="validation examples (4)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per example (256)")
    parser.add_argument("--batch-size", type=int, default=4, help="examples per pass (4)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    parser.add_argument("--prune", action="store_true",
                        help="time `prune --pruner sparsegpt` on each model instead of score")
    parser.add_argument("--nsamples", type=int, default=16,
                        help="calibration windows of --prune, --tokens each (16)")
    parser.add_argument("--floor", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        return floor_job(args.floor, args.n, args.tokens, args.device, args.dtype)
    if args.prune:
        for name in args.models.split(","):
            row = measure_prune(name, args)
            print(json.dumps(row), flush=True)
            path = RESULTS / f"scale-prune-{args.device}.json"
            old = json.loads(path.read_text()) if path.exists() else []
            path.write_text(json.dumps([r for r in old if r["model"] != name] + [row],
                                       indent=1))
        return None
    rows = []
    for name in args.models.split(","):
        for processes in map(int, args.processes.split(",")):
            rows.append(measure(name, args, processes))
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"scale-{args.device}"
    old = json.loads(stem.with_suffix(".json").read_text()) if stem.with_suffix(
        ".json").exists() else []
    key = ("model", "processes", "device", "n_train", "n_val", "tokens")
    new = {tuple(r[k] for k in key) for r in rows}
    keep = [r for r in old if tuple(r[k] for k in key) not in new]
    rows = keep + rows
    stem.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    stem.with_suffix(".md").write_text(table(rows) + "\n")
    print(table(rows))


def table(rows: list[dict]) -> str:
    lines = ["| model | processes | train / val x tokens | score s (wall s) | s per train "
             "example | fwd+bwd s per example | ratio to fwd+bwd | peak RSS GiB | plan GiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = "-" if r["peak_rss_gb"] is None else f"{r['peak_rss_gb'] * 1e9 / 2**30:.2f}"
        plan = "-" if r["planned_gib"] is None else f"{r['planned_gib']:.2f}"
        lines.append(
            f"| {r['model']} | {r['processes']} | {r['n_train']} / {r['n_val']} x "
            f"{r['tokens']} | {r['score_s']:.1f} ({r['wall_s']:.1f}) | "
            f"{r['score_s'] / r['n_train']:.2f} | {r['floor_s_per_example']:.2f} | "
            f"{r['ratio_to_floor']:.2f} | {peak} | {plan} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
