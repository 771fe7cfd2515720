"""One search end to end: the ladder, the level database (built or reused), the held texts and
their dense targets, the start chosen among several by its fitness, the evolution (resumable),
and the record an allocation keeps of it: every candidate's fitness, the final fitness with a
bootstrap interval over the held windows, the gain over the start, the last tenth of the
generations' improvement (converged or not).

Where things are kept: a workspace folder (default $LAYERIF_CACHE/search; the experiment runner
uses its cells folder) holds `databases/KEY/` (shared by every search with the same model,
pruner, calibration windows and ladder) and `runs/KEY/state.json` (one per search: its checkpoint).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..allocation.experts import AllocationError
from ..cache import cache_root
from ..io import pushed_folder
from ..memory import GIB, MemoryPlan, Shapes, available_bytes, gib
from ..pruning.pruners import Pruner
from .database import LevelDatabase, database_key, stored_bytes
from .evolution import EvolutionSettings, SearchState, answer, evolve, last_tenth_improvement
from .fitness import HeldText, WholeModelFitness, full_forward_fitness, held_text
from .ladder import Ladder

BOOTSTRAP = 1000
PRELOAD_SHARE = 0.25  # a database is read into memory when it takes at most this share of it

_WORKSPACES: list[Path] = []


@contextlib.contextmanager
def search_workspace(folder: str | Path) -> Iterator[Path]:
    """Inside, searches keep their databases and checkpoints in `folder` (innermost last)."""
    with pushed_folder(_WORKSPACES, folder) as kept:
        yield kept


def workspace(given: str | None = None) -> Path:
    if given:
        return Path(given)
    return _WORKSPACES[-1] if _WORKSPACES else cache_root() / "search"


@dataclass(frozen=True)
class SearchJob:
    """The resolved settings of one search (the method's arguments at a target)."""

    sparsity: float
    step: float
    min_ratio: float
    max_ratio: float
    kind: str
    text: str
    windows: int
    validation: str | None
    validation_windows: int
    seqlen: int
    evolution: EvolutionSettings
    workspace: str | None = None


def plan(model: nn.Module, ladder: Ladder, job: SearchJob, keeps_values: bool,
         device: str = "cpu") -> tuple[MemoryPlan, int]:
    """(the memory plan of the search, the database's bytes on disk)."""
    shapes = Shapes.of(model)
    db = stored_bytes(ladder, keeps_values)
    plan = MemoryPlan("search", device, available=available_bytes(device))
    plan.parts["runtime"] = int(0.6 * GIB)
    weights = sum(p.numel() for p in model.parameters()) * 4
    plan.parts["weights and their dense copy (fp32)"] = weights + sum(ladder.params) * 4
    pool = job.windows * job.seqlen
    plan.parts[f"cached block inputs ({job.windows} x {job.seqlen} tokens x "
               f"{ladder.n_blocks} blocks)"] = pool * shapes.hidden * 4 * ladder.n_blocks
    if job.kind == "kl":
        plan.parts["dense next-token distributions (fp32)"] = pool * shapes.vocab * 4
    plan.parts["one window's logits"] = 3 * job.seqlen * shapes.vocab * 4
    preload = plan.available is not None and db <= PRELOAD_SHARE * plan.available
    if preload:
        plan.parts["level database (in memory)"] = db
    plan.notes.append(f"level database: {gib(db)} on disk" + (
        ", read into memory" if preload else ", read from disk as needed"))
    return plan, db


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _bootstrap(values: np.ndarray, seed: int = 0) -> list[float]:
    from ..sensitivity.measure import bootstrap_interval

    low, high = bootstrap_interval(np.asarray(values, dtype=np.float64), BOOTSTRAP, seed)
    return [float(low), float(high)]


def search_allocation(model: nn.Module, tokenizer, fingerprint: dict, pruner: Pruner,
                      calibration: Sequence[torch.Tensor], starts: Sequence[tuple[str, Sequence]],
                      job: SearchJob, params: Sequence[int],
                      bias: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
                      progress: bool = True) -> tuple[np.ndarray, dict]:
    """(ratios, record) of a search from the best of `starts` ((name, ratios) each). The
    model's weights are the same bit for bit afterwards."""
    began = time.perf_counter()
    ladder = Ladder.build(params, job.sparsity, job.step, job.min_ratio, job.max_ratio)
    model.eval()
    root = workspace(job.workspace)
    key = database_key(fingerprint, pruner, calibration, ladder, next(model.parameters()).dtype)
    the_plan, db_bytes = plan(model, ladder, job, pruner.statistics == "hessian")
    the_plan.refuse()
    folder = root / "databases" / key
    existing = next(p for p in (root, *root.resolve().parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if not (folder / "database.json").exists() and db_bytes > free:
        raise AllocationError(f"the level database needs {gib(db_bytes)} on disk but "
                              f"{gib(free)} is free under {root}; free some, use a coarser "
                              "--search-step or a narrower ladder.")
    # the held texts before the database: a text too short is refused before hours of work
    text = held_text(tokenizer, job.text, job.windows, job.seqlen)
    validation: HeldText | None = None
    if job.validation:
        validation = held_text(tokenizer, job.validation, job.validation_windows, job.seqlen,
                               "--search-validation-windows")
    if progress:
        print(the_plan.format())
    database = LevelDatabase(model, ladder, folder)
    db_seconds = database.build(pruner, calibration, {
        "key": key, "pruner": pruner.name, "arguments": repr(pruner.args),
        "ladder": ladder.to_dict(), "model_fingerprint": fingerprint}, progress)
    if "read into memory" in the_plan.notes[-1]:
        database.preload()
    try:
        fitness = WholeModelFitness(model, database, text, job.kind)

        def validate(levels) -> float:
            fitness.set_levels(levels)
            return float(np.mean(full_forward_fitness(model, validation.windows, "nll")))

        tried = []
        for name, ratios in starts:
            levels = ladder.project(ratios)
            values = fitness.adopt(levels)
            tried.append({"name": name, "levels": list(levels),
                          "projection_error": float(np.abs(ladder.ratios(levels)
                                                           - np.asarray(ratios)).max()),
                          "fitness": float(np.mean(values)), "window_fitness": values})
        chosen = min(range(len(tried)), key=lambda i: (tried[i]["fitness"], i))
        start = tuple(tried[chosen]["levels"])
        # (not the budget: a search given more generations goes on from its checkpoint)
        settings = {**asdict(job), "workspace": None, "evolution": {
            **asdict(job.evolution), "generations": None, "minutes": None}}
        run_key = _digest({"database": key, "start": list(start), "job": settings,
                           "text": text.to_dict(), "bias": [None if b is None else b.tolist()
                                                            for b in bias],
                           "validation": validation.to_dict() if validation else None})
        # (state.json, not checkpoint*: run-required.sh leaves those out of the committed cells)
        checkpoint = root / "runs" / run_key / "state.json"
        state = evolve(fitness, ladder, start, job.evolution, job.seqlen,
                       validate if validation else None, bias, checkpoint, progress)
        picked = answer(state)
        final = tuple(picked["levels"]) if picked else tuple(state.parent)
        final_values = fitness.adopt(final)
        start_values = tried[chosen]["window_fitness"]
    finally:
        database.restore()
    record = _record(ladder, job, text, validation, tried, chosen, state, picked, final,
                     final_values, start_values, key, folder, db_seconds, db_bytes, pruner,
                     bias, time.perf_counter() - began)
    return ladder.ratios(final), record


def _record(ladder, job, text, validation, tried, chosen, state: SearchState, picked, final,
            final_values, start_values, key, folder, db_seconds, db_bytes, pruner, bias,
            seconds) -> dict:
    gain = np.asarray(start_values) - np.asarray(final_values)
    interval = _bootstrap(np.asarray(final_values))
    improvement = last_tenth_improvement(state.trajectory)
    return {
        "pruner": pruner.name, "pruner_arguments": repr(pruner.args),
        "ladder": ladder.to_dict(), "levels": list(final),
        "fitness": {"kind": job.kind, **text.to_dict(), "tokens": text.tokens},
        "validation": {"kind": "nll", **validation.to_dict()} if validation else None,
        "starts": [{k: v for k, v in t.items() if k != "window_fitness"} for t in tried],
        "start": tried[chosen]["name"],
        "settings": {**asdict(job.evolution), "step": job.step, "min_ratio": job.min_ratio,
                     "max_ratio": job.max_ratio, "bias": bias[0] is not None},
        "final": {"fitness": float(np.mean(final_values)), "interval": interval,
                  "window_fitness": [float(v) for v in final_values],
                  "start_fitness": float(np.mean(start_values)),
                  "gain": float(gain.mean()), "gain_interval": _bootstrap(gain),
                  "generation": picked["generation"] if picked else state.generation,
                  "validation": picked["validation"] if picked else None},
        "convergence": {"generations": state.generation, "stopped": state.stopped,
                        "last_tenth_improvement": improvement,
                        # converged: the last tenth moved the fitness less than half the
                        # final interval's width (what the held windows can resolve)
                        "converged": improvement < (interval[1] - interval[0]) / 2},
        "trajectory": state.trajectory,
        "tokens": state.tokens, "block_tokens": round(state.block_tokens, 1),
        "database": {"key": key, "folder": str(folder), "seconds": round(db_seconds, 1),
                     "bytes": db_bytes},
        "search_seconds": round(state.seconds, 1), "seconds": round(seconds, 1),
    }
