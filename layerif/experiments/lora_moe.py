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

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..data.sources import TaskSpec
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


@dataclass(frozen=True)
class Candidate:
    """One fine-tuning setting of a task: the config's own, or a sweep recipe's (its label; its
    training keys over the config's; the first `rows` of the task's fine-tuning rows)."""

    recipe: str | None
    task: dict  # {task, train, val, ...}, train cut to the recipe's rows
    training: dict

    @property
    def name(self) -> str:
        return self.task["task"] if self.recipe is None else f"{self.task['task']} {self.recipe}"


def candidates(config: MoEExperimentConfig, training: dict) -> list[Candidate]:
    """Every (recipe, task) the grid fine-tunes on, recipes outermost."""
    if not config.recipes:
        return [Candidate(None, t, training) for t in config.tasks]
    out = []
    for recipe in config.recipes:
        changes = {k: v for k, v in recipe.items() if k not in ("label", "rows")}
        for t in config.tasks:
            task = dict(t)
            if recipe.get("rows"):
                spec = TaskSpec.parse(t["train"])
                start = spec.start or 0
                if spec.stop is not None and start + recipe["rows"] > spec.stop:
                    from .config import ConfigError

                    raise ConfigError(f"{config.path}: recipes ({recipe['label']}): rows "
                                      f"{recipe['rows']} exceed {t['train']}; give a longer "
                                      "train slice or fewer rows.")
                task["train"] = str(replace(spec, stop=start + recipe["rows"]))
            out.append(Candidate(str(recipe["label"]), task, {**training, **changes}))
    return out


def base_shots(config: MoEExperimentConfig, task: dict) -> str | None:
    """The rows the base model is shown as worked examples for `task`: its `shots`, else the
    first base_shots rows of its `val` rows (None: no k-shot row)."""
    if not config.base_shots:
        return None
    if task.get("shots"):
        return task["shots"]
    spec = TaskSpec.parse(task["val"])
    return str(replace(spec, stop=(spec.start or 0) + config.base_shots))


def run_lora_moe(config: MoEExperimentConfig, out: str | Path, progress: bool = True,
                 reuse: Sequence[str | Path] = ()) -> RunSummary:
    """Run (or resume) the LoRA-MoE grid of `config` in `out`; returns what was computed.
    A sweep (config.recipes) evaluates on each task's `select` rows instead of its evaluation
    rows; `experiment report` then writes its choice."""
    start = time.perf_counter()
    out = Path(out)
    scoring, _, lora, evaluation = moe_settings(config)
    specs, settings = check_moe_data(config)
    store = CellStore(out, progress=print if progress else None, reuse=reuse)
    model = _model(config, store)
    _check_total(config, model)
    model_id = config.model
    grid = [(seed, c, method) for seed in config.seeds for c in settings
            for method in config.methods]
    plain = [(seed, c) for seed in config.seeds for c in settings] if config.plain_lora else []
    needs_scores = any("scores" in _expert_method(m).needs for m in config.methods)
    base_rows = len(config.tasks) * (int(config.base) + int(bool(config.base_shots)))
    store.plan({"scores": len(config.tasks) if needs_scores else 0, "allocation": len(grid),
                "adapter": len(grid) + len(plain), "eval": len(grid) + len(plain) + base_rows})
    rows = []
    for t in config.tasks:
        spec = specs[t["task"]]
        if config.base:
            key = _evaluate(store, model, None, model_id, spec, evaluation, f"base {t['task']}")
            rows.append({"method": "base", "task": t["task"], "seed": None, "eval": key})
        shots = base_shots(config, t)
        if shots:
            key = _evaluate(store, model, None, model_id, spec, evaluation,
                            f"base {config.base_shots}-shot {t['task']}", shots=shots)
            rows.append({"method": f"base-{config.base_shots}shot", "task": t["task"],
                         "seed": None, "eval": key, "shots": shots})
    scores_keys = {t["task"]: _score(store, model, model_id, t, scoring)
                   for t in config.tasks} if needs_scores else {}
    for seed, c, method in grid:
        alloc_key, experts = _allocate(store, config, model, model_id, method,
                                       scores_keys.get(c.task["task"]))
        key = _finetune_and_evaluate(store, config, model, model_id, experts, c, lora, seed,
                                     specs[c.task["task"]], evaluation,
                                     f"{method.name} {c.name} s{seed}")
        rows.append({"method": method.name, "task": c.task["task"], "seed": seed,
                     "recipe": c.recipe, "allocation": alloc_key, "experts": experts,
                     "eval": key})
    for seed, c in plain:
        key, reference = _plain_lora(store, config, model, model_id, c, lora, seed,
                                     specs[c.task["task"]], evaluation)
        rows.append({"method": PLAIN_LORA, "task": c.task["task"], "seed": seed,
                     "recipe": c.recipe, "eval": key, **reference})
    write_json(out / MANIFEST, {"config": config.path, "name": config.name, "kind": config.kind,
                                "tasks": config.tasks, "rows": rows,
                                "scores": list(scores_keys.values()),
                                **_sweep_manifest(config, settings, specs)})
    return RunSummary(store.executed, store.corrupt, time.perf_counter() - start, rows,
                      reused=store.reused)


