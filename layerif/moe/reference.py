"""Plain LoRA held against a LoRA-MoE at equal trainable parameters (issue 46).

A LoRA-MoE with E_l experts of rank r on each adapted (d_in, d_out) matrix of layer l trains
    sum_matrices E_l r (d_in + d_out) + [E_l > 1] d_in E_l        (experts, router)
parameters (`adapter_footprint`). Plain LoRA of rank R on the same matrices trains
R sum_matrices (d_in + d_out); `matched_rank` is the R whose count is nearest the mixture's.
Its alpha keeps the mixture's per-expert scale alpha / r (the usual alpha = 2r at the defaults),
so an update of one expert and of the plain adapter are scaled alike. The plain adapter is peft's
own (`peft.LoraConfig`, its initialisation), trained by `finetune_lora` on the same loop.
"""

from __future__ import annotations

from torch import nn

from ..models import discover_blocks
from .lora_moe import MoEConfig, adapter_footprint


def adapted_matrices(model: nn.Module, targets: list[str]) -> list:
    """The block matrices a LoRA-MoE with `targets` (short names; empty: all) adapts."""
    return [m for block in discover_blocks(model) for m in block.matrices
            if not targets or m.name.rsplit(".", 1)[-1] in targets]


def plain_lora_config(model: nn.Module, rank: int, *, scaling: float, dropout: float,
                      targets: list[str]) -> dict:
    """`peft.LoraConfig` keyword arguments: rank `rank` and lora_alpha = scaling x rank on every
    matrix a LoRA-MoE with `targets` adapts, named in full (GPT-2's Conv1D matrices need
    fan_in_fan_out)."""
    matrices = adapted_matrices(model, targets)
    alpha = scaling * rank
    return {"task_type": "CAUSAL_LM", "r": rank,
            "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
            "lora_dropout": dropout, "bias": "none",
            "fan_in_fan_out": any(not isinstance(m.module, nn.Linear) for m in matrices),
            "target_modules": [m.name for m in matrices]}


def matched_rank(model: nn.Module, moe: MoEConfig) -> tuple[int, int, int]:
    """(R, plain LoRA's trainable parameters at rank R, the LoRA-MoE's): the rank whose count is
    nearest the mixture's (never below 1). `model` may be a `meta` skeleton."""
    moe_params, _ = adapter_footprint(model, moe)
    per_rank = sum(m.d_in + m.d_out for m in adapted_matrices(model, moe.targets))
    rank = max(1, round(moe_params / per_rank))
    return rank, rank * per_rank, moe_params


__all__ = ["adapted_matrices", "matched_rank", "plain_lora_config"]
