"""An experiment config (YAML), validated before any work: every error names the file and key.

    name: smoke
    model: smollm2-135m            # or {random: llama, config: {...}, tokenizer: smollm2-135m}
    scoring:                       # LayerIF's scores; one or more slices (their variance shows)
      slices: [{train: "boolq:validation[256:288]", val: "boolq:validation[288:296]"}]
      max_length: 128              # also: format, estimator, batch_size
    methods:                       # sparsity methods (any registered) with their arguments
      - {method: uniform}
      - {method: layerif, aggregate: helpful, label: layerif-helpful}
      - {method: atp, grid: "0,0.5,1"}
    pruners: [wanda, {name: sparsegpt, damping: 0.01}]
    sparsities: [0.5, 0.7]
    seeds: [0, 1, 2]               # calibration sampling
    calibration: {source: "sciq:validation[0:600]", nsamples: 32, seqlen: 256}
    evaluation: {tasks: [arc_easy, rte], limit: 100, ppl: ["sciq:validation[600:800]"],
                 ppl_seqlen: 512, batch_size: 8}
    dense: true                    # evaluate the unpruned model too
    keep_models: false             # pruned weights are deleted once evaluated
    sensitivity:                   # measure D_l(s) with the grid's pruner (one pruner), hold
      levels: [0.5, 0.6, 0.7, 0.8, 0.9]   # every layer score against it, and check the
      held: "sciq:validation[800:1000]"   # additive model on each allocation of the first seed
      held_windows: 16             # (method sensitivity allocates from it)
      check: true

`scoring` may list `n_train: [64, 256]`: each slice is then scored on its first n training rows
for every n (how many examples a profile needs).

A LoRA-MoE grid (`kind: lora-moe`): expert methods x tasks x seeds, each a fine-tuned LoRA-MoE
evaluated by generative and log-likelihood accuracy:

    kind: lora-moe
    name: moe-sciq
    model: smollm2-135m
    tasks:                         # per task: fine-tuning rows and LayerIF's validation rows
      - {task: sciq, train: "sciq:validation[0:512]", val: "sciq:validation[512:528]"}
    scoring: {max_length: 256}     # format defaults to instruct (what the adapters train on)
    methods:                       # expert methods (any registered) with their arguments
      - {method: layerif, aggregate: helpful, label: layerif-helpful}
      - {method: mola, pattern: "2468", label: mola-2468}
    total: 120                     # experts over all layers (MoLA's patterns fix their own)
    training: {epochs: 3, lr: 3.0e-4, batch_size: 4, max_length: 256, balance: true}
    lora: {rank: 8, alpha: 16, dropout: 0.05, top_k: 2}
    seeds: [0, 1, 2]               # adapter initialisation and data order
    evaluation: {limit: 300, batch_size: 8}   # each task's last `limit` rows (or slice: "a:b");
                                   # max_length: generative prompt cut (default: training's)
    base: true                     # evaluate the model without adapters too
    base_shots: 3                  # and with 3 worked examples (a task's `shots` rows, else
                                   # the first 3 of its `val` rows)
    plain_lora: true               # peft LoRA at the uniform mixture's trainable parameters

A recipe sweep is the same config with `recipes` (each `{label, rows: N, epochs, lr, ...}`, a
candidate per task: its training keys over `training`, its first N fine-tuning rows) and per
task `select: SPEC`, validation rows: every adapter is evaluated on those rows only, and
`experiment report` writes choice.json, the candidate with the best gain over the base model.
A grid then takes its tasks and training from it (`selection: .../choice.json`) and refuses
evaluation rows that share content with the rows the choice was made on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import LayerIFError
from ..io import read_utf8


class ConfigError(LayerIFError):
    """An experiment config that cannot run, named by file and key."""


@dataclass(frozen=True)
class MethodSpec:
    method: str
    options: dict  # the method's arguments (allocation/sparsity_methods)
    aggregate: str | None = None  # layerif: which saved aggregate
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.method


@dataclass(frozen=True)
class PrunerSpec:
    name: str
    options: dict


@dataclass
class ExperimentConfig:
    name: str
    model: str | dict
    methods: list[MethodSpec]
    pruners: list[PrunerSpec]
    sparsities: list[float]
    seeds: list[int] = field(default_factory=lambda: [0])
    slices: list[dict] = field(default_factory=list)
    scoring: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    dense: bool = True
    keep_models: bool = False
    sensitivity: dict = field(default_factory=dict)  # empty: not measured
    transfer: dict = field(default_factory=dict)  # a second text for the rows it names
    path: str = ""


@dataclass
class MoEExperimentConfig:
    name: str
    model: str | dict
    tasks: list[dict]  # {task, train, val}
    methods: list[MethodSpec]
    total: int | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    scoring: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    lora: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    base: bool = True
    keep_models: bool = False
    path: str = ""
    kind: str = "lora-moe"
    base_shots: int = 0  # > 0: the base model also answers with this many worked examples
    plain_lora: bool = False  # a peft LoRA row at the uniform mixture's parameter count
    # a recipe sweep: each {label, rows, epochs, lr, ...} a candidate per task, evaluated on the
    # task's `select` rows (validation rows) only; `experiment report` writes the choice
    recipes: list[dict] = field(default_factory=list)
    selection: str = ""  # a sweep's choice.json that set tasks and training

    @property
    def sweep(self) -> bool:
        return bool(self.recipes)


KINDS = ("pruning", "lora-moe")
KEYS = {"name", "model", "scoring", "methods", "pruners", "sparsities", "seeds", "calibration",
        "evaluation", "dense", "keep_models", "kind", "sensitivity", "transfer"}
TRANSFER_KEYS = {"ppl", "ppl_seqlen", "methods"}
MOE_KEYS = {"name", "model", "tasks", "scoring", "methods", "total", "training", "lora", "seeds",
            "evaluation", "base", "keep_models", "kind", "base_shots", "plain_lora", "recipes",
            "selection"}
MOE_TASK_KEYS = {"task", "train", "val", "select", "shots"}
RECIPE_KEYS = {"label", "rows", "epochs", "lr", "batch_size", "max_length", "balance",
               "group_by_length", "format"}
TRAIN_FORMATS = ("instruct", "both")  # what lora_moe._train_examples makes of each
TRAINING_KEYS = {"epochs", "lr", "batch_size", "max_length", "balance_coef", "balance",
                 "group_by_length", "format"}
LORA_KEYS = {"rank", "alpha", "dropout", "top_k"}
MOE_EVALUATION_KEYS = {"limit", "slice", "batch_size", "max_length"}
SCORING_KEYS = {"slices", "max_length", "format", "estimator", "batch_size", "params", "n_train"}
SENSITIVITY_KEYS = {"levels", "held", "held_windows", "check"}
CALIBRATION_KEYS = {"source", "nsamples", "seqlen"}
EVALUATION_KEYS = {"tasks", "limit", "slice", "ppl", "ppl_seqlen", "batch_size"}


MODEL_KEYS = {"random", "config", "tokenizer", "init_scale", "seed"}


def _fail(path: str, key: str, message: str):
    raise ConfigError(f"{path}: {key}: {message}")


def _as_keys(message: str) -> str:
    """A component's message in config words: its CLI flags (--max-ratio) as the keys that set
    them here (max_ratio)."""
    return re.sub(r"--([a-z][a-z0-9-]*)", lambda m: m.group(1).replace("-", "_"), message)


def _known(path: str, where: str, given: dict, known: set) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        _fail(path, where, f"unknown key {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def load_config(path: str | Path) -> ExperimentConfig | MoEExperimentConfig:
    """The config at `path`, checked: keys, methods and pruners by their registries, their
    arguments by their own validation, and that layerif methods have scoring slices."""
    path = str(path)
    raw = _read(path)
    kind = raw.get("kind", "pruning")
    if kind not in KINDS:
        _fail(path, "kind", f"{kind!r} is not a kind of experiment; use one of "
                            f"{', '.join(KINDS)}.")
    return _moe_config(path, raw) if kind == "lora-moe" else _pruning_config(path, raw)


def _read(path: str) -> dict:
    if Path(path).is_dir():
        raise ConfigError(f"{path}: is a folder; give the config's YAML file.")
    try:
        text = read_utf8(path, ConfigError)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file.") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        raise ConfigError(f"{path}: {where}not valid YAML ({problem}"
                          f"{f', {context}' if context else ''}).") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys (name, model, methods, ...).")
    return raw


def _methods(path: str, raw: list, make) -> list[MethodSpec]:
    """The `methods` list, each checked by `make(name, **arguments)` (its registry)."""
    from ..influence.aggregate import check_aggregate

    methods = []
    for i, m in enumerate(raw or []):
        where = f"methods[{i}]"
        if isinstance(m, str):
            m = {"method": m}
        if not isinstance(m, dict) or "method" not in m:
            _fail(path, where, "give {method: NAME, ...its arguments}.")
        options = {k: v for k, v in m.items() if k not in ("method", "aggregate", "label")}
        try:
            make(m["method"], **options)
            aggregate = check_aggregate(m["aggregate"]) if m.get("aggregate") else None
        except LayerIFError as exc:
            _fail(path, where, _as_keys(str(exc)))
        if aggregate and m["method"] != "layerif":
            _fail(path, where, "aggregate applies to method layerif only.")
        methods.append(MethodSpec(m["method"], options, aggregate, str(m.get("label", ""))))
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        _fail(path, "methods", f"labels repeat ({', '.join(names)}); give each a label.")
    if not methods:
        _fail(path, "methods", "give at least one method.")
    return methods


def _numbers(path: str, key: str, values, kind: type) -> list:
    """A list of numbers of `kind` (a YAML scalar counts as a list of one)."""
    values = values if isinstance(values, list) else [values]
    try:
        numbers = [kind(v) for v in values if not isinstance(v, bool)]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != len(values) or (kind is int and numbers != values) or any(
            not math.isfinite(v) for v in numbers):
        _fail(path, key, f"give a list of {'whole ' if kind is int else ''}numbers, got "
                         f"{values!r}.")
    return numbers


def _check_model(path: str, model) -> None:
    """A model name, or the spec of a random model (its keys checked)."""
    if isinstance(model, str) and model:
        return
    if not isinstance(model, dict) or "random" not in model:
        _fail(path, "model", "give a model name, folder or .gguf, or {random: ARCH, config: "
                             "{...}, tokenizer: NAME}.")
    _known(path, "model", model, MODEL_KEYS)
    if not isinstance(model.get("config", {}), dict):
        _fail(path, "model.config", "give a mapping of the architecture's config fields.")


def _random_model_layers(model) -> int | None:
    """The block count of a random model's spec when it names one (else None: known only once
    the model is loaded)."""
    if isinstance(model, dict):
        layers = model.get("config", {}).get("num_hidden_layers")
        return layers if isinstance(layers, int) else None
    return None


def _evaluation(path: str, raw: dict, known: set) -> dict:
    evaluation = _section(path, raw, "evaluation", known)
    if evaluation.get("slice") is not None and evaluation.get("limit") is not None:
        _fail(path, "evaluation", "give slice (which rows) or limit (the first N), not both.")
    return evaluation


def _section(path: str, raw: dict, key: str, known: set) -> dict:
    section = raw.get(key) or {}
    if not isinstance(section, dict):
        _fail(path, key, f"give a mapping of {', '.join(sorted(known))}.")
    _known(path, key, section, known)
    return dict(section)


def grid_labels(raw_methods) -> set[str]:
    """The labels (or names) of a config's methods, as written."""
    out = set()
    for m in raw_methods or []:
        if isinstance(m, str):
            out.add(m)
        elif isinstance(m, dict) and "method" in m:
            out.add(str(m.get("label") or m["method"]))
    return out


