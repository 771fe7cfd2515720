"""LoRA-MoE: MoLA-style mixtures of LoRA experts with per-layer expert counts."""

from .lora_moe import (
    LoRAMoELinear,
    MoEConfig,
    apply_lora_moe,
    aux_loss,
    load_adapters,
    save_adapters,
)
from .reference import matched_rank, plain_lora_config

__all__ = ["LoRAMoELinear", "MoEConfig", "apply_lora_moe", "aux_loss", "load_adapters",
           "matched_rank", "plain_lora_config", "save_adapters"]
