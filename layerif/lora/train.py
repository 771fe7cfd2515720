"""Plain LoRA with per-layer ranks, trained with peft itself (`layerif finetune-lora`).

The model is wrapped by `peft.get_peft_model` with the LoraConfig of a rank allocation
(lora/config.py), trained on the shared loop of layerif.training (same data formats, seeds,
checkpoints and resume as `finetune-moe`) and saved with peft's `save_pretrained`, so the folder
is a peft adapter that `PeftModel.from_pretrained` (and `layerif eval --adapter`) loads. peft draws
the initial A matrices from torch's global generator, seeded here with the run's seed."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import LayerIFError
from ..io import atomic_dir, write_json
from ..training import FinetuneArguments, finish, train_adapters

ADAPTER_CONFIG = "adapter_config.json"
TRAINING_FILE = "training.json"


def wrap_lora(model, config: dict, seed: int = 0):
    """The peft model of `model` with LoraConfig(**config), its adapters drawn under `seed`."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(model, LoraConfig(**config))


def finetune_lora(model, tokenizer, config: dict, train_examples, out_dir: str | Path,
                  args: FinetuneArguments | None = None, progress: bool = True, *,
                  provenance: dict | None = None,
                  on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train a peft LoRA (LoraConfig keyword arguments `config`) on `train_examples`; writes
    out_dir (peft's adapter_config.json and adapter_model.safetensors, plus training.json with
    `provenance`, the history and the base model's fingerprint). on_epoch: called with
    {"epoch", "loss"} as each epoch ends."""
    args = args or FinetuneArguments()
    peft_model = wrap_lora(model, config, args.seed)
    history, seconds = train_adapters(peft_model, tokenizer, train_examples, args, out_dir,
                                      {"lora_config": config}, progress=progress,
                                      on_epoch=on_epoch)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    summary = {**(provenance or {}), "history": history, "seconds": round(seconds, 2),
               "arguments": asdict(args), "trainable_parameters": trainable}
    with atomic_dir(out_dir, marker=ADAPTER_CONFIG) as tmp:
        peft_model.save_pretrained(tmp)
        write_json(tmp / TRAINING_FILE, summary)
    finish(out_dir)
    return summary


def is_peft_adapter(adapter_dir: str | Path) -> bool:
    """A peft adapter folder (its adapter_config.json names a peft_type); a LoRA-MoE folder
    from `finetune-moe` has the same file name without that field."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    if not path.is_file():
        raise LayerIFError(f"{adapter_dir}: no {ADAPTER_CONFIG}; give a folder written by "
                           "`layerif finetune-lora`, `finetune-moe` or peft's save_pretrained.")
    try:
        return "peft_type" in json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LayerIFError(f"{path}: not valid JSON ({exc}).") from exc


def load_peft_adapter(model, adapter_dir: str | Path):
    """`model` with the peft adapter of `adapter_dir` (refused when its training.json records
    other base weights), in eval mode."""
    from peft import PeftModel

    from ..fingerprint import check_same_model, model_fingerprint

    training = Path(adapter_dir) / TRAINING_FILE
    recorded = json.loads(training.read_text()).get("base_fingerprint") \
        if training.is_file() else None
    if recorded:
        check_same_model(recorded, model_fingerprint(model, "the base model"), str(adapter_dir))
    return PeftModel.from_pretrained(model, str(adapter_dir)).eval()