def split_starts(start) -> list[str]:
    """A search's `start`: a YAML list or a comma-separated string."""
    if isinstance(start, list):
        return [str(s).strip() for s in start if str(s).strip()]
    return [s.strip() for s in str(start).split(",") if s.strip()]


def grid_starts(options: dict, labels: set[str]) -> tuple[dict, list[str]]:
    """A search method's options with every start that names another method of the grid (by
    label) replaced by `uniform` (the runner hands it that method's allocation of the same seed
    and sparsity instead), and the labels so named, in order."""
    if "start" not in options:
        return options, []
    starts = split_starts(options["start"])
    named = [s for s in starts if s in labels]
    kept = ["uniform" if s in labels else s for s in starts]
    return {**options, "start": ",".join(kept)}, named


def _pruning_config(path: str, raw: dict) -> ExperimentConfig:
    from ..allocation.sparsity_methods import SPARSITY_METHODS, make_sparsity_method
    from ..pruning.pruners import make_pruner

    _known(path, "top level", raw, KEYS)
    for key in ("name", "model", "methods", "pruners", "sparsities"):
        if key not in raw:
            _fail(path, key, "missing.")
    _check_model(path, raw["model"])
    labels = grid_labels(raw["methods"])

    def make_method(name, **options):  # a search may start from the grid's other methods
        if name == "search":
            options, _ = grid_starts(options, labels - {"search"})
        return make_sparsity_method(name, **options)

    methods = _methods(path, raw["methods"], make_method)
    for m in methods:
        if m.method == "search" and m.name in split_starts(m.options.get("start", "")):
            _fail(path, "methods", f"search {m.name} cannot start from itself.")
    pruners = []
    for i, p in enumerate(raw["pruners"] or []):
        p = {"name": p} if isinstance(p, str) else dict(p)
        options = {k: v for k, v in p.items() if k != "name"}
        try:
            make_pruner(p.get("name"), **options)
        except LayerIFError as exc:
            _fail(path, f"pruners[{i}]", _as_keys(str(exc)))
        pruners.append(PrunerSpec(p["name"], options))
    sparsities = _numbers(path, "sparsities", raw["sparsities"], float)
    if not sparsities or any(not 0 < s < 1 for s in sparsities):
        _fail(path, "sparsities", "give targets in (0, 1).")
    for m in methods:
        cap = SPARSITY_METHODS[m.method].max_target
        if cap < 1 and max(sparsities) > cap:
            _fail(path, "sparsities", f"{max(sparsities)} is above method {m.name}'s largest "
                  f"target {cap} (no block is pruned to more); give targets <= {cap}.")
    seeds = _numbers(path, "seeds", raw.get("seeds", [0]), int)
    scoring = dict(raw.get("scoring") or {})
    _known(path, "scoring", scoring, SCORING_KEYS)
    slices = list(scoring.pop("slices", []) or [])
    for i, s in enumerate(slices):
        if not isinstance(s, dict) or set(s) != {"train", "val"}:
            _fail(path, f"scoring.slices[{i}]", "give {train: SPEC, val: SPEC}.")
    if any("scores" in SPARSITY_METHODS[m.method].needs for m in methods) and not slices:
        _fail(path, "scoring.slices", "layerif methods need at least one scoring slice.")
    slices = _with_n_train(path, slices, scoring.pop("n_train", None))
    sensitivity = _sensitivity(path, raw, methods, pruners, sparsities)
    calibration = _section(path, raw, "calibration", CALIBRATION_KEYS)
    evaluation = _evaluation(path, raw, EVALUATION_KEYS)
    if not evaluation.get("tasks") and not evaluation.get("ppl"):
        _fail(path, "evaluation", "give tasks, ppl or both.")
    transfer = _transfer(path, raw, {m.name for m in methods})
    return ExperimentConfig(
        name=str(raw["name"]), model=raw["model"], methods=methods, pruners=pruners,
        sparsities=sparsities, seeds=seeds, slices=slices, scoring=scoring,
        calibration=calibration, evaluation=evaluation, dense=bool(raw.get("dense", True)),
        keep_models=bool(raw.get("keep_models", False)), sensitivity=sensitivity,
        transfer=transfer, path=path)


