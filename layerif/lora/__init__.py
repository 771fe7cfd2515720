"""Plain LoRA with per-layer ranks from a rank allocation, trained and loaded with peft."""

from ..export.peft import lora_config, lora_config_path
from .adalora import adalora_ranks, finetune_adalora
from .train import finetune_lora, is_peft_adapter, load_peft_adapter, wrap_lora

__all__ = ["adalora_ranks", "finetune_adalora", "finetune_lora", "is_peft_adapter",
           "load_peft_adapter", "lora_config", "lora_config_path", "wrap_lora"]
