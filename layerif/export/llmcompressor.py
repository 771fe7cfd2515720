"""Exports for llm-compressor: a sparsity allocation as a recipe its `oneshot` runs, and
layerif's calibration windows as a dataset it takes, so both tools prune on the same tokens."""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch

from ..allocation.api import SparsityAllocation
from ..allocation.experts import AllocationError
from ..errors import LayerIFError
from ..pruning.pruners import parse_structure


def recipe_yaml(alloc: SparsityAllocation, block_paths: list[str], modifier: str,
                mask_structure: str | None = None, calibration: dict | None = None) -> str:
    """An llm-compressor recipe (SparseGPTModifier or WandaPruningModifier): `targets` match the
    decoder blocks, one module per block, and `sparsity` is a list in block order, as
    llm-compressor types it (`float | list[float]`, the i-th value for the i-th matched
    target). mask_structure: "N:M" (default: the allocation's N:M pattern when every layer has
    the same one). calibration: {"source", "nsamples", "seqlen", "seed"} layerif calibrated with,
    written as a comment with the matching `oneshot` arguments."""
    import yaml


    names = {"sparsegpt": "SparseGPTModifier", "wanda": "WandaPruningModifier"}
    if modifier not in names:
        raise LayerIFError(f"unknown modifier {modifier!r}; use sparsegpt or wanda.")
    if len(block_paths) != len(alloc.ratios):
        raise AllocationError("the allocation's layer count does not match the model's blocks.")
    structured = sorted({p for p in alloc.patterns if ":" in p})
    if len(structured) > 1 or (structured and set(alloc.patterns) != set(structured)):
        raise AllocationError(
            f"the allocation mixes patterns ({', '.join(sorted(set(alloc.patterns)))}); "
            "llm-compressor takes one mask_structure per modifier: allocate with a single N:M "
            "pattern (or none) to export, or prune with `layerif prune`.")
    structure = mask_structure or (structured[0] if structured else "0:0")
    parse_structure(structure)  # refuse a malformed one here, not in llm-compressor
    prefix = block_paths[0].rsplit(".", 1)[0].replace(".", r"\.")
    recipe = {"sparsity_stage": {"sparsity_modifiers": {names[modifier]: {
        "sparsity": [round(r, 6) for r in alloc.ratios],
        "mask_structure": structure,
        "targets": [f"re:{prefix}\\.\\d+$"],
        "ignore": ["re:.*lm_head"],
    }}}}
    head = [f"# layerif {alloc.layerif_version}: {alloc.method} allocation for {alloc.model}, "
            f"target sparsity {alloc.sparsity:g} (achieved {alloc.global_sparsity:.6f}).",
            f"# sparsity[i] is the ratio of {block_paths[0].rsplit('.', 1)[0]}.i "
            f"({len(block_paths)} blocks)."]
    if calibration:
        head += [f"# layerif calibrated on {calibration['nsamples']} windows of "
                 f"{calibration['seqlen']} tokens from {calibration['source']} (seed "
                 f"{calibration['seed']}); the same in llm-compressor:",
                 f"#   oneshot(model=..., recipe=<this file>, dataset=<those windows>, "
                 f"num_calibration_samples={calibration['nsamples']}, "
                 f"max_seq_length={calibration['seqlen']})",
                 "#   (`layerif export-recipe --write-calibration FILE.jsonl` writes the windows "
                 "as input_ids)"]
    return "\n".join(head) + "\n" + yaml.safe_dump(recipe, sort_keys=False)


def calibration_jsonl(windows: Sequence[torch.Tensor]) -> str:
    """One {"input_ids": [...]} line per calibration window (a dataset llm-compressor's
    oneshot takes as it is)."""
    return "".join(json.dumps({"input_ids": w.reshape(-1).tolist()}) + "\n" for w in windows)