def _transfer(path: str, raw: dict, labels: set[str]) -> dict:
    """The second evaluation text (`transfer: {ppl: [SOURCE], ppl_seqlen, methods: [LABEL]}`):
    perplexity on another text for the rows it names (and the dense model), evaluated as extra
    cells, so the grid's other evaluations keep their keys."""
    section = _section(path, raw, "transfer", TRANSFER_KEYS)
    if not section:
        return {}
    ppl = section.get("ppl")
    if not isinstance(ppl, list) or not ppl or not all(isinstance(s, str) for s in ppl):
        _fail(path, "transfer.ppl", "give a list of perplexity texts.")
    methods = section.get("methods")
    if not isinstance(methods, list) or not methods:
        _fail(path, "transfer.methods", "give the labels of the rows to evaluate on it.")
    unknown = [m for m in methods if m not in labels]
    if unknown:
        _fail(path, "transfer.methods", f"{', '.join(map(str, unknown))} is not a method label "
                                        f"of this grid (labels: {', '.join(sorted(labels))}).")
    seqlen = section.get("ppl_seqlen")
    if seqlen is not None and (not isinstance(seqlen, int) or seqlen < 2):
        _fail(path, "transfer.ppl_seqlen", "give a window of at least 2 tokens.")
    return section


def _with_n_train(path: str, slices: list[dict], n_train) -> list[dict]:
    """Each slice cut to its first n training rows, for every n of `scoring.n_train`."""
    if n_train is None:
        return slices
    from ..data.sources import TaskSpec

    if not isinstance(n_train, list) or not n_train or any(
            not isinstance(n, int) or n < 2 for n in n_train):
        _fail(path, "scoring.n_train", "give a list of training example counts >= 2.")
    out = []
    for i, s in enumerate(slices):
        try:
            spec = TaskSpec.parse(s["train"])
        except LayerIFError:
            _fail(path, f"scoring.slices[{i}].train", "n_train needs a task spec with a slice "
                                                      "[START:STOP], not a file.")
        start = spec.start or 0
        if spec.stop is None or any(start + n > spec.stop for n in n_train):
            _fail(path, f"scoring.slices[{i}].train", f"{s['train']} has fewer rows than "
                  f"n_train {max(n_train)}; give a slice of at least that many.")
        for n in n_train:
            cut = TaskSpec(spec.task, spec.split, start, start + n, spec.source)
            out.append({"train": str(cut), "val": s["val"]})
    return out


