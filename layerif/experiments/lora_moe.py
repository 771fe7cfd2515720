"""The LoRA-MoE grid: scores per task, then for every seed, method and task an expert
allocation, a fine-tuned LoRA-MoE and its evaluation (generative and log-likelihood accuracy,
per item), plus the base model's.

Cell kinds and what their keys cover (each includes the keys of the cells it reads):
    model       a random model built from a config (its spec)
    scores      model, the task's fine-tuning and validation slices, scoring settings
    allocation  model, method + arguments + aggregate, total, and the scores key (methods that
                read scores; the others give one cell shared by every task)
    adapter     model, the expert counts themselves (two methods that allocate alike share one
                training run), fine-tuning slice, balance, training and LoRA settings, seed
    eval        the adapter key (or the base model), the evaluation slice and settings
Adapter weights are deleted once their evaluation is stored (unless keep_models).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ..io import write_json
from .cells import CellStore, cell_key
from .config import MoEExperimentConfig
from .pruning import MANIFEST, RunSummary, _model

DEFAULT_SCORING = {"max_length": 256, "format": "instruct", "estimator": "datainf",
                   "batch_size": 8, "params": "all"}
DEFAULT_LORA = {"rank": 8, "alpha": 16, "dropout": 0.05, "top_k": 2}
DEFAULT_EVALUATION = {"limit": 200, "slice": None, "batch_size": 8}


def moe_settings(config: MoEExperimentConfig) -> tuple[dict, dict, dict, dict]:
    """(scoring, training, lora, evaluation) settings: the config's over the defaults."""
    from ..training import FinetuneArguments

    training = {**asdict(FinetuneArguments()), "balance": False, **config.training}
    training.pop("seed")  # the grid's seeds set it
    # generative prompts are cut to the fine-tuning's length unless the config says otherwise
    evaluation = {**DEFAULT_EVALUATION, "max_length": training["max_length"], **config.evaluation}
    return ({**DEFAULT_SCORING, **config.scoring}, training, {**DEFAULT_LORA, **config.lora},
            evaluation)


def evaluation_spec(task: str, evaluation: dict):
    from ..evaluation import evaluation_specs

    (spec,) = evaluation_specs([task], limit=evaluation["limit"], rows=evaluation["slice"])
    return spec


def _check_total(config: MoEExperimentConfig, model: str) -> None:
    """`total` against the model's block count, before the first score (a named model's count
    is known only from its config)."""
    from ..models import discover_blocks, load_skeleton
    from .config import ConfigError

    layers = len(discover_blocks(load_skeleton(model)))
    if config.total is not None and config.total < layers:
        raise ConfigError(f"{config.path}: total: {config.total} experts are fewer than the "
                          f"model's {layers} layers (each needs at least 1); give total >= "
                          f"{layers}.")


def run_lora_moe(config: MoEExperimentConfig, out: str | Path, progress: bool = True,
                 reuse: Sequence[str | Path] = ()) -> RunSummary:
    """Run (or resume) the LoRA-MoE grid of `config` in `out`; returns what was computed."""
    start = time.perf_counter()
    out = Path(out)
    scoring, training, lora, evaluation = moe_settings(config)
    specs = {t["task"]: evaluation_spec(t["task"], evaluation) for t in config.tasks}
    _refuse_overlaps(config, specs)
    store = CellStore(out, progress=print if progress else None, reuse=reuse)
    model = _model(config, store)
    _check_total(config, model)
    model_id = config.model
    grid = [(seed, method, t) for seed in config.seeds for method in config.methods
            for t in config.tasks]
    store.plan({"scores": len(config.tasks), "allocation": len(grid), "adapter": len(grid),
                "eval": len(grid) + (len(config.tasks) if config.base else 0)})
    rows = []
    if config.base:
        for t in config.tasks:
            key = _evaluate(store, model, None, model_id, specs[t["task"]], evaluation,
                            f"base {t['task']}")
            rows.append({"method": "base", "task": t["task"], "seed": None, "eval": key})
    scores_keys = {}
    for t in config.tasks:
        scores_keys[t["task"]] = _score(store, model, model_id, t, scoring)
    for seed, method, t in grid:
        alloc_key, experts = _allocate(store, config, model, model_id, method,
                                       scores_keys[t["task"]])
        label = f"{method.name} {t['task']} s{seed}"
        key = _finetune_and_evaluate(store, config, model, model_id, experts, t, training, lora,
                                     seed, specs[t["task"]], evaluation, label)
        rows.append({"method": method.name, "task": t["task"], "seed": seed,
                     "allocation": alloc_key, "experts": experts, "eval": key})
    write_json(out / MANIFEST, {"config": config.path, "name": config.name, "kind": config.kind,
                                "tasks": config.tasks, "rows": rows,
                                "scores": list(scores_keys.values())})
    return RunSummary(store.executed, store.corrupt, time.perf_counter() - start, rows,
                      reused=store.reused)


def _refuse_overlaps(config: MoEExperimentConfig, specs: dict) -> None:
    """Before any work: each task's validation rows (LayerIF scores the fine-tuning rows
    against them) must share no content with its fine-tuning rows, and its evaluation rows
    none with either (nor with any other task's); a refusal names the config and its key."""
    from ..data.provenance import check_disjoint, content_set
    from ..errors import DataError
    from .config import ConfigError

    for i, t in enumerate(config.tasks):
        try:
            check_disjoint([content_set(t["val"], "scoring val")],
                           [content_set(t["train"], "scoring train")])
        except DataError as exc:
            raise ConfigError(f"{config.path}: tasks[{i}].val: {exc}") from None
    used = [content_set(t[part], f"{t['task']} {part}") for t in config.tasks
            for part in ("train", "val")]
    check_disjoint([content_set(str(spec), "evaluation") for spec in specs.values()], used)


