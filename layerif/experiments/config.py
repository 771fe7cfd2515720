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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import LayerIFError


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
    path: str = ""


KEYS = {"name", "model", "scoring", "methods", "pruners", "sparsities", "seeds", "calibration",
        "evaluation", "dense", "keep_models", "kind"}
SCORING_KEYS = {"slices", "max_length", "format", "estimator", "batch_size", "params"}
CALIBRATION_KEYS = {"source", "nsamples", "seqlen"}
EVALUATION_KEYS = {"tasks", "limit", "slice", "ppl", "ppl_seqlen", "batch_size"}


def _fail(path: str, key: str, message: str):
    raise ConfigError(f"{path}: {key}: {message}")


def _known(path: str, where: str, given: dict, known: set) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        _fail(path, where, f"unknown key {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def load_config(path: str | Path) -> ExperimentConfig:
    """The config at `path`, checked: keys, methods and pruners by their registries, their
    arguments by their own validation, and that layerif methods have scoring slices."""
    from ..allocation.sparsity_methods import SPARSITY_METHODS, make_sparsity_method
    from ..influence.aggregate import check_aggregate
    from ..pruning.pruners import make_pruner

    path = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}).") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys (name, model, methods, ...).")
    _known(path, "top level", raw, KEYS)
    if raw.get("kind", "pruning") != "pruning":
        _fail(path, "kind", f"{raw['kind']!r} is not supported yet; use pruning.")
    for key in ("name", "model", "methods", "pruners", "sparsities"):
        if key not in raw:
            _fail(path, key, "missing.")
    methods = []
    for i, m in enumerate(raw["methods"] or []):
        where = f"methods[{i}]"
        if isinstance(m, str):
            m = {"method": m}
        if not isinstance(m, dict) or "method" not in m:
            _fail(path, where, "give {method: NAME, ...its arguments}.")
        options = {k: v for k, v in m.items() if k not in ("method", "aggregate", "label")}
        try:
            make_sparsity_method(m["method"], **options)
            aggregate = check_aggregate(m["aggregate"]) if m.get("aggregate") else None
        except LayerIFError as exc:
            _fail(path, where, str(exc))
        if aggregate and m["method"] != "layerif":
            _fail(path, where, "aggregate applies to method layerif only.")
        methods.append(MethodSpec(m["method"], options, aggregate, str(m.get("label", ""))))
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        _fail(path, "methods", f"labels repeat ({', '.join(names)}); give each a label.")
    pruners = []
    for i, p in enumerate(raw["pruners"] or []):
        p = {"name": p} if isinstance(p, str) else dict(p)
        options = {k: v for k, v in p.items() if k != "name"}
        try:
            make_pruner(p.get("name"), **options)
        except LayerIFError as exc:
            _fail(path, f"pruners[{i}]", str(exc))
        pruners.append(PrunerSpec(p["name"], options))
    sparsities = [float(s) for s in raw["sparsities"]]
    if not sparsities or any(not 0 < s < 1 for s in sparsities):
        _fail(path, "sparsities", "give targets in (0, 1).")
    seeds = [int(s) for s in raw.get("seeds", [0])]
    scoring = dict(raw.get("scoring") or {})
    _known(path, "scoring", scoring, SCORING_KEYS)
    slices = list(scoring.pop("slices", []) or [])
    for i, s in enumerate(slices):
        if not isinstance(s, dict) or set(s) != {"train", "val"}:
            _fail(path, f"scoring.slices[{i}]", "give {train: SPEC, val: SPEC}.")
    if any("scores" in SPARSITY_METHODS[m.method].needs for m in methods) and not slices:
        _fail(path, "scoring.slices", "layerif methods need at least one scoring slice.")
    calibration = dict(raw.get("calibration") or {})
    _known(path, "calibration", calibration, CALIBRATION_KEYS)
    evaluation = dict(raw.get("evaluation") or {})
    _known(path, "evaluation", evaluation, EVALUATION_KEYS)
    if not evaluation.get("tasks") and not evaluation.get("ppl"):
        _fail(path, "evaluation", "give tasks, ppl or both.")
    return ExperimentConfig(
        name=str(raw["name"]), model=raw["model"], methods=methods, pruners=pruners,
        sparsities=sparsities, seeds=seeds, slices=slices, scoring=scoring,
        calibration=calibration, evaluation=evaluation, dense=bool(raw.get("dense", True)),
        keep_models=bool(raw.get("keep_models", False)), path=path)
