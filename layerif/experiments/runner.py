"""One entry for every kind of experiment: the config's kind picks its runner."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import LayerIFError
from .config import ExperimentConfig, MoEExperimentConfig
from .lora_moe import run_lora_moe
from .pruning import RunSummary, run_pruning


def run_experiment(config: ExperimentConfig | MoEExperimentConfig, out: str | Path,
                   progress: bool = True, stored_only: bool = False,
                   reuse: Sequence[str | Path] = ()) -> RunSummary:
    """Run (or resume) `config` (from `load_config`) in the folder `out`; stored_only: compute
    nothing, write the manifest of the stored cells (pruning grids); reuse: other experiment
    folders whose stored cells with the same keys are copied in instead of computed
    (cells.CellStore)."""
    if isinstance(config, MoEExperimentConfig):
        if stored_only:
            raise LayerIFError(f"{config.path}: --stored-only is for pruning grids; a LoRA-MoE "
                               "grid reports once `experiment run` has finished it.")
        return run_lora_moe(config, out, progress=progress, reuse=reuse)
    return run_pruning(config, out, progress=progress, stored_only=stored_only,
                       reuse=reuse)


def check_data(config: ExperimentConfig | MoEExperimentConfig) -> None:
    """What `run_experiment` checks before any work: the config's data sets are disjoint by
    content where they must be (raises DataError naming the overlap)."""
    if isinstance(config, MoEExperimentConfig):
        from .lora_moe import check_moe_data

        check_moe_data(config)
    else:
        from .pruning import _refuse_overlaps, run_settings

        _refuse_overlaps(config, *run_settings(config)[:2])
