"""Choosing a method's setting on calibration data, never on evaluation data: each candidate's
ratios prune the whole model on some calibration windows, the pruned model's perplexity on the
last calibration windows (held out of that prune) scores it, and the weights are put back after
every trial. ATP's beta and LayerIF's epsilon are chosen this way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

# Imported inside the functions that use them: the CLI's parsers import this module
# and must not wait for torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch
from tqdm.auto import tqdm

from ..experts import AllocationError
from .base import SparsityInputs


def split_windows(windows: Sequence[torch.Tensor], held: int, nsamples: int, who: str,
                  held_flag: str) -> tuple[list, list]:
    """(the windows the trials prune with, at most `nsamples`; the last `held` windows)."""
    windows = list(windows)
    if len(windows) <= held:
        raise AllocationError(
            f"{who} holds out the last {held} calibration windows to choose its setting and "
            f"needs more than that; got {len(windows)} (raise --nsamples or lower {held_flag}).")
    return windows[:-held][:nsamples], windows[-held:]


def held_perplexity(inputs: SparsityInputs, ratios: np.ndarray, pruner: str, prune_on,
                    held) -> float:
    """Perplexity on `held` of the model pruned to `ratios` with `pruner` on `prune_on`; the
    weights are put back afterwards."""
    import torch

    from ...evaluation.perplexity import windows_perplexity
    from ...pruning.prune import prune_model

    saved = {m.name: m.module.weight.detach().clone()
             for b in inputs.blocks for m in b.matrices}
    try:
        prune_model(inputs.model, ratios, pruner, prune_on, progress=False)
        return windows_perplexity(inputs.model.eval(), held)
    finally:
        with torch.no_grad():
            for b in inputs.blocks:
                for m in b.matrices:
                    m.module.weight.copy_(saved[m.name])


def choose(inputs: SparsityInputs, candidates: Sequence[float],
           ratios_of: Callable[[float], np.ndarray], pruner: str, nsamples: int, held: int,
           who: str, held_flag: str) -> tuple[float, dict]:
    """(the candidate whose ratios give the lowest held perplexity, the record of the search:
    grid, each point's perplexity, pruner and window counts)."""
    prune_on, held_windows = split_windows(inputs.calibration, held, nsamples, who, held_flag)
    trials = [held_perplexity(inputs, ratios_of(c), pruner, prune_on, held_windows)
              for c in tqdm(candidates, desc=f"{who} search", leave=False)]
    best = int(np.argmin(trials))
    return candidates[best], {"grid": list(candidates), "held_perplexity": trials,
                              "pruner": pruner, "search_nsamples": len(prune_on),
                              "held_windows": len(held_windows)}