PLAIN_LORA = "lora"  # the plain-LoRA row's method name


def check_moe_data(config: MoEExperimentConfig) -> tuple[dict, list[Candidate]]:
    """Before any work: (task -> the rows it is evaluated on, the candidates), with every
    overlap refused (`_refuse_overlaps`). A sweep evaluates on each task's select rows."""
    _, training, _, evaluation = moe_settings(config)
    specs = {t["task"]: (TaskSpec.parse(t["select"]) if config.sweep
                         else evaluation_spec(t["task"], evaluation)) for t in config.tasks}
    settings = candidates(config, training)
    _refuse_overlaps(config, specs, settings)
    return specs, settings


def _sweep_manifest(config: MoEExperimentConfig, settings: list[Candidate], specs: dict
                    ) -> dict:
    """What a sweep's report needs to write its choice (nothing for a plain grid)."""
    out = {"selection": config.selection} if config.selection else {}
    if config.sweep:
        out["sweep"] = {"recipes": config.recipes, "select": {t: str(s) for t, s in
                                                              specs.items()},
                        "candidates": [{"recipe": c.recipe, "task": c.task,
                                        "training": c.training} for c in settings]}
    return out


def _expert_method(method):
    from ..allocation.expert_methods import EXPERT_METHODS

    return EXPERT_METHODS[method.method]


def _refuse_overlaps(config: MoEExperimentConfig, specs: dict, settings: list[Candidate]
                     ) -> None:
    """Before any work: each task's validation rows (LayerIF scores the fine-tuning rows
    against them) must share no content with its fine-tuning rows; its evaluation rows (a
    sweep's select rows) none with either, nor with its select rows or the base model's worked
    examples (nor with any other task's); the worked examples none with fine-tuning rows. A
    refusal names the config and its key."""
    from ..data.provenance import check_disjoint, content_set
    from ..errors import DataError
    from .config import ConfigError

    for i, t in enumerate(config.tasks):
        shots = base_shots(config, t)
        try:
            check_disjoint([content_set(t["val"], "scoring val")],
                           [content_set(t["train"], "scoring train")])
            if shots:
                check_disjoint([content_set(shots, "worked examples")],
                               [content_set(t["train"], "fine-tuning")])
        except DataError as exc:
            key = "val" if not shots or "scoring" in str(exc) else "shots"
            raise ConfigError(f"{config.path}: tasks[{i}].{key}: {exc}") from None
    used = [content_set(c.task[part], f"{c.task['task']} {part}") for c in settings
            for part in ("train", "val")]
    used += [content_set(t["select"], f"{t['task']} select") for t in config.tasks
             if t.get("select") and not config.sweep]
    used += [content_set(s, f"{t['task']} worked examples") for t in config.tasks
             if (s := base_shots(config, t))]
    check_disjoint([content_set(str(spec), "evaluation") for spec in specs.values()], used)


