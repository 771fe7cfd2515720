"""The pruning grid: scores per scoring slice, then for every seed, sparsity and method an
allocation, for every pruner a pruned model and its evaluation, plus the dense model's.

Cell kinds and what their keys cover (each includes the keys of the cells it reads):
    model       a random model built from a config (its spec)
    scores      model, slice, scoring settings
    allocation  model, method + arguments + aggregate, sparsity, and the scores key (methods
                that read scores) or the calibration settings and seed (methods that read
                calibration data)
    pruned      allocation key, pruner + arguments, calibration settings, seed
    eval        the pruned key (or the dense model), evaluation settings
    sensitivity model, the pruner, the sensitivity section, calibration settings, first seed
                (method sensitivity's allocations read it: their keys include it)
    additivity  an allocation of the first seed and the sensitivity: the whole model pruned
                to it, the measured NLL increase on the held windows beside sum_l D_l(s_l)
A pruned model's weights are deleted once its evaluation is stored (unless keep_models), so a
rerun recomputes a pruned model only when its evaluation is missing.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import LayerIFError
from ..io import write_json
from .cells import CellMissing, CellStore, cell_key
from .config import ExperimentConfig

DEFAULT_CALIBRATION = {"source": "sciq:validation[0:600]", "nsamples": 128, "seqlen": 512}
MANIFEST = "manifest.json"


@dataclass
class RunSummary:
    executed: list[tuple[str, str]]
    corrupt: list[str]
    seconds: float
    rows: list[dict] = field(default_factory=list)  # one per evaluated model
    partial: dict | None = None  # a stored-only run: what its manifest leaves out
    reused: list[tuple[str, str]] = field(default_factory=list)  # (kind, key) copied in


def _model(config: ExperimentConfig, store: CellStore) -> str:
    """The model argument the cells load: the config's name, or the folder of a random model
    built (once, as a cell) from its spec."""
    spec = config.model
    if isinstance(spec, str):
        return spec

    def build(folder: Path) -> dict:
        import torch
        import transformers

        from ..models import load_tokenizer

        torch.manual_seed(int(spec.get("seed", 0)))
        model_config = transformers.AutoConfig.for_model(spec["random"], **spec.get("config", {}))
        model = transformers.AutoModelForCausalLM.from_config(model_config)
        scale = float(spec.get("init_scale", 1.0))
        with torch.no_grad():  # wider than the default init, so influences are far from zero
            for name, p in model.named_parameters():
                if p.dim() == 2 and "embed" not in name and "wte" not in name:
                    p.mul_(scale)
        model.save_pretrained(folder)
        load_tokenizer(spec.get("tokenizer", "smollm2-135m")).save_pretrained(folder)
        return {}

    key, _ = store.run("model", {"spec": spec}, build, label=f"random {spec['random']}")
    return str(store.folder("model", key))


def run_pruning(config: ExperimentConfig, out: str | Path, progress: bool = True,
                stored_only: bool = False, reuse: Sequence[str | Path] = ()) -> RunSummary:
    """Run (or resume) the grid of `config` in `out`; returns what was computed.

    stored_only: compute nothing; the manifest names only the stored cells of the seeds whose
    every row is stored (a report of a grid still running or interrupted), with a `partial`
    entry saying what is left out (none when every cell is stored: the complete grid).
    reuse: other experiment folders whose cells with the same keys are copied in instead of
    computed (CellStore)."""
    from .. import score_layers

    start = time.perf_counter()
    out = Path(out)
    calibration, evaluation, scoring = run_settings(config)
    _refuse_overlaps(config, calibration, evaluation)
    store = CellStore(out, progress=print if progress else None, stored_only=stored_only,
                      reuse=reuse)
    stored = _stored_or_none if stored_only else (lambda f, *a, **k: f(*a, **k))
    model = stored(_model, config, store)
    if model is None:
        raise LayerIFError(f"{out}: the grid's random model is not stored yet; run "
                           f"`layerif experiment run {config.path} --out {out}` first.")
    model_id = config.model
    grid = [(seed, sparsity, method, i)
            for seed in config.seeds for sparsity in config.sparsities
            for method in config.methods
            for i in (range(len(config.slices)) if "scores" in _needs(method, config)
                      else [None])]
    n_pruned = len(grid) * len(config.pruners)
    checked = bool(config.sensitivity) and config.sensitivity["check"]
    allocations = Counter(_allocation_stage(method) for _, _, method, _ in grid)
    transferred = sum(m.name in (config.transfer or {}).get("methods", [])
                      for _, _, m, _ in grid) * len(config.pruners)
    store.plan({"scores": len(config.slices), **allocations, "pruned": n_pruned,
                "eval": n_pruned + int(config.dense) + transferred
                + int(config.dense and bool(config.transfer)),
                "sensitivity": int(bool(config.sensitivity)),
                "additivity": sum(g[0] == config.seeds[0] for g in grid) if checked else 0})
    scores_keys = []
    for i, s in enumerate(config.slices):
        def compute_scores(folder, s=s):
            result = score_layers(model, s["train"], s["val"], estimator=scoring["estimator"],
                                  params=scoring["params"], max_length=scoring["max_length"],
                                  batch_size=scoring["batch_size"],
                                  data_format=scoring["format"], progress=False)
            result.save(folder / "scores")
            return {"layers": len(result.layers)}

        cell = stored(store.run, "scores", {"model": model_id, **s, **scoring},
                      compute_scores, label=f"slice {i}: {s['train']}",
                      hashed=("scores/scores.json",))
        scores_keys.append(cell[0] if cell else None)

    sensitivity_key = stored(_sensitivity, store, config, model, model_id, calibration)
    rows, missing = [], []
    transfer = transfer_settings(config, evaluation)
    if config.dense:
        cell = stored(_evaluate, store, model, model_id, None, evaluation, "dense")
        if cell:
            rows.append({"method": "dense", "slice": None, "pruner": None, "sparsity": 0.0,
                         "seed": None, "eval": cell[0]})
            moved = transfer and stored(_evaluate, store, model, model_id, None, transfer,
                                        "dense (transfer)")
            if moved:
                rows[-1]["transfer"] = moved[0]
        else:
            missing.append(("dense", None))
    additivity: list[dict] = []
    atp_betas: dict[tuple, float] = {}  # (seed, sparsity) -> the ATP method's chosen beta
    # the pruned models made so far, by what makes them (_same_model): an allocation with the
    # ratios of an earlier one (LayerIF's epsilon 0 is uniform, or ATP under --prior atp) gets
    # that model's evaluation and additivity instead of the same prune and evaluation again
    made: dict[str, dict] = {}

    def grid_allocation(label: str, seed: int, sparsity: float) -> str | None:
        """The key of the allocation of the grid's method `label` (first scoring slice) at
        this seed and sparsity, computed now if it is not stored: a search starts from it."""
        ref = next(m for m in config.methods if m.name == label)
        ref = _with_atp_beta(ref, config, atp_betas.get((seed, sparsity)))
        key = scores_keys[0] if "scores" in _needs(ref, config) and scores_keys else None
        if "scores" in _needs(ref, config) and not key:
            return None
        return _allocate(store, config, model, model_id, ref, sparsity, seed, key,
                         calibration, sensitivity_key, grid_allocation)

    for seed, sparsity, method, slice_index in grid:
        method = _with_atp_beta(method, config, atp_betas.get((seed, sparsity)))
        twin_additivity = first = None
        scores_key = scores_keys[slice_index] if slice_index is not None else None
        alloc_key = None
        if (slice_index is None or scores_key) and (method.method != "sensitivity"
                                                    or sensitivity_key):
            alloc_key = stored(_allocate, store, config, model, model_id, method, sparsity,
                               seed, scores_key, calibration, sensitivity_key, grid_allocation)
        if alloc_key and method.method == "atp":
            atp_betas[(seed, sparsity)] = json.loads((store.folder("allocation", alloc_key) /
                                                      "alloc.json").read_text())[
                "parameters"]["beta"]
        check = bool(alloc_key and sensitivity_key and checked and seed == config.seeds[0])
        additivity_key: list[str] = []

        def measure_pruned(pruned_model: Path, alloc_key=alloc_key, out=additivity_key):
            out.append(_additivity(store, config, model, alloc_key, sensitivity_key,
                                   calibration, pruned_model))

        for pruner in config.pruners:
            label = f"{method.name} {pruner.name} {sparsity} s{seed}"
            # (a missing row is named as the report names its rows)
            row_name = (f"{method.name} (slice {slice_index})" if slice_index is not None
                        and len(config.slices) > 1 else method.name)
            # the additivity check measures the model this pruner has just made, where it is
            # the sensitivity's own pruner (same arguments, first seed's windows)
            then = measure_pruned if check and pruner == config.pruners[0] \
                and _default_arguments(pruner) else None
            same = alloc_key and _same_model(store, alloc_key, pruner, seed)
            twin = made.get(same) if same else None
            if twin and then:
                twin_additivity = twin.get("additivity")
            wants_transfer = transfer if transfer and method.name in config.transfer[
                "methods"] else None
            keys = alloc_key and stored(_prune_and_evaluate, store, config, model,
                                        model_id, alloc_key, pruner, calibration, seed,
                                        evaluation, label, then, twin and twin["eval"],
                                        wants_transfer, twin and twin.get("transfer"))
            if not keys:
                missing.append((f"{row_name} {pruner.name} {sparsity} s{seed}", seed))
                continue
            eval_key, transfer_key = keys
            made.setdefault(same, {"eval": eval_key})
            if transfer_key:
                made[same].setdefault("transfer", transfer_key)
            if then:
                first = made[same]
            rows.append({"method": method.name, "slice": slice_index, "pruner": pruner.name,
                         "sparsity": sparsity, "seed": seed, "allocation": alloc_key,
                         "eval": eval_key, **({"transfer": transfer_key} if transfer_key
                                              else {})})
        if check:  # stored, or (its pruned model evaluated before) pruned again to measure
            key = additivity_key[0] if additivity_key else stored(
                _additivity, store, config, model, alloc_key, sensitivity_key, calibration,
                same_as=twin_additivity)
            if key and first is not None:
                first.setdefault("additivity", key)
            if key:
                additivity.append({"method": method.name, "slice": slice_index,
                                   "sparsity": sparsity, "allocation": alloc_key, "key": key})
    manifest = {"config": config.path, "name": config.name, "rows": rows,
                "scores": scores_keys, "slices": config.slices,
                "sensitivity": sensitivity_key, "additivity": additivity}
    if stored_only:
        if not rows:
            raise LayerIFError(f"{out}: no evaluated model of this grid is stored yet, so "
                               f"there is nothing to report; run `layerif experiment run "
                               f"{config.path} --out {out}` (without --stored-only) first.")
        if missing:  # (with nothing missing, the grid is complete: its whole report)
            manifest["rows"], manifest["partial"] = _whole_seeds(rows, missing, config)
    write_json(out / MANIFEST, manifest)
    return RunSummary(store.executed, store.corrupt, time.perf_counter() - start,
                      manifest["rows"], manifest.get("partial"), store.reused)


def _default_arguments(pruner) -> bool:
    """Whether the grid's pruner runs with its default arguments, as the sensitivity's does."""
    from ..pruning.pruners import make_pruner

    return make_pruner(pruner.name, **pruner.options).args == make_pruner(pruner.name).args


def _same_model(store, alloc_key: str, pruner, seed: int) -> str:
    """What makes a pruned model in this grid (the model and calibration being the grid's
    own): the allocation's ratios, bit for bit, the pruner with its arguments and the seed of
    the calibration windows. Equal for two allocations: the same weights, bit for bit."""
    ratios = json.loads((store.folder("allocation", alloc_key) / "alloc.json").read_text())[
        "ratios"]
    return json.dumps([ratios, pruner.name, pruner.options, seed], sort_keys=True)


def _stored_or_none(compute, *args, **kwargs):
    """compute(*args) in a stored-only run: its key, or None where a cell it needs is missing."""
    try:
        return compute(*args, **kwargs)
    except CellMissing:
        return None


def _whole_seeds(rows: list[dict], missing: list[tuple[str, int | None]],
                 config: ExperimentConfig) -> tuple[list[dict], dict]:
    """The rows a partial report shows, so that each table compares methods on the same seeds:
    those of the seeds with every row stored, or, while no seed is whole, the first seed's
    stored rows. Returns them and what the report says of the rest: {"planned", "stored",
    "seeds" (shown), "whole" (bool), "left_out" (stored rows not shown), "not_run" (labels
    of the shown seeds' rows not stored yet)}."""
    incomplete = {seed for _, seed in missing if seed is not None}
    whole = [s for s in config.seeds if s not in incomplete]
    shown = whole or config.seeds[:1]
    kept = [r for r in rows if r["seed"] is None or r["seed"] in shown]
    return kept, {"planned": len(rows) + len(missing), "stored": len(rows), "seeds": shown,
                  "whole": bool(whole), "left_out": len(rows) - len(kept),
                  "not_run": [label for label, seed in missing if seed is None or seed in shown]}


def transfer_settings(config: ExperimentConfig, evaluation: dict) -> dict | None:
    """The evaluation settings of the config's second text (`transfer`), or None: perplexity
    only, with the main evaluation's other settings."""
    if not config.transfer:
        return None
    return {**evaluation, "tasks": [], "ppl": list(config.transfer["ppl"]),
            "ppl_seqlen": config.transfer.get("ppl_seqlen", evaluation["ppl_seqlen"])}


def run_settings(config: ExperimentConfig) -> tuple[dict, dict, dict]:
    """(calibration, evaluation, scoring) settings: the config's over the defaults."""
    calibration = {**DEFAULT_CALIBRATION, **config.calibration}
    evaluation = {"limit": 200, "ppl": [], "ppl_seqlen": None, "batch_size": 8,
                  **config.evaluation}
    scoring = {"max_length": 256, "format": "plain", "estimator": "datainf", "batch_size": 8,
               "params": "all", **config.scoring}
    return calibration, evaluation, scoring


def _refuse_overlaps(config: ExperimentConfig, calibration: dict, evaluation: dict) -> None:
    """Before any work: calibration text must not share content with scoring slices, and
    evaluation items and perplexity text with either (scoring slices may overlap one another,
    perplexity and evaluation may too)."""
    from ..data.provenance import check_disjoint, content_set
    from ..evaluation import evaluation_specs

    scoring = [content_set(s[part], f"scoring {part}") for s in config.slices
               for part in ("train", "val")]
    calibration_set = content_set(calibration["source"], "calibration")
    check_disjoint([calibration_set], scoring)
    specs = evaluation_specs(list(evaluation.get("tasks") or []), limit=evaluation["limit"],
                             rows=evaluation.get("slice"))
    held = [content_set(str(spec), "evaluation") for spec in specs]
    held += [content_set(source, "perplexity") for source in evaluation["ppl"]]
    held += [content_set(source, "perplexity") for source in
             (config.transfer or {}).get("ppl", [])]
    check_disjoint(held, [*scoring, calibration_set])
    if config.sensitivity:  # its held text overlaps nothing: calibration, scoring, evaluation
        from ..sensitivity.run import HELD_ROLE

        check_disjoint([content_set(config.sensitivity["held"], HELD_ROLE)],
                       [*scoring, calibration_set, *held])
    for method in config.methods:  # a search's fitness and validation texts neither
        if method.method == "search":
            from ..allocation.sparsity_methods.search import search_text_sets

            check_disjoint(search_text_sets(method.options), [*scoring, calibration_set, *held])


def _with_atp_beta(method, config: ExperimentConfig, beta: float | None):
    """LayerIF with --prior atp runs ATP's search first; where the grid's own ATP method ran
    the same search (same pruner, windows and held count, its default grid) on the same seed
    and sparsity, its beta is given instead of searched again."""
    from dataclasses import replace

    options = method.options
    if method.method != "layerif" or options.get("prior") != "atp" or beta is None \
            or "atp_beta" in options:
        return method
    defaults = {"pruner": "wanda", "nsamples": 32, "held": 8}
    atp = next((m for m in config.methods if m.method == "atp"), None)
    same = atp is not None and "grid" not in atp.options and "beta" not in atp.options and all(
        atp.options.get(k, v) == options.get(k, v) for k, v in defaults.items())
    return replace(method, options={**options, "atp_beta": beta}) if same else method


def _revision(method) -> int:
    from ..allocation.sparsity_methods import SPARSITY_METHODS

    return SPARSITY_METHODS[method.method].revision


def _needs(method, config: ExperimentConfig | None = None) -> tuple[str, ...]:
    """What `method` reads; a search starting from other methods of the grid reads their
    allocations, not what they read."""
    from ..allocation.sparsity_methods import make_sparsity_method
    from .config import grid_starts

    options = method.options
    if method.method == "search" and config is not None:
        options, _ = grid_starts(options, {m.name for m in config.methods} - {method.name})
    return make_sparsity_method(method.method, **options).requires()


def _calibration_windows(model: str, calibration: dict, seed: int):
    from ..data.calibration import calibration_samples
    from ..models import load_tokenizer

    return calibration_samples(load_tokenizer(model), calibration["source"],
                               calibration["nsamples"], calibration["seqlen"], seed)


def _sensitivity_run(config, model, calibration):
    from ..sensitivity.run import SensitivityRun

    section = config.sensitivity
    return SensitivityRun(model=model, pruner=config.pruners[0].name, levels=section["levels"],
                          calibration=calibration["source"], nsamples=calibration["nsamples"],
                          seqlen=calibration["seqlen"], held=section["held"],
                          held_windows=section["held_windows"], seed=config.seeds[0],
                          device="cpu")


def _sensitivity(store, config, model, model_id, calibration) -> str | None:
    """The measured sensitivity of the grid's pruner (a cell), or None without the section."""
    if not config.sensitivity:
        return None
    job = _sensitivity_run(config, model, calibration)
    settings = {**job.key(), "model": model_id, "pruner_options": config.pruners[0].options}

    def compute(folder):
        # finished blocks are kept beside the cell, so a killed grid resumes mid-measurement
        record = job.run(folder / "sensitivity", resume_dir=folder.parent / f"{folder.name}"
                         ".resume", progress=store.bars)
        # resumed_seconds: what the blocks loaded from an interrupted run took there (the stage
        # times add it to the cell's own seconds)
        return {"dense_nll": record["dense_nll"], "seconds": record["seconds"],
                "resumed_seconds": record.get("resumed_seconds", 0.0)}

    key, _ = store.run("sensitivity", settings, compute,
                       label=f"{config.pruners[0].name} at {config.sensitivity['levels']}",
                       hashed=("sensitivity/sensitivity.json",))
    return key


def _additivity(store, config, model, alloc_key, sensitivity_key, calibration,
                pruned_model: Path | None = None, same_as: str | None = None) -> str:
    """Whole model pruned to an allocation: measured NLL increase on the held windows beside
    the additive prediction sum_l D_l(s_l) (sensitivity/run.py's check, as a cell).
    pruned_model: the folder of that very model (the grid's first pruner on the first seed's
    windows) when it exists, measured as it is instead of pruned again (the same weights: the
    same pruner and windows, saved and loaded in fp32). same_as: the additivity cell of an
    allocation with the same ratios (the same pruned model), whose measurement is taken."""
    from ..allocation.api import SparsityAllocation
    from ..models import load_model
    from ..sensitivity import load, measured_increase
    from ..sensitivity.measure import held_increase
    from ..sensitivity.run import held_windows

    def compute(folder):
        alloc = SparsityAllocation.load(store.folder("allocation", alloc_key) / "alloc.json")
        measured, record = load(store.folder("sensitivity", sensitivity_key) / "sensitivity")
        if same_as:
            twin = json.loads((store.folder("additivity", same_as) / "additivity.json")
                              .read_text())
            result = {"predicted": float(measured.interpolate(alloc.ratios).sum()),
                      "measured": twin["measured"], "ratios": alloc.ratios,
                      "same_model_as": same_as}
            write_json(folder / "additivity.json", result)
            return result
        loaded, tokenizer = load_model(str(pruned_model or model), device="cpu")
        held = held_windows(tokenizer, record["held"]["source"], record["held"]["windows"],
                            record["held"]["seqlen"])
        if pruned_model:
            increase = held_increase(loaded, held, measured.dense_window_nll)
        else:
            increase = measured_increase(loaded, alloc.ratios, record["pruner"],
                                         _calibration_windows(model, calibration,
                                                              config.seeds[0]),
                                         held, measured.dense_window_nll)
        result = {"predicted": float(measured.interpolate(alloc.ratios).sum()),
                  "measured": increase, "ratios": alloc.ratios}
        write_json(folder / "additivity.json", result)
        return result

    key, _ = store.run("additivity", {"allocation": alloc_key, "sensitivity": sensitivity_key},
                       compute, label=f"additivity {alloc_key[:8]}",
                       hashed=("additivity.json",))
    return key


def _allocate(store, config, model, model_id, method, sparsity, seed, scores_key, calibration,
              sensitivity_key=None, grid_allocation=None):
    """The key of `method`'s allocation cell. grid_allocation(label, seed, sparsity): the key
    of another method's allocation in this grid (a search's start)."""
    from ..allocation.api import allocate_sparsity, load_scores
    from ..allocation.sparsity_methods.setting_search import kept_trials
    from ..data.provenance import content_set
    from ..models import load_model, load_skeleton
    from ..search.run import search_workspace

    needs = _needs(method, config)
    settings = {"model": model_id, "method": method.method, "options": method.options,
                "aggregate": method.aggregate, "sparsity": sparsity}
    revision = _revision(method)
    if revision:  # (only then: the keys of methods never revised stay as they were)
        settings["revision"] = revision
    if "scores" in needs:
        settings["scores"] = scores_key
    if "calibration" in needs:
        settings.update(calibration=calibration, seed=seed)
    options = dict(method.options)
    if method.method == "sensitivity":  # the grid's own measurement
        settings["sensitivity"] = sensitivity_key
        options["file"] = str(store.folder("sensitivity", sensitivity_key) / "sensitivity")
    if method.method == "search":
        options = _search_options(store, config, method, settings, sparsity, seed,
                                  sensitivity_key, grid_allocation)

    def compute(folder):
        scores = (load_scores(store.folder("scores", scores_key) / "scores", method.aggregate)
                  if "scores" in needs else None)
        reads_weights = "weights" in needs or "calibration" in needs
        tokenizer = None
        if reads_weights:
            loaded, tokenizer = load_model(model, device="cpu")
        else:
            loaded = load_skeleton(model)
        if "tokenizer" in needs and tokenizer is None:
            from ..models import load_tokenizer

            tokenizer = load_tokenizer(model)
        samples = calibration_set = None
        if "calibration" in needs:
            samples = _calibration_windows(model, calibration, seed)
            calibration_set = content_set(calibration["source"], "calibration").to_dict()
        # (a search killed mid-way resumes at its next trial or generation)
        with kept_trials(store.trials), search_workspace(store.root / "search-work"):
            alloc = allocate_sparsity(method.method, sparsity, model=loaded, model_name=model,
                                      scores=scores, calibration=samples,
                                      calibration_set=calibration_set, tokenizer=tokenizer,
                                      **options)
        alloc.save(folder / "alloc.json")
        return {"ratios": alloc.ratios, "global_sparsity": alloc.global_sparsity}

    key, _ = store.run("allocation", settings, compute, label=f"{method.name} {sparsity}"
                       + (f" s{seed}" if "calibration" in needs else ""),
                       hashed=("alloc.json",), stage=_allocation_stage(method))
    return key


def _search_options(store, config, method, settings: dict, sparsity: float, seed: int,
                    sensitivity_key, grid_allocation) -> dict:
    """A search's options in this grid: starts named by the grid's labels become their
    allocation files (their keys enter the cell's), a sensitivity bias reads the grid's own
    measurement."""
    from .config import split_starts

    options = dict(method.options)
    labels = {m.name for m in config.methods} - {method.name}
    starts, keys = [], {}
    for start in split_starts(options.get("start", "uniform")):
        if start in labels:
            key = grid_allocation(start, seed, sparsity)
            if key is None:
                raise CellMissing("allocation", start)
            keys[start] = key
            start = str(store.folder("allocation", key) / "alloc.json")
        starts.append(start)
    options["start"] = ",".join(starts)
    if keys:
        settings["starts"] = keys
    if options.get("bias") == "sensitivity":
        if not sensitivity_key:
            raise LayerIFError(f"{config.path}: method {method.name}: bias sensitivity needs "
                               "the grid's sensitivity section.")
        settings["sensitivity"] = sensitivity_key
        options["sensitivity"] = str(store.folder("sensitivity", sensitivity_key) /
                                     "sensitivity")
    return options


def _allocation_stage(method) -> str:
    """What the time-left estimate counts an allocation as: its method's label, because one
    method's allocations take alike and another's do not (a closed form in seconds, an ATP or
    --tune search of whole-model prunes in tens of minutes)."""
    return f"allocation {method.name}"


def _prune_and_evaluate(store, config, model, model_id, alloc_key, pruner, calibration, seed,
                        evaluation, label, then=None, twin: str | None = None,
                        transfer: dict | None = None, twin_transfer: str | None = None
                        ) -> tuple[str, str | None]:
    """(the eval key of the allocation pruned by `pruner`, the key of its evaluation on the
    `transfer` settings or None); then(model folder), when given, is called with the pruned
    model before its weights are deleted (when its main evaluation is computed now). twin /
    twin_transfer: the eval keys of the same pruned model made for another allocation of the
    grid (_same_model), whose evaluations this one takes instead of pruning and evaluating
    again (recorded as same_model_as; `then` is not called). A pruned model whose weights were
    deleted is pruned again only for an evaluation it lacks (a transfer text added later)."""
    from ..allocation.api import SparsityAllocation
    from ..data.provenance import check_disjoint, content_set
    from ..evaluation.overlap import allocation_sets
    from ..models import load_model
    from ..pruning.prune import prune_model, save_pruned
    from ..pruning.pruners import make_pruner

    settings = {"allocation": alloc_key, "pruner": pruner.name, "options": pruner.options,
                "calibration": calibration, "seed": seed}
    pruned_key = cell_key("pruned", settings)
    wanted = [evaluation] + ([transfer] if transfer else [])
    keys = [cell_key("eval", {"model": pruned_key, **e}) for e in wanted]
    cells = [store.load("eval", k) for k in keys]
    if all(c is not None for c in cells):
        store.visited("pruned")
        for c in cells:
            store.visited("eval", c)
        return keys[0], keys[1] if transfer else None

    def compute(folder):
        alloc_path = store.folder("allocation", alloc_key) / "alloc.json"
        alloc = SparsityAllocation.load(alloc_path)
        chosen = make_pruner(pruner.name, **pruner.options)
        # what shaped the pruned model, recorded so its evaluation refuses overlapping data
        recorded = allocation_sets(asdict(alloc), str(alloc_path))
        samples = []
        if chosen.needs_calibration:
            calibration_set = content_set(calibration["source"], "calibration")
            check_disjoint([calibration_set], recorded)
            recorded.append(calibration_set)
            samples = _calibration_windows(model, calibration, seed)
        loaded, tokenizer = load_model(model, device="cpu")
        report = prune_model(loaded, alloc.ratios, chosen, samples, progress=False)
        save_pruned(loaded, tokenizer, folder / "model", {
            "pruner": pruner.name, "pruner_arguments": asdict(chosen.args),
            "allocation": asdict(alloc), "calibration": {**calibration, "seed": seed},
            "provenance": [c.to_dict() for c in recorded]})
        return {"achieved": report.achieved, "seconds": report.seconds}

    if store.stored_only:  # an evaluation is missing: it would be computed
        if cells[0] is None:
            raise CellMissing("eval", label)
        store.visited("eval", cells[0])
        return keys[0], None
    for i, twin_key in enumerate([twin, twin_transfer][:len(wanted)]):
        twin_cell = store.load("eval", twin_key) if twin_key and cells[i] is None else None
        if twin_cell is not None:
            _same_evaluation(store, settings, {"model": pruned_key, **wanted[i]}, twin_key,
                             twin_cell, label)
            cells[i] = twin_cell
    missing = [i for i, c in enumerate(cells) if c is None]
    if missing:
        pruned = store.folder("pruned", pruned_key)
        if not (pruned / "model" / "config.json").exists():  # evaluated before, weights gone
            shutil.rmtree(pruned, ignore_errors=True)
        store.run("pruned", settings, compute, label=label)
        for i in missing:
            _evaluate(store, str(pruned / "model"), pruned_key, pruned_key, wanted[i],
                      label + (" (transfer)" if i else ""))
        if then is not None and 0 in missing:
            then(pruned / "model")
        if not config.keep_models:
            shutil.rmtree(pruned / "model", ignore_errors=True)
    return keys[0], keys[1] if transfer else None


def _same_evaluation(store, settings: dict, eval_settings: dict, twin: str, twin_cell: dict,
                     label: str) -> str:
    """The pruned and eval cells of `settings` taken from the eval cell `twin` (its loaded
    cell.json `twin_cell`) of the same pruned model (its results, its eval.json; same_model_as
    names the model they measured)."""
    twin_model = twin_cell["settings"]["model"]
    twin_pruned = store.load("pruned", twin_model)

    def pruned(folder):
        return {**(twin_pruned or {}).get("result", {}), "same_model_as": twin_model}

    def evaluated(folder):
        result = json.loads((store.folder("eval", twin) / "eval.json").read_text())
        write_json(folder / "eval.json", {**result, "same_model_as": twin_model})
        return {**twin_cell["result"], "same_model_as": twin_model}

    store.run("pruned", settings, pruned, label=f"{label} (= {twin_model[:8]})")
    key, _ = store.run("eval", eval_settings, evaluated, label=f"{label} (= {twin_model[:8]})",
                       hashed=("eval.json",))
    return key


def _evaluate(store, model, model_id, pruned_key, evaluation, label):
    from ..evaluation import evaluate_model, evaluation_specs
    from ..models import load_model

    settings = {"model": pruned_key or model_id, **evaluation}

    def compute(folder):
        loaded, tokenizer = load_model(model, device="cpu")
        specs = evaluation_specs(list(evaluation.get("tasks") or []), limit=evaluation["limit"],
                                 rows=evaluation.get("slice"))
        result = evaluate_model(loaded, tokenizer, specs, model_name=model,
                                batch_size=evaluation["batch_size"],
                                ppl=evaluation["ppl"], ppl_seqlen=evaluation["ppl_seqlen"],
                                progress=False) if specs else _ppl_only(loaded, tokenizer,
                                                                         evaluation)
        write_json(folder / "eval.json", result)
        return {"mean": result.get("mean", {}),
                "perplexity": {k: v["perplexity"] for k, v in
                               result.get("perplexity", {}).items()}}

    return store.run("eval", settings, compute, label=label, hashed=("eval.json",))


def _ppl_only(model, tokenizer, evaluation) -> dict:
    from ..data.calibration import perplexity_text
    from ..evaluation.perplexity import default_seqlen, perplexity

    seqlen = evaluation["ppl_seqlen"] or default_seqlen(model)
    out = {}
    for source in evaluation["ppl"]:
        text, max_windows = perplexity_text(source)
        out[source] = perplexity(model, tokenizer, text, seqlen, max_windows, source)
    return {"tasks": {}, "mean": {}, "perplexity": out}


def load_eval(out: str | Path, key: str) -> dict:
    return json.loads((Path(out) / "cells" / "eval" / key / "eval.json").read_text())
