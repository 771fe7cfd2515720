"""Model identity: which weights a scores, allocation, pruning or adapter file was made for.

A fingerprint records the model's name, a digest of its config (architecture and shapes; the
dtype, paths and library versions left out) and the Frobenius norm of every decoder block's
tracked matrices, computed in float64. Two fingerprints match when the configs and layer counts
are equal and every block norm agrees to `NORM_RTOL`: loading the same checkpoint in bf16,
fp16 or fp32 moves a block norm by about 2^-9 / sqrt(block size) (rounding errors of opposite
signs cancel), far below the tolerance, while pruning or fine-tuning a block moves it by more.
`id` is a short digest for messages; matching never depends on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math

import torch

from .errors import LayerIFError
from .models import Block, discover_blocks

log = logging.getLogger(__name__)
NORM_RTOL = 1e-3
# Config keys that describe how a checkpoint was loaded or saved, not what it is.
_VOLATILE = {"_name_or_path", "torch_dtype", "dtype", "transformers_version", "quantization_config",
             "_attn_implementation", "_attn_implementation_autoset", "_commit_hash", "use_cache",
             "attn_implementation", "output_attentions", "output_hidden_states", "return_dict"}


class ModelMismatchError(LayerIFError, ValueError):
    """A file made for other weights than the model given."""


def config_digest(config) -> str:
    data = {k: v for k, v in sorted(config.to_dict().items()) if k not in _VOLATILE}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fingerprint(name: str, config, norms: list[float]) -> dict:
    digest = config_digest(config)
    rounded = [float(f"{n:.3g}") for n in norms]
    short = hashlib.sha256(json.dumps([digest, rounded]).encode()).hexdigest()[:12]
    return {"name": name, "id": short, "config": digest, "layers": len(norms),
            "block_norms": [float(f"{n:.8g}") for n in norms]}


@torch.no_grad()
def block_norms(blocks: list[Block]) -> list[float]:
    return [math.sqrt(sum(float(m.weight.detach().double().square().sum()) for m in b.matrices))
            for b in blocks]


def model_fingerprint(model, name: str) -> dict:
    """The fingerprint of a loaded model (one pass over its block weights)."""
    return _fingerprint(name, model.config, block_norms(discover_blocks(model)))


def fingerprint_from_files(name: str) -> dict:
    """The fingerprint of a model argument read from its safetensors files one matrix at a time
    (no model is built); falls back to loading the model when the files are not at hand."""
    from safetensors import safe_open

    from .models import load_model, load_skeleton, weight_files

    skeleton = load_skeleton(name)
    blocks = discover_blocks(skeleton)
    wanted = {f"{m.name}.weight": b.index for b in blocks for m in b.matrices}
    sums = [0.0] * len(blocks)
    found = 0
    for path in weight_files(name):
        with safe_open(str(path), framework="pt") as f:
            for key in wanted.keys() & set(f.keys()):
                sums[wanted[key]] += float(f.get_tensor(key).double().square().sum())
                found += 1
    if found != len(wanted):
        log.info("%s: %d of %d block matrices in safetensors files; loading the model", name,
                 found, len(wanted))
        return model_fingerprint(load_model(name, device="cpu")[0], name)
    return _fingerprint(name, skeleton.config, [math.sqrt(s) for s in sums])


def mismatch(recorded: dict, current: dict) -> str | None:
    """Why two fingerprints differ, or None when they match."""
    if recorded["layers"] != current["layers"]:
        return f"{recorded['layers']} layers vs {current['layers']}"
    if recorded["config"] != current["config"]:
        return "different configs"
    for layer, (a, b) in enumerate(zip(recorded["block_norms"], current["block_norms"],
                                       strict=True)):
        if abs(a - b) > NORM_RTOL * max(abs(a), abs(b)):
            return f"different weights (block {layer}'s norm {a:.6g} vs {b:.6g})"
    return None


def check_same_model(recorded: dict | None, current: dict, where: str) -> None:
    """Refuse a file (`where`) whose recorded fingerprint is not the current model's."""
    if not recorded:
        return  # written before fingerprints were recorded
    why = mismatch(recorded, current)
    if why:
        raise ModelMismatchError(
            f"{where} was made for {recorded['name']} (fingerprint {recorded['id']}), not for "
            f"{current['name']} (fingerprint {current['id']}): {why}. Use the model it was made "
            "for, or redo that step for this one.")
