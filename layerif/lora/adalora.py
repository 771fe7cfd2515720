"""peft's AdaLoRA on layerif's training loop: the baseline that learns its per-layer ranks.

AdaLoRA (Zhang et al., 2023) starts every matrix at `init_r` singular triplets and prunes the
least important ones on a cubic schedule until the average rank is `target_r`, so at the end it
has the trainable budget of a uniform LoRA of rank `target_r` (the comparison of
bench/bench_lora_ranks.py). peft's rank update must run after each optimiser step, while the
gradients are still there (layerif.training's `after_step`), and peft adds its orthogonality
regulariser only when the model computes the loss itself, so it is added here."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from ..io import atomic_dir, write_json
from ..training import FinetuneArguments, finish, train_adapters
from .train import ADAPTER_CONFIG, TRAINING_FILE


def adalora_config(target_modules: list[str], steps: int, *, init_r: int = 12, target_r: int = 8,
                   dropout: float = 0.05, fan_in_fan_out: bool = False):
    """peft's AdaLoraConfig over `steps` optimiser steps: ranks fixed for the first tenth, pruned
    from init_r to an average of target_r until the last fifth, then frozen (alpha = 2 x
    target_r, as layerif's rank allocations scale it)."""
    from peft import AdaLoraConfig

    return AdaLoraConfig(task_type="CAUSAL_LM", init_r=init_r, target_r=target_r,
                         lora_alpha=2 * target_r, lora_dropout=dropout,
                         target_modules=target_modules, fan_in_fan_out=fan_in_fan_out,
                         total_step=steps, tinit=steps // 10, tfinal=steps // 5, deltaT=1)


def orthogonality_loss(peft_model, weight: float) -> torch.Tensor:
    """`weight` x the mean over A and B matrices of ||P P^T - I||_F (A) or ||P^T P - I||_F (B),
    peft's AdaLoRA regulariser."""
    terms = []
    for name, p in peft_model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and p.requires_grad:
            cov = p @ p.T if "lora_A" in name else p.T @ p
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], dtype=cov.dtype)))
    return weight * torch.stack(terms).mean()


def adalora_ranks(peft_model) -> dict[str, int]:
    """Module name -> the singular triplets AdaLoRA kept (its lora_E entries left nonzero)."""
    return {name: int((module.lora_E["default"].detach() != 0).sum())
            for name, module in peft_model.named_modules()
            if hasattr(module, "lora_E") and "default" in module.lora_E}


def finetune_adalora(model, tokenizer, train_examples, out_dir: str | Path,
                     target_modules: list[str], args: FinetuneArguments | None = None, *,
                     init_r: int = 12,
                     target_r: int = 8, progress: bool = True,
                     provenance: dict | None = None) -> dict:
    """Train peft's AdaLoRA on `train_examples`; writes out_dir as `finetune_lora` does (a peft
    adapter folder plus training.json). The summary's "ranks" maps each module to its final
    rank; they sum to target_r x the number of modules. Resuming from a checkpoint restarts
    AdaLoRA's importance estimates (peft keeps them outside the parameters)."""
    from peft import get_peft_model

    args = args or FinetuneArguments()
    config = adalora_config(target_modules, args.steps(len(train_examples)), init_r=init_r,
                            target_r=target_r,
                            fan_in_fan_out=getattr(model.config, "model_type", "") == "gpt2")
    torch.manual_seed(args.seed)
    peft_model = get_peft_model(model, config)
    history, seconds = train_adapters(
        peft_model, tokenizer, train_examples, args, out_dir, {"adalora": str(config)},
        extra_loss=lambda: orthogonality_loss(peft_model, config.orth_reg_weight),
        after_step=peft_model.base_model.update_and_allocate, progress=progress)
    summary = {**(provenance or {}), "history": history, "seconds": round(seconds, 2),
               "arguments": asdict(args), "ranks": adalora_ranks(peft_model),
               "trainable_parameters": sum(p.numel() for p in peft_model.parameters()
                                           if p.requires_grad)}
    with atomic_dir(out_dir, marker=ADAPTER_CONFIG) as tmp:
        peft_model.save_pretrained(tmp)
        write_json(tmp / TRAINING_FILE, summary)
    finish(out_dir)
    return summary
