"""Declarative experiments: a YAML config to resumable cells to paper-style tables."""

from .cells import CellStore, cell_key
from .config import ConfigError, ExperimentConfig, MoEExperimentConfig, load_config
from .lora_moe import run_lora_moe
from .pruning import RunSummary, run_pruning
from .report import write_report
from .runner import check_data, run_experiment

__all__ = ["CellStore", "ConfigError", "ExperimentConfig", "MoEExperimentConfig", "RunSummary",
           "cell_key", "check_data", "load_config", "run_experiment", "run_lora_moe", "run_pruning",
           "write_report"]
