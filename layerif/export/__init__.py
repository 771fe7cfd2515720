"""Allocations in the formats of the tools users run: llm-compressor recipes and calibration
data, peft LoraConfigs."""

from .llmcompressor import calibration_jsonl, recipe_yaml
from .peft import lora_config, lora_config_path

__all__ = ["calibration_jsonl", "lora_config", "lora_config_path", "recipe_yaml"]