def _sensitivity(path: str, raw: dict, methods: list[MethodSpec], pruners: list,
                 sparsities: list[float]) -> dict:
    """The measured-sensitivity section, checked (levels, one pruner, targets within the
    levels for method sensitivity without a cap); required by method sensitivity, whose file
    the runner supplies."""
    from ..sensitivity import check_levels

    section = _section(path, raw, "sensitivity", SENSITIVITY_KEYS)
    uses = [m for m in methods if m.method == "sensitivity"]
    if uses and not section:
        _fail(path, "sensitivity", "method sensitivity needs this section (levels, held).")
    for m in uses:
        if m.options.get("file"):
            _fail(path, "methods", "method sensitivity reads the grid's own measurement; drop "
                                   "its file.")
    if not section:
        return {}
    try:
        section["levels"] = check_levels(section.get("levels") or [], "levels")
    except LayerIFError as exc:
        _fail(path, "sensitivity.levels", str(exc))
    top = max(section["levels"])
    if any(m.options.get("cap") is None for m in uses) and max(sparsities) > top:
        _fail(path, "sparsities", f"{max(sparsities)} is above {top}, the largest sensitivity "
              "level; method sensitivity allocates within what was measured: add a level or "
              "give the method a cap (extrapolated above the levels).")
    if len(pruners) != 1:
        _fail(path, "sensitivity", "measure with one pruner per grid (D_l(s) is the pruner's); "
                                   "split the grid by pruner.")
    windows = section.get("held_windows", 16)
    if not isinstance(windows, int) or windows < 2:
        _fail(path, "sensitivity.held_windows", "give at least 2 held windows.")
    return {"held": "sciq:validation[800:1000]", "held_windows": 16, "check": True, **section}


