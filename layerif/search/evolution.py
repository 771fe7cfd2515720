"""The evolutionary search over ladder levels (EvoPress, Sieberling et al., ICML 2025).

Every generation: `offspring` distinct children of the parent, each 1-3 level swaps away
(ladder.mutate; the global target stays exact), none further than `max_deviation` steps from
the start in all; then selection in stages, stage i keeping the `survivors[i]` best on
`tokens[i]` tokens of randomly drawn held windows (fresh windows every stage), the parent
joining the last stage (elitist); the last survivor becomes the next parent if its fitness on
all the held windows is lower than the parent's (a final stage on the whole pool, which the
cache update runs anyway; so the parent's fitness never rises, and the trajectory is the
fitness being optimised). Every `validate_every`
generations the parent's NLL on a validation text of another domain is measured; the answer is
the parent with the best validation (never the evaluation text), and `patience` checks without
improvement stop the search. A checkpoint after every generation (the parent, the generator's
state, the trajectory) lets a killed search resume to the same trajectory bit for bit.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..io import write_text
from .fitness import WholeModelFitness
from .ladder import Ladder, deviation, mutate


@dataclass(frozen=True)
class EvolutionSettings:
    offspring: int
    survivors: tuple[int, ...]
    tokens: tuple[int, ...]
    generations: int | None  # None: until `minutes` runs out
    minutes: float | None
    max_deviation: int | None  # total ladder steps from the start; None: unlimited
    validate_every: int
    patience: int  # validation checks without improvement before stopping; 0: never
    seed: int


@dataclass
class SearchState:
    """What a checkpoint holds: enough to go on exactly where a killed search stopped."""

    generation: int
    parent: list[int]
    rng: dict
    trajectory: list[dict] = field(default_factory=list)
    best: dict | None = None  # {"generation", "levels", "validation"}
    # the last parent's check when the budget ended between checks: it may be the answer, but
    # a search resumed with a larger budget forgets it, so it goes on as a longer run would
    last_check: dict | None = None
    checks_since_best: int = 0
    seconds: float = 0.0
    tokens: int = 0
    block_tokens: float = 0.0
    stopped: str = ""


def _windows(rng: np.random.Generator, n_pool: int, tokens: int, seqlen: int) -> list[int]:
    n = min(max(int(round(tokens / seqlen)), 1), n_pool)
    return sorted(int(w) for w in rng.choice(n_pool, size=n, replace=False))


def _children(parent: tuple[int, ...], start: tuple[int, ...], ladder: Ladder,
              settings: EvolutionSettings, rng: np.random.Generator, bias) -> list[tuple]:
    """Up to `offspring` distinct children (fewer when the ladder and the deviation limit do
    not allow that many within a bounded number of draws)."""
    children: list[tuple] = []
    for _ in range(50 * settings.offspring):
        if len(children) == settings.offspring:
            break
        child = mutate(parent, ladder, rng, *bias)
        if child == parent or child in children:
            continue
        if settings.max_deviation is not None and deviation(child, start) > \
                settings.max_deviation:
            continue
        children.append(child)
    return children


def evolve(fitness: WholeModelFitness, ladder: Ladder, start: tuple[int, ...],
           settings: EvolutionSettings, seqlen: int,
           validate: Callable[[tuple[int, ...]], float] | None = None,
           bias: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
           checkpoint: Path | None = None, progress: bool = True) -> SearchState:
    """Run (or resume from `checkpoint`) the search from `start`; returns the final state (its
    `best` the answer when validating, else the last parent)."""
    state = _resume(checkpoint, start, settings)
    rng = np.random.default_rng(settings.seed)
    if state.rng:
        rng.bit_generator.state = state.rng
    parent = tuple(state.parent)
    parent_fitness = fitness.adopt(parent)
    fitness.tokens, fitness.block_tokens = state.tokens, state.block_tokens
    n_pool = len(fitness.windows)
    if not state.trajectory:  # generation 0: the start itself
        state.trajectory.append(_entry(0, parent, parent_fitness, [], fitness, state, True))
        _validate(state, validate, parent, 0, settings)
    began = time.perf_counter() - state.seconds
    bar = tqdm(total=settings.generations, initial=state.generation, unit="gen",
               desc=f"search ({fitness.kind})", disable=not progress)
    while not state.stopped:
        if settings.generations is not None and state.generation >= settings.generations:
            state.stopped = "generations"
            break
        if settings.minutes is not None and state.seconds >= 60 * settings.minutes:
            state.stopped = "minutes"
            break
        children = _children(parent, start, ladder, settings, rng, bias)
        if not children:
            state.stopped = "no move left (ladder bounds or max deviation)"
            break
        candidates, stages = list(children), []
        for i, (keep, tokens) in enumerate(zip(settings.survivors, settings.tokens,
                                               strict=True)):
            if i == len(settings.survivors) - 1 and parent not in candidates:
                candidates.append(parent)  # elitist: the parent competes in the last stage
            windows = _windows(rng, n_pool, tokens, seqlen)
            values = [fitness.evaluate(c, windows) for c in candidates]
            order = np.argsort(np.asarray(values), kind="stable")[:keep]
            stages.append({"windows": windows, "fitness": [round(v, 7) for v in values],
                           "parent": candidates.index(parent) if parent in candidates else None})
            candidates = [candidates[j] for j in order]
        winner = candidates[0]
        changed = False
        if winner != parent:  # the final stage: the winner against the parent on every window
            adopted = fitness.adopt(winner, better=True)
            if adopted is not None:
                parent, parent_fitness, changed = winner, adopted, True
        state.generation += 1
        state.parent = list(parent)
        state.seconds = time.perf_counter() - began
        state.tokens, state.block_tokens = fitness.tokens, fitness.block_tokens
        state.trajectory.append(_entry(state.generation, parent, parent_fitness, stages,
                                       fitness, state, changed))
        if state.generation % settings.validate_every == 0:
            _validate(state, validate, parent, state.generation, settings)
        state.rng = rng.bit_generator.state
        if checkpoint is not None:
            _save(checkpoint, state, start, settings)
        bar.update()
        bar.set_postfix(fitness=f"{np.mean(parent_fitness):.4f}",
                        best_val=f"{state.best['validation']:.4f}" if state.best else "-")
    bar.close()
    last = state.trajectory[-1]
    if validate is not None and last.get("validation") is None and not (
            state.best and tuple(state.best["levels"]) == parent):
        state.last_check = {"generation": state.generation, "levels": list(parent),
                            "validation": float(validate(parent))}
    if checkpoint is not None:
        _save(checkpoint, state, start, settings)
    return state


def answer(state: SearchState) -> dict | None:
    """The validated parent the search answers with ({"generation", "levels",
    "validation"}), or None without validation (the answer is then the last parent)."""
    checks = [c for c in (state.best, state.last_check) if c is not None]
    return min(checks, key=lambda c: (c["validation"], c["generation"])) if checks else None


def _entry(generation: int, parent, parent_fitness: Sequence[float], stages: list[dict],
           fitness: WholeModelFitness, state: SearchState, changed: bool) -> dict:
    return {"generation": generation, "fitness": float(np.mean(parent_fitness)),
            "changed": changed, "levels": list(parent), "stages": stages,
            "tokens": fitness.tokens, "block_tokens": round(fitness.block_tokens, 1),
            "seconds": round(state.seconds, 2)}


def _validate(state: SearchState, validate, parent, generation: int,
              settings: EvolutionSettings) -> None:
    """Measure the parent on the validation text; keep it when it is the best so far; stop
    after `patience` checks without improvement."""
    if validate is None:
        return
    value = float(validate(parent))
    state.trajectory[-1]["validation"] = value
    if state.best is None or value < state.best["validation"]:
        state.best = {"generation": generation, "levels": list(parent), "validation": value}
        state.checks_since_best = 0
    else:
        state.checks_since_best += 1
        if settings.patience and state.checks_since_best >= settings.patience:
            state.stopped = f"validation did not improve in {settings.patience} checks"


def _key(start, settings: EvolutionSettings) -> dict:
    return {"start": list(start), "settings": {**asdict(settings), "generations": None,
                                               "minutes": None}}


def _save(path: Path, state: SearchState, start, settings: EvolutionSettings) -> None:
    # (plain json.dumps: a float's repr reads back bit for bit, and the state holds no NaN)
    write_text(path, json.dumps({"key": _key(start, settings), "state": asdict(state)}))


def _resume(path: Path | None, start, settings: EvolutionSettings) -> SearchState:
    """The checkpointed state of this very search (the budget may differ: a search resumed
    with more generations goes on), or a fresh one."""
    fresh = SearchState(0, list(start), {})
    if path is None or not path.exists():
        return fresh
    try:
        saved = json.loads(path.read_text())
        if saved["key"] != json.loads(json.dumps(_key(start, settings))):
            return fresh
        state = SearchState(**saved["state"])
    except (OSError, ValueError, KeyError, TypeError):
        return fresh
    state.stopped, state.last_check = "", None  # a finished search given more goes on
    return state


def last_tenth_improvement(trajectory: Sequence[dict]) -> float:
    """How much the parent's fitness fell over the last 10% of generations (nats; >= 0 when
    it improved): the fitness at generation ceil(0.9 G) minus the last one."""
    if len(trajectory) < 2:
        return 0.0
    g = trajectory[-1]["generation"]
    at = next(t for t in trajectory if t["generation"] >= math.ceil(0.9 * g))
    return float(at["fitness"] - trajectory[-1]["fitness"])
