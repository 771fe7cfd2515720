"""Allocation files and the functions behind `layerif allocate sparsity|experts|ranks`.

alloc.json (sparsity): method, parameters, model, layers, ratios (one per layer),
params_per_layer (prunable parameters), target and achieved global sparsity.
experts.json: method, parameters, model, layers, experts (one per layer), total.
ranks.json: method, parameters, model, layers, ranks (one per layer), budget, the adapted
module names per layer; `layerif.lora.lora_config` turns it into a peft LoraConfig.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from .. import __version__
from ..data.provenance import sets_from
from ..evaluation.overlap import scores_sets
from ..fingerprint import check_same_model
from ..influence.aggregate import check_aggregate
from ..io import refuse_foreign_file, write_json_files
from ..models import discover_blocks
from .expert_methods import ExpertInputs, make_expert_method, make_rank_method
from .experts import AllocationError
from .ranks import allocate_by_weights
from .sparsity_methods import SparsityInputs, make_sparsity_method


def _load(path: str | Path, what: str) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise AllocationError(f"{path}: no such {what} file.") from None
    except json.JSONDecodeError as exc:
        raise AllocationError(f"{path}: not valid JSON ({exc}).") from exc


class AllocationFile:
    """save/load of an allocation dataclass as JSON; `load` refuses a file that is not one
    (missing or unknown fields) or fails the subclass's `check`."""

    WHAT = "allocation"

    def save(self, path: str | Path, companions: list[tuple[Path, dict]] = ()) -> Path:
        """Write the allocation (and `companions`, files that belong with it) all or nothing;
        an existing --out that is not an allocation file is refused."""
        self.refuse_foreign(path, *(c for c, _ in companions))
        write_json_files([(path, asdict(self)), *companions])
        return Path(path)

    @classmethod
    def refuse_foreign(cls, *paths: str | Path) -> None:
        """Refuse (before the work, too) an existing output that is not a layerif allocation
        (or its LoraConfig companion): an unrelated file is never overwritten."""
        for target in paths:
            refuse_foreign_file(target, lambda d: isinstance(d, dict) and (
                {"method", "layers"} <= d.keys() or "r" in d or "rank_pattern" in d),
                cls.WHAT)

    def check(self, path: str | Path) -> None:
        """Raise AllocationError naming `path` when the loaded values are inconsistent."""

    @classmethod
    def load(cls, path: str | Path):
        try:
            alloc = cls(**_load(path, cls.WHAT))
        except TypeError as exc:
            raise AllocationError(f"{path}: not a {cls.WHAT} ({exc}).") from exc
        alloc.check(path)
        return alloc


@dataclass
class SparsityAllocation(AllocationFile):
    method: str
    parameters: dict
    model: str
    layers: list[int]
    ratios: list[float]
    params_per_layer: list[int]
    sparsity: float  # the target
    global_sparsity: float  # achieved: sum P_l s_l / sum P_l
    layerif_version: str = __version__
    model_fingerprint: dict = field(default_factory=dict)  # the weights it was made for
    provenance: list[dict] = field(default_factory=list)  # content sets behind it
    # per layer "unstructured", "dense" or "N:M" (allocation/patterns.py); empty: unstructured
    patterns: list[str] = field(default_factory=list)
    WHAT = "sparsity allocation"

    def with_patterns(self, allowed: list[str]) -> SparsityAllocation:
        """This allocation with each layer set to one of the `allowed` patterns, the global
        target kept as closely as they allow (allocation/patterns.py); the method's own ratios
        are kept under parameters["ratios_before_patterns"]."""
        from .patterns import assign_patterns

        patterns, ratios = assign_patterns(self.ratios, self.params_per_layer, self.sparsity,
                                           allowed)
        P = np.asarray(self.params_per_layer, dtype=np.float64)
        return SparsityAllocation(**{
            **asdict(self), "patterns": patterns, "ratios": [float(x) for x in ratios],
            "global_sparsity": float((ratios * P).sum() / P.sum()),
            "parameters": {**self.parameters, "allowed_patterns": list(allowed),
                           "ratios_before_patterns": self.ratios}})

    def check(self, path: str | Path) -> None:
        if len(self.ratios) != len(self.layers) or not all(0 <= r < 1 for r in self.ratios):
            raise AllocationError(f"{path}: needs one ratio in [0, 1) per layer.")
        if self.patterns and len(self.patterns) != len(self.layers):
            raise AllocationError(f"{path}: needs one pattern per layer (or none).")


@dataclass
class ExpertAllocation(AllocationFile):
    method: str
    parameters: dict
    model: str | None
    layers: list[int]
    experts: list[int]
    total: int
    layerif_version: str = __version__
    model_fingerprint: dict = field(default_factory=dict)
    provenance: list[dict] = field(default_factory=list)
    WHAT = "expert allocation"


