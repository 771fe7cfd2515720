"""LoRA-MoE: MoLA-style mixtures of LoRA experts with per-layer expert counts."""

from .lora_moe import (
    LoRAMoELinear,
    MoEConfig,
    apply_lora_moe,
    aux_loss,
    load_adapters,
    save_adapters,
)

__all__ = ["LoRAMoELinear", "MoEConfig", "apply_lora_moe", "aux_loss", "load_adapters",
           "save_adapters"]
