"""Choosing a method's setting on calibration data, never on evaluation data: each candidate's
ratios prune the whole model on some calibration windows, the pruned model's perplexity on the
last calibration windows (held out of that prune) scores it, and the weights are put back after
every trial. ATP's beta and LayerIF's epsilon are chosen this way."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# Imported inside the functions that use them: the CLI's parsers import this module
# and must not wait for torch (tests/test_startup.py).
if TYPE_CHECKING:
    import torch
from tqdm.auto import tqdm

from ...io import pushed_folder, write_text
from ..experts import AllocationError
from .base import SparsityInputs

log = logging.getLogger(__name__)


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


# Trials already run in this process: (model, ratios, pruner, windows) digest -> held
# perplexity. Searches repeat trials (ATP's beta 0 and LayerIF's epsilon 0 are both uniform;
# --prior atp's epsilon 0 is ATP's chosen progression), and a trial is deterministic, so a
# repeat is looked up instead of pruning the whole model again. The digest covers every weight
# of the model, so a changed model never matches.
_TRIALS: dict[str, float] = {}
# Folders trials are also kept in (innermost last; see `kept_trials`).
_KEPT: list[Path] = []


@contextmanager
def kept_trials(folder: str | Path) -> Iterator[Path]:
    """Inside, every trial is also written to `folder` (FOLDER/DIGEST.json, atomically) and
    looked up there, so a search killed after its fifth trial (an ATP search on a 0.5B model
    runs ~30 min on 2 cores) resumes at its sixth, in another process. The experiment runner
    keeps its grid's trials in its cells folder."""
    with pushed_folder(_KEPT, folder) as kept:
        yield kept


def _kept(key: str) -> float | None:
    """The held perplexity kept for trial `key`, or None (an unreadable file is ignored and
    rewritten when the trial is run again)."""
    if not _KEPT:
        return None
    path = _KEPT[-1] / f"{key}.json"
    try:
        return float(json.loads(path.read_text())["held_perplexity"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("search trial %s is unreadable (%s); running it again", path, exc)
        return None


def _keep(key: str, perplexity: float, ratios: np.ndarray, pruner: str) -> None:
    """Write trial `key` to the innermost `kept_trials` folder, atomically (a killed write
    leaves no half trial); the ratios and pruner only for a reader. (Plain json.dumps, not
    io.write_json: a collapsed model's perplexity may be inf, and a float's repr reads back
    bit for bit.)"""
    if _KEPT:
        write_text(_KEPT[-1] / f"{key}.json", json.dumps(
            {"held_perplexity": perplexity, "pruner": pruner, "ratios": ratios.tolist()}))


def _digest(*parts) -> str:
    """SHA-256 over tensors, arrays and strings (for the trial memo)."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().contiguous().numpy()
        h.update(part.tobytes() if isinstance(part, np.ndarray) else str(part).encode())
        h.update(b"|")
    return h.hexdigest()


def choose(inputs: SparsityInputs, candidates: Sequence[float],
           ratios_of: Callable[[float], np.ndarray], pruner: str, nsamples: int, held: int,
           who: str, held_flag: str) -> tuple[float, dict]:
    """(the candidate whose ratios give the lowest held perplexity, the record of the search:
    grid, each point's perplexity, pruner, window counts and how many trials were looked up
    instead of run: run by an earlier search of this process, or kept by `kept_trials`)."""
    prune_on, held_windows = split_windows(inputs.calibration, held, nsamples, who, held_flag)
    setting = _digest(*inputs.model.state_dict().values(), pruner,
                      *(w.reshape(-1) for w in prune_on), "held", *(w.reshape(-1)
                                                                    for w in held_windows))
    trials, repeated = [], 0
    for c in tqdm(candidates, desc=f"{who} search", leave=False):
        ratios = np.asarray(ratios_of(c), dtype=np.float64)
        key = _digest(setting, ratios)
        if key not in _TRIALS and (kept := _kept(key)) is not None:
            _TRIALS[key] = kept
        if key in _TRIALS:
            repeated += 1
        else:
            _TRIALS[key] = held_perplexity(inputs, ratios, pruner, prune_on, held_windows)
            _keep(key, _TRIALS[key], ratios, pruner)
        trials.append(_TRIALS[key])
    best = int(np.argmin(trials))
    return candidates[best], {"grid": list(candidates), "held_perplexity": trials,
                              "pruner": pruner, "search_nsamples": len(prune_on),
                              "held_windows": len(held_windows), "repeated_trials": repeated}