@dataclass
class RankAllocation(AllocationFile):
    method: str
    parameters: dict  # beta, min_rank, multiple_of, scores/aggregate or alphas
    model: str | None
    layers: list[int]
    ranks: list[int]  # one per layer; every module of the layer takes it
    budget: int  # sum(ranks), exactly
    modules: list[list[str]]  # per layer: full module names of the adapted matrices
    layerif_version: str = __version__
    model_fingerprint: dict = field(default_factory=dict)
    provenance: list[dict] = field(default_factory=list)
    WHAT = "rank allocation"

    def check(self, path: str | Path) -> None:
        if len(self.ranks) != len(self.layers) or len(self.modules) != len(self.layers):
            raise AllocationError(f"{path}: needs one rank and one module list per layer.")


def load_scores(path: str | Path, aggregate: str | None = None) -> dict:
    """scores.json (or its folder) as written by `layerif score`; `aggregate` picks one of the
    saved aggregates as "scores" instead of the one the file was written with. Files written
    before the aggregates were renamed are read under the new names."""
    from ..scoring import upgrade_scores_meta

    path = Path(path)
    path = path / "scores.json" if path.is_dir() else path
    data = _load(path, "scores")
    if not isinstance(data.get("scores"), list) or not isinstance(data.get("layers"), list):
        raise AllocationError(f"{path}: not a layerif scores file (no 'scores'/'layers').")
    data = upgrade_scores_meta(data)
    saved = data.get("aggregates") or {}
    if aggregate is not None:
        aggregate = check_aggregate(aggregate)
        if aggregate in saved:
            data["scores"], data["aggregate"] = saved[aggregate], aggregate
        elif aggregate != data.get("aggregate"):
            raise AllocationError(f"{path} holds no aggregate {aggregate!r} (it has "
                                  f"{', '.join(saved) or 'none'}).")
    not_numbers = [(layer, v) for layer, v in zip(data["layers"], data["scores"], strict=False)
                   if isinstance(v, bool) or not isinstance(v, (int, float))]
    if not_numbers:
        layer, value = not_numbers[0]
        raise AllocationError(
            f"{path}: the score of layer {layer} is {value!r}, not a number (the file was "
            f"edited or damaged); rescore (see `layerif score`) or restore the file.")
    bad = [layer for layer, v in zip(data["layers"], data["scores"], strict=False)
           if not math.isfinite(v)]
    if bad:
        raise AllocationError(
            f"{path}: aggregate {data.get('aggregate')!r} is not finite at layer(s) "
            f"{', '.join(map(str, bad[:8]))}; rescore (see `layerif score`) or pick another "
            "--aggregate.")
    data["_path"] = str(path)
    return data


def _check_scores_match(scores: dict, fingerprint: dict | None, n_blocks: int | None) -> None:
    """Scores made for other weights (by fingerprint), or with another layer count, are refused."""
    if n_blocks is not None and len(scores["scores"]) != n_blocks:
        raise AllocationError(
            f"{scores['_path']} has {len(scores['scores'])} layer scores but the model has "
            f"{n_blocks} blocks; score the model you allocate for."
        )
    if fingerprint:
        check_same_model(scores.get("model_fingerprint"), fingerprint, scores["_path"])


def _scores_lineage(scores: dict | None) -> tuple[dict, list[dict]]:
    """The fingerprint and content sets an allocation inherits from its scores file."""
    if scores is None:
        return {}, []
    found = sets_from(scores, scores["_path"]) if "provenance" in scores else \
        scores_sets(scores["_path"], scores["_path"])  # an older file: rebuilt from its names
    sets = [c.to_dict() for c in found]
    return scores.get("model_fingerprint") or {}, sets


def prunable_params(model) -> list[int]:
    return [sum(m.numel for m in b.matrices) for b in discover_blocks(model)]