def _moe_config(path: str, raw: dict) -> MoEExperimentConfig:
    from ..allocation.expert_methods import EXPERT_METHODS, make_expert_method
    from ..data.instruct import instruct_tasks

    _known(path, "top level", raw, MOE_KEYS)
    for key in ("name", "model", "methods") + (() if raw.get("selection") else ("tasks",)):
        if key not in raw:
            _fail(path, key, "missing.")
    _check_model(path, raw["model"])
    methods = _methods(path, raw["methods"], make_expert_method)
    recipes = _recipes(path, raw.get("recipes"))
    selection = str(raw.get("selection") or "")
    if selection:
        if recipes:
            _fail(path, "selection", "a sweep (recipes) makes a choice; it does not take one.")
        raw = _apply_selection(path, raw, selection)
    tasks = []
    for i, t in enumerate(raw["tasks"] or []):
        if not isinstance(t, dict) or not {"task", "train", "val"} <= set(t) \
                or set(t) - MOE_TASK_KEYS:
            _fail(path, f"tasks[{i}]", "give {task: NAME, train: SPEC, val: SPEC} and optionally "
                                       "select: SPEC (a sweep's choice rows), shots: SPEC (the "
                                       "base model's worked examples).")
        if t["task"] not in instruct_tasks():
            _fail(path, f"tasks[{i}]", f"task {t['task']!r} has no instruction format; use one "
                                       f"of {', '.join(instruct_tasks())}.")
        if recipes and not t.get("select"):
            _fail(path, f"tasks[{i}]", "a sweep (recipes) chooses on validation rows: give "
                                       "select: SPEC, rows disjoint from the evaluation rows.")
        tasks.append(dict(t))
    if not tasks:
        _fail(path, "tasks", "give at least one task.")
    if len({t["task"] for t in tasks}) != len(tasks):
        _fail(path, "tasks", "a task appears twice; sweep its rows with recipes (rows: N).")
    base_shots = raw.get("base_shots", 0)
    if not isinstance(base_shots, int) or isinstance(base_shots, bool) or base_shots < 0:
        _fail(path, "base_shots", f"give a whole number >= 0, got {base_shots!r}.")
    total = raw.get("total")
    if total is not None and (not isinstance(total, int) or total < 1):
        _fail(path, "total", "give a positive number of experts.")
    layers = _random_model_layers(raw["model"])
    if total is not None and layers is not None and total < layers:
        _fail(path, "total", f"{total} experts are fewer than the model's {layers} layers "
                             f"(each needs at least 1); give total >= {layers}.")
    if total is None and any(EXPERT_METHODS[m.method].gives_weights for m in methods):
        _fail(path, "total", "methods that weight layers need the total number of experts.")
    if raw.get("plain_lora") and total is None:
        _fail(path, "plain_lora", "plain LoRA is matched to the uniform mixture of `total` "
                                  "experts; give total.")
    training = _section(path, raw, "training", TRAINING_KEYS)
    _training_arguments(path, "training", training)
    scoring = _section(path, raw, "scoring", SCORING_KEYS - {"slices"})
    return MoEExperimentConfig(
        name=str(raw["name"]), model=raw["model"], tasks=tasks, methods=methods, total=total,
        seeds=_numbers(path, "seeds", raw.get("seeds", [0]), int), scoring=scoring,
        training=training,
        lora=_section(path, raw, "lora", LORA_KEYS),
        evaluation=_moe_evaluation(path, raw, bool(recipes)),
        base=bool(raw.get("base", True)), keep_models=bool(raw.get("keep_models", False)),
        path=path, base_shots=base_shots, plain_lora=bool(raw.get("plain_lora", False)),
        recipes=recipes, selection=selection)