def _score(store: CellStore, model: str, model_id, task: dict, scoring: dict):
    from .. import score_layers

    def compute(folder):
        result = score_layers(model, task["train"], task["val"], estimator=scoring["estimator"],
                              params=scoring["params"], max_length=scoring["max_length"],
                              batch_size=scoring["batch_size"], data_format=scoring["format"],
                              progress=False)
        result.save(folder / "scores")
        return {"layers": len(result.layers)}

    key, _ = store.run("scores", {"model": model_id, "train": task["train"],
                                  "val": task["val"], **scoring}, compute,
                       label=f"{task['task']}: {task['train']}", hashed=("scores/scores.json",))
    return key


def _allocate(store, config, model, model_id, method, scores_key) -> tuple[str, list[int]]:
    from ..allocation.api import allocate_experts, load_scores
    from ..allocation.expert_methods import EXPERT_METHODS
    from ..models import load_model, load_skeleton

    cls = EXPERT_METHODS[method.method]
    settings = {"model": model_id, "method": method.method, "options": method.options,
                "aggregate": method.aggregate,
                "total": config.total if cls.gives_weights else None}
    if "scores" in cls.needs:
        settings["scores"] = scores_key

    def compute(folder):
        scores = (load_scores(store.folder("scores", scores_key) / "scores", method.aggregate)
                  if "scores" in cls.needs else None)
        loaded = (load_model(model, device="cpu")[0] if "weights" in cls.needs
                  else load_skeleton(model))
        alloc = allocate_experts(method.method, settings["total"], scores=scores, model=loaded,
                                 model_name=model, **method.options)
        alloc.save(folder / "experts.json")
        return {"experts": alloc.experts}

    key, result = store.run("allocation", settings, compute, label=method.name,
                            hashed=("experts.json",))
    return key, result["experts"]


def _train_examples(task: dict, balance: bool) -> list:
    from ..data.instruct import balance_answers, load_instruct

    items = load_instruct(task["train"])
    return [item.example() for item in (balance_answers(items) if balance else items)]


def _finetune_and_evaluate(store, config, model, model_id, experts, task, training, lora, seed,
                           spec, evaluation, label):
    from ..models import load_model
    from ..moe import MoEConfig
    from ..moe.train import FinetuneArguments, finetune_moe

    settings = {"model": model_id, "experts": experts, "train": task["train"],
                "training": training, "lora": lora, "seed": seed}
    adapter_key = cell_key("adapter", settings)
    eval_key = cell_key("eval", _eval_settings(adapter_key, spec, evaluation))
    eval_cell = store.load("eval", eval_key)
    if eval_cell is not None:
        store.visited("adapter")
        store.visited("eval", eval_cell)
        return eval_key

    def compute(folder):
        loaded, tokenizer = load_model(model, device="cpu")
        examples = _train_examples(task, training["balance"])
        args = FinetuneArguments(seed=seed, **{k: v for k, v in training.items()
                                               if k != "balance"})
        summary = finetune_moe(loaded, tokenizer, MoEConfig(experts=experts, base_model=model,
                                                            **lora),
                               examples, folder / "adapter", args, progress=False,
                               provenance={"train": task["train"]})
        return {"examples": len(examples), "loss": [h["loss"] for h in summary["history"]],
                "seconds": summary["seconds"]}

    adapter = store.folder("adapter", adapter_key)
    if not (adapter / "adapter" / "training.json").exists():  # evaluated before, deleted
        shutil.rmtree(adapter, ignore_errors=True)
    store.run("adapter", settings, compute, label=label)
    key = _evaluate(store, model, adapter_key, model_id, spec, evaluation, label)
    if not config.keep_models:
        shutil.rmtree(adapter / "adapter", ignore_errors=True)
    return key


def _eval_settings(adapter_key: str | None, spec, evaluation: dict) -> dict:
    return {"model": adapter_key, "slice": str(spec), "batch_size": evaluation["batch_size"],
            "max_length": evaluation["max_length"], "generate": True}


def _evaluate(store, model, adapter_key, model_id, spec, evaluation, label) -> str:
    from ..evaluation import evaluate_model
    from ..models import load_model
    from ..moe import load_adapters

    settings = _eval_settings(adapter_key, spec, evaluation)
    if adapter_key is None:
        settings["model"] = model_id

    def compute(folder):
        loaded, tokenizer = load_model(model, device="cpu")
        adapter = None
        if adapter_key is not None:
            adapter = str(store.folder("adapter", adapter_key) / "adapter")
            load_adapters(loaded, adapter)
            loaded.eval()
        result = evaluate_model(loaded, tokenizer, [spec], model_name=model, ppl=None,
                                batch_size=evaluation["batch_size"], adapter=adapter,
                                generate=True, max_length=evaluation["max_length"],
                                progress=False)
        write_json(folder / "eval.json", result)
        return {"mean": result["mean"]}

    key, _ = store.run("eval", settings, compute, label=label, hashed=("eval.json",))
    return key