def _score(store: CellStore, model: str, model_id, task: dict, scoring: dict):
    from .. import score_layers

    def compute(folder):
        result = score_layers(model, task["train"], task["val"], estimator=scoring["estimator"],
                              params=scoring["params"], max_length=scoring["max_length"],
                              batch_size=scoring["batch_size"], data_format=scoring["format"],
                              progress=store.bars)
        result.save(folder / "scores")
        return {"layers": len(result.layers)}

    key, _ = store.run("scores", {"model": model_id, "train": task["train"],
                                  "val": task["val"], **scoring}, compute,
                       label=f"{task['task']}: {task['train']}", hashed=("scores/scores.json",))
    return key


def _allocate(store, config, model, model_id, method, scores_key) -> tuple[str, list[int]]:
    from ..allocation.api import allocate_experts, load_scores
    from ..models import load_model, load_skeleton

    cls = _expert_method(method)
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


def _train_examples(task: dict, training: dict) -> list:
    """The fine-tuning examples of `task`: its rows in the instruction format (answers balanced
    when training["balance"]); with training["format"] "both", the same rows again as lm-eval's
    prompt and gold continuation, the form log-likelihood accuracy reads (after them)."""
    from ..data import load_examples
    from ..data.instruct import balance_answers, load_instruct

    items = load_instruct(task["train"])
    items = balance_answers(items) if training["balance"] else items
    examples = [item.example() for item in items]
    if training.get("format", "instruct") == "both":
        kept = {item.origin for item in items}
        examples += [e for e in load_examples(task["train"]) if e.origin in kept]
    return examples


def _finetune_and_evaluate(store, config, model, model_id, experts, candidate: Candidate, lora,
                           seed, spec, evaluation, label):
    from ..moe import MoEConfig
    from ..moe.train import finetune_moe

    def train(loaded, tokenizer, examples, args, folder):
        return finetune_moe(loaded, tokenizer, MoEConfig(experts=experts, base_model=model,
                                                         **lora),
                            examples, folder / "adapter", args, progress=store.bars,
                            provenance={"train": candidate.task["train"]})

    settings = {"model": model_id, "experts": experts, "train": candidate.task["train"],
                "training": candidate.training, "lora": lora, "seed": seed}
    return _adapter_then_eval(store, config, model, model_id, settings, candidate, seed, train,
                              spec, evaluation, label)


def _plain_lora(store, config, model, model_id, candidate: Candidate, lora, seed, spec,
                evaluation) -> tuple[str, dict]:
    """The peft LoRA row of `candidate`: every matrix the mixtures adapt, at the rank whose
    trainable parameters are nearest the uniform mixture's (`moe.reference`). Returns (its eval
    key, {"rank", "parameters", "mixture_parameters"})."""
    from ..allocation.api import allocate_experts
    from ..lora import finetune_lora
    from ..models import load_skeleton
    from ..moe import MoEConfig, matched_rank, plain_lora_config

    skeleton = load_skeleton(model)
    uniform = allocate_experts("uniform", config.total, model=skeleton, model_name=model).experts
    moe = MoEConfig(experts=uniform, **lora)
    rank, params, mixture = matched_rank(skeleton, moe)
    lora_config = plain_lora_config(skeleton, rank, scaling=moe.alpha / moe.rank,
                                    dropout=moe.dropout, targets=moe.targets)

    def train(loaded, tokenizer, examples, args, folder):
        return finetune_lora(loaded, tokenizer, lora_config, examples, folder / "adapter", args,
                             progress=store.bars, provenance={"train": candidate.task["train"]})

    settings = {"model": model_id, "plain_lora": lora_config, "train": candidate.task["train"],
                "training": candidate.training, "seed": seed}
    key = _adapter_then_eval(store, config, model, model_id, settings, candidate, seed, train,
                             spec, evaluation, f"{PLAIN_LORA} r{rank} {candidate.name} s{seed}")
    return key, {"rank": rank, "parameters": params, "mixture_parameters": mixture}


