"""Declarative experiments: a YAML config to resumable cells to paper-style tables."""

from .cells import CellStore, cell_key
from .config import ConfigError, ExperimentConfig, load_config
from .pruning import RunSummary, run_pruning
from .report import write_report

__all__ = ["CellStore", "ConfigError", "ExperimentConfig", "RunSummary", "cell_key",
           "load_config", "run_pruning", "write_report"]
