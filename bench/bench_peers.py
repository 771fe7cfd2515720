"""layerif against kronfluence on the same job, each run a whole process timed from outside.

    bash scripts/bench_setup.sh                       # kronfluence 1.0.1 (--no-deps) into .venv
    .venv/bin/python bench/bench_peers.py [--repeats 3] [--only layerif-cached,kronfluence-identity]

The job (the "speed to beat" of docs/benchmarks.md): SmolLM2-135M on the CPU, 32 train / 8 val
BoolQ texts
(boolq:validation[0:32] and [200:208], rendered and tokenised by layerif, at most 128 tokens),
the per-example loss layerif uses (mean token cross-entropy over the counted tokens), all 210
block matrices tracked, fp32, batch 8. Every run is a fresh process started by this script: the
wall time from its start to its exit (import, model load from the safetensors cache, data, the
influence computation, writing) and its peak RSS (os.wait4's ru_maxrss). Runs alternate between
the methods, repeated --repeats times; the table gives the median and the range, and each median
as a ratio against kronfluence's identity strategy (a per-module gradient dot product, the
Hessian-free floor of that library). Every process gets the same environment, torch's CPU
allocator on transparent huge pages included (THP_MEM_ALLOC_ENABLE=1, layerif's default).

    layerif-cached      `layerif score --mode cached` (exact DataInf: 1 val + 1 train pass)
    layerif-streaming   `layerif score --mode streaming` (1 val + 3 train passes)
    layerif-tracin      `layerif score --estimator tracin` (the same dot product as identity)
    kronfluence-identity   fit_all_factors + compute_pairwise_scores, per-module scores
    kronfluence-ekfac      the same with EK-FAC factors (covariance, eigendecomposition, lambda)

Results go to bench/results/peers.md and peers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN, VAL, MAX_LENGTH, BATCH = "boolq:validation[0:32]", "boolq:validation[200:208]", 128, 8
RESULTS = ROOT / "bench" / "results"

LAYERIF = [sys.executable, "-m", "layerif", "score", "--model", "smollm2-135m", "--train", TRAIN,
           "--val", VAL, "--max-length", str(MAX_LENGTH), "--batch-size", str(BATCH),
           "--device", "cpu", "--quiet", "--bootstrap", "1", "--no-resume"]
METHODS = {
    "layerif-cached": LAYERIF + ["--mode", "cached"],
    "layerif-streaming": LAYERIF + ["--mode", "streaming"],
    "layerif-tracin": LAYERIF + ["--estimator", "tracin"],
    "kronfluence-identity": [sys.executable, __file__, "--kronfluence", "identity"],
    "kronfluence-ekfac": [sys.executable, __file__, "--kronfluence", "ekfac"],
}
BASELINE = "kronfluence-identity"


def timed(cmd: list[str], out: Path) -> dict:
    """One whole process: wall seconds and peak RSS in GB."""
    # The same environment for every tool: torch's CPU allocator on transparent huge pages
    # (layerif's default; explicit here so that the peer gets it too)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": "",
           "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "1")}
    start = time.perf_counter()
    proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-3000:]}")
    proc.stderr.close()
    return {"seconds": seconds, "peak_gb": usage.ru_maxrss * 1024 / 1e9}


def kronfluence_job(strategy: str, out: Path) -> None:
    """The child process of a kronfluence run: the same model, tokens, loss and matrices."""
    import numpy as np
    import torch
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    from layerif.data import encode_examples, load_examples, make_batches
    from layerif.data.encode import batch_losses
    from layerif.models import discover_blocks, load_model

    model, tokenizer = load_model("smollm2-135m", device="cpu")
    names = [m.name for b in discover_blocks(model, "all") for m in b.matrices]
    assert len(names) == 210, len(names)

    def rows(spec: str) -> list[dict]:
        batch = make_batches(encode_examples(load_examples(spec), tokenizer, MAX_LENGTH),
                             10**6, tokenizer.pad_token_id)[0]
        return [{"input_ids": batch.input_ids[i], "attention_mask": batch.attention_mask[i],
                 "labels": batch.labels[i]} for i in range(len(batch.input_ids))]

    class Loss(Task):
        """layerif's per-example loss (mean token NLL of the counted tokens), summed over the
        batch as kronfluence expects."""

        def _losses(self, batch, model):
            from layerif.data.encode import Batch

            b = Batch(batch["input_ids"], batch["attention_mask"], batch["labels"],
                      torch.arange(len(batch["input_ids"])), ())
            return batch_losses(model, b)

        def compute_train_loss(self, batch, model, sample=False):
            return self._losses(batch, model).sum()

        def compute_measurement(self, batch, model):
            return self._losses(batch, model).sum()

        def get_influence_tracked_modules(self):
            return names

        def get_attention_mask(self, batch):
            return batch["attention_mask"]

    task = Loss()
    model = prepare_model(model, task)
    analyzer = Analyzer("peers", model, task, cpu=True, disable_tqdm=True,
                        output_dir=str(out / "kronfluence"))
    train, val = rows(TRAIN), rows(VAL)
    # empirical Fisher: the loss's own labels, as layerif's gradients use
    factor_args = FactorArguments(strategy=strategy, use_empirical_fisher=True)
    analyzer.fit_all_factors("factors", train, per_device_batch_size=BATCH,
                             factor_args=factor_args, overwrite_output_dir=True)
    analyzer.compute_pairwise_scores(
        "scores", "factors", val, train, per_device_query_batch_size=BATCH,
        per_device_train_batch_size=BATCH,
        score_args=ScoreArguments(compute_per_module_scores=True), overwrite_output_dir=True)
    scores = analyzer.load_pairwise_scores("scores")
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "per_module.npy", np.stack([scores[n].sum(0).numpy() for n in names], 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each method (default 3)")
    parser.add_argument("--only", default=",".join(METHODS),
                        help="comma-separated methods (default: all)")
    parser.add_argument("--kronfluence", help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.kronfluence:
        return kronfluence_job(args.kronfluence, Path(args.out))
    methods = args.only.split(",")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):  # alternate, so a slow spell of the machine hits all
            for m in methods:
                runs[m].append(timed(METHODS[m], Path(tmp) / f"{m}-{r}"))
                print(f"{m} run {r + 1}: {runs[m][-1]['seconds']:.1f} s, "
                      f"{runs[m][-1]['peak_gb']:.2f} GB", flush=True)
    table = summarise(runs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "peers.json").write_text(json.dumps(runs, indent=1))
    (RESULTS / "peers.md").write_text(table + "\n")
    print(table)


def summarise(runs: dict[str, list[dict]]) -> str:
    med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in runs.items()}
    lines = ["| method | runs | seconds, median [min, max] | peak RSS GB, median | "
             f"speed vs {BASELINE} (its seconds / these) | peak memory / {BASELINE}'s |",
             "|---|---|---|---|---|---|"]
    for m, rs in runs.items():
        secs = [r["seconds"] for r in rs]
        peak = statistics.median(r["peak_gb"] for r in rs)
        base = runs.get(BASELINE)
        speed = f"{med[BASELINE] / med[m]:.2f}x" if base else "-"
        mem = f"{peak / statistics.median(r['peak_gb'] for r in base):.2f}x" if base else "-"
        lines.append(f"| {m} | {len(rs)} | {med[m]:.1f} [{min(secs):.1f}, {max(secs):.1f}] | "
                     f"{peak:.2f} | {speed} | {mem} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