def _adapter_then_eval(store, config, model, model_id, settings, candidate: Candidate, seed,
                       train, spec, evaluation, label) -> str:
    """The adapter cell of `settings` (trained by `train(model, tokenizer, examples, args,
    folder)` unless its evaluation is stored), then its evaluation cell; the adapter's weights
    are dropped once evaluated unless keep_models."""
    from ..models import load_model
    from ..training import FinetuneArguments

    adapter_key = cell_key("adapter", settings)
    eval_key = cell_key("eval", _eval_settings(adapter_key, spec, evaluation))
    eval_cell = store.load("eval", eval_key)
    if eval_cell is not None:
        store.visited("adapter")
        store.visited("eval", eval_cell)
        return eval_key

    adapter = store.folder("adapter", adapter_key)
    # Training runs in a folder the cell store leaves alone (it empties a cell's .KEY.tmp when
    # the cell starts and when it fails), so that a killed run resumes from the training's
    # checkpoint (the epoch's, or within it every ten minutes) instead of its first step.
    work = adapter.with_name(f".{adapter_key}.training")

    def compute(folder):
        examples = _train_examples(candidate.task, candidate.training)
        trained = work / "adapter"
        if (trained / "training.json").exists():  # trained, killed before the cell was kept
            summary = json.loads((trained / "training.json").read_text())
        else:
            loaded, tokenizer = load_model(model, device="cpu")
            args = FinetuneArguments(seed=seed, **{k: v for k, v in candidate.training.items()
                                                   if k not in ("balance", "format")})
            summary = train(loaded, tokenizer, examples, args, work)
        shutil.move(str(trained), str(folder / "adapter"))
        return {"examples": len(examples), "loss": [h["loss"] for h in summary["history"]],
                "seconds": summary["seconds"]}

    if not (adapter / "adapter" / "training.json").exists():  # evaluated before, deleted
        shutil.rmtree(adapter, ignore_errors=True)
    store.run("adapter", settings, compute, label=label)
    shutil.rmtree(work, ignore_errors=True)
    key = _evaluate(store, model, adapter_key, model_id, spec, evaluation, label)
    if not config.keep_models:
        shutil.rmtree(adapter / "adapter", ignore_errors=True)
    return key


def _eval_settings(adapter_key: str | None, spec, evaluation: dict,
                   shots: str | None = None) -> dict:
    settings = {"model": adapter_key, "slice": str(spec), "batch_size": evaluation["batch_size"],
                "max_length": evaluation["max_length"], "generate": True}
    if shots:  # (a key only where given: the zero-shot cells keep the keys they had)
        settings["shots"] = shots
    return settings


def _evaluate(store, model, adapter_key, model_id, spec, evaluation, label,
              shots: str | None = None) -> str:
    """The evaluation cell of the base model (adapter_key None) or of an adapter (a LoRA-MoE or
    a peft LoRA): generative and log-likelihood accuracy on `spec`; with `shots`, the base
    model's generative accuracy after those worked examples (its prompt as long as they need)."""
    from ..evaluation import evaluate_model
    from ..lora import is_peft_adapter, load_peft_adapter
    from ..models import load_model
    from ..moe import load_adapters

    settings = _eval_settings(adapter_key, spec, evaluation, shots)
    if adapter_key is None:
        settings["model"] = model_id

    def compute(folder):
        loaded, tokenizer = load_model(model, device="cpu")
        adapter = None
        if adapter_key is not None:
            adapter = str(store.folder("adapter", adapter_key) / "adapter")
            if is_peft_adapter(adapter):
                loaded = load_peft_adapter(loaded, adapter)
            else:
                load_adapters(loaded, adapter)
            loaded.eval()
        max_length = evaluation["max_length"]
        if shots:
            from ..data.instruct import load_instruct

            max_length *= len(load_instruct(shots)) + 1
        result = evaluate_model(loaded, tokenizer, [spec], model_name=model, ppl=None,
                                batch_size=evaluation["batch_size"], adapter=adapter,
                                multiple_choice=not shots, generate=True,
                                max_length=max_length, progress=store.bars,
                                shots={spec.task: shots} if shots else None)
        write_json(folder / "eval.json", result)
        return {"mean": result["mean"]}

    key, _ = store.run("eval", settings, compute, label=label, hashed=("eval.json",))
    return key