def allocate_sparsity(
    method: str,
    sparsity: float,
    *,
    model=None,
    model_name: str | None = None,
    scores: dict | None = None,
    calibration: list | None = None,
    calibration_set: dict | None = None,
    fingerprint: dict | None = None,
    tokenizer=None,
    **options,
) -> SparsityAllocation:
    """Per-layer ratios by the registered sparsity method `method` (sparsity_methods/), its
    arguments from `options` (e.g. epsilon=0.3; None = the default). model: the causal LM (a
    `models.load_skeleton` suffices unless the method needs weights or calibration);
    scores: a loaded scores.json (methods that need scores); calibration: token windows, whose
    content set `calibration_set` is recorded. fingerprint: the model's (fingerprint.py);
    scores made for other weights are refused. tokenizer: the model's (methods that read
    text of their own: search)."""
    chosen = make_sparsity_method(method, **options)
    if model is None:
        raise AllocationError("sparsity allocation needs the model (prunable parameter counts).")
    blocks = discover_blocks(model)
    needs = chosen.requires()
    if "scores" in needs:
        if scores is None:
            raise AllocationError(f"method {method} needs --scores DIR/scores.json.")
        _check_scores_match(scores, fingerprint, len(blocks))
    if "calibration" in needs and not calibration:
        raise AllocationError(f"method {method} needs calibration samples.")
    if "tokenizer" in needs and tokenizer is None:
        raise AllocationError(f"method {method} needs the model's tokenizer.")
    P = prunable_params(model)
    ratios, params = chosen.ratios(sparsity, SparsityInputs(
        model, blocks, P, scores if "scores" in needs else None, calibration,
        fingerprint, tokenizer, calibration_set))
    Pa = np.asarray(P, dtype=np.float64)
    inherited, sets = _scores_lineage(scores if "scores" in needs else None)
    if calibration_set and "calibration" in needs:
        sets.append(calibration_set)
    sets += params.pop("provenance", [])  # what a method read of its own (search's texts)
    return SparsityAllocation(
        method=method, parameters=params, model=model_name or "", layers=[b.index for b in blocks],
        ratios=[float(r) for r in ratios], params_per_layer=P, sparsity=float(sparsity),
        global_sparsity=float((np.asarray(ratios) * Pa).sum() / Pa.sum()),
        model_fingerprint=fingerprint or inherited, provenance=sets,
    )


def allocate_experts(
    method: str,
    total: int | None = None,
    *,
    scores: dict | None = None,
    model=None,
    model_name: str | None = None,
    fingerprint: dict | None = None,
    **options,
) -> ExpertAllocation:
    """Per-layer expert counts by the registered method `method` (expert_methods/), its
    arguments from `options` (beta=2.0, pattern="2468"; None = the default). model: the causal
    LM (a skeleton suffices except for methods that read the weights), or None to take the
    layers from `scores`. fingerprint: the model's; scores made for other weights are refused."""
    chosen = make_expert_method(method, **options)
    blocks = discover_blocks(model) if model is not None else None
    if scores is not None:
        _check_scores_match(scores, fingerprint, len(blocks) if blocks else None)
    if blocks is not None:
        layers = [b.index for b in blocks]
    elif scores is not None:
        layers = list(scores["layers"])
    else:
        raise AllocationError("give --scores or --model so the number of layers is known.")
    if "scores" in chosen.needs and scores is None:
        raise AllocationError(f"method {method} needs --scores DIR/scores.json.")
    experts, params = chosen.experts(total, ExpertInputs(len(layers), blocks, scores))
    reads_scores = "scores" in chosen.needs
    inherited, sets = _scores_lineage(scores if reads_scores else None)
    if not fingerprint and scores is not None:
        inherited = scores.get("model_fingerprint") or {}  # the layers came from the scores
    return ExpertAllocation(method, params, model_name or (scores or {}).get("model"), layers,
                            [int(e) for e in experts], int(experts.sum()),
                            model_fingerprint=fingerprint or inherited, provenance=sets)


def allocate_ranks(
    method: str,
    budget: int,
    model,
    *,
    min_rank: int = 1,
    multiple_of: int = 1,
    scores: dict | None = None,
    model_name: str | None = None,
    fingerprint: dict | None = None,
    **options,
) -> RankAllocation:
    """Per-layer LoRA ranks summing to `budget` (allocation/ranks.py) by the layer weights of the
    registered method `method` (expert_methods/; options as for allocate_experts). model: the
    causal LM (a skeleton suffices except for alphalora, which reads the weights' spectra);
    every tracked matrix of a block (`discover_blocks`) is adapted with its block's rank."""
    chosen = make_rank_method(method, **options)
    blocks = discover_blocks(model)
    if scores is not None:
        _check_scores_match(scores, fingerprint, len(blocks))
    if "scores" in chosen.needs and scores is None:
        raise AllocationError(f"method {method} needs --scores DIR/scores.json.")
    shape = {"min_rank": min_rank, "multiple_of": multiple_of}
    weights, priority, recorded = chosen.weights(ExpertInputs(len(blocks), blocks, scores))
    ranks = allocate_by_weights(weights, budget, priority=priority, **shape)
    # GPT-2's Conv1D stores (d_in, d_out): peft needs fan_in_fan_out for it (lora/config.py)
    transposed = any(not isinstance(m.module, nn.Linear) for b in blocks for m in b.matrices)
    params = {**recorded, **shape, "fan_in_fan_out": transposed}
    inherited, sets = _scores_lineage(scores if "scores" in chosen.needs else None)
    return RankAllocation(method, params, model_name, [b.index for b in blocks],
                          [int(r) for r in ranks], int(budget),
                          [[m.name for m in b.matrices] for b in blocks],
                          model_fingerprint=fingerprint or inherited, provenance=sets)