def _moe_evaluation(path: str, raw: dict, sweep: bool) -> dict:
    evaluation = _evaluation(path, raw, MOE_EVALUATION_KEYS)
    if sweep and (evaluation.get("slice") is not None or evaluation.get("limit") is not None):
        _fail(path, "evaluation", "a sweep (recipes) evaluates on each task's select rows "
                                  "only; drop limit and slice here.")
    return evaluation


def _recipes(path: str, raw) -> list[dict]:
    """A sweep's recipes: each a label and the training keys it changes, plus `rows` (the
    first N rows of each task's fine-tuning slice)."""

    if raw is None:
        return []
    if not isinstance(raw, list) or not raw:
        _fail(path, "recipes", "give a list of {label: NAME, rows: N, epochs: N, lr: X, ...}.")
    recipes = []
    for i, r in enumerate(raw):
        where = f"recipes[{i}]"
        if not isinstance(r, dict) or not r.get("label"):
            _fail(path, where, "give {label: NAME, and what it changes: rows, epochs, lr, ...}.")
        _known(path, where, r, RECIPE_KEYS)
        rows = r.get("rows")
        if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool)
                                 or rows < 1):
            _fail(path, where, f"rows: give a whole number >= 1, got {rows!r}.")
        _training_arguments(path, where, {k: v for k, v in r.items()
                                          if k not in ("label", "rows")})
        recipes.append(dict(r))
    labels = [r["label"] for r in recipes]
    if len(set(labels)) != len(labels):
        _fail(path, "recipes", f"labels repeat ({', '.join(map(str, labels))}).")
    return recipes


def _training_arguments(path: str, where: str, training: dict) -> None:
    """Training keys checked as `FinetuneArguments` checks them, and the data format."""
    from ..training import FinetuneArguments

    if training.get("format", "instruct") not in TRAIN_FORMATS:
        _fail(path, where, f"format: {training['format']!r}; use {' or '.join(TRAIN_FORMATS)} "
                           "(both: each row also as lm-eval's prompt and answer).")
    try:
        FinetuneArguments(**{k: v for k, v in training.items() if k not in ("balance",
                                                                           "format")})
    except (LayerIFError, TypeError) as exc:
        _fail(path, where, str(exc))


def _apply_selection(path: str, raw: dict, selection: str) -> dict:
    """`raw` with the tasks and training a sweep's choice.json sets (a config that names a
    choice gives neither itself)."""
    import json

    for key in ("tasks", "training"):
        if key in raw:
            _fail(path, key, f"set by selection ({selection}); drop it here.")
    file = Path(selection)
    try:
        choice = json.loads(file.read_text())
        task, training = choice["task"], choice["training"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _fail(path, "selection", f"{selection}: not a sweep's choice.json ({exc}); "
                                 "`layerif experiment report` on a sweep writes it.")
    return {**raw, "tasks": [task], "training": training}
