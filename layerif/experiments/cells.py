"""Cells: units of experiment work stored under a key derived from every setting they depend on.

A cell is a folder OUT/cells/KIND/KEY holding its artefacts and cell.json (its settings, its
result, the SHA-256 of each small artefact, its seconds and the machine and build it ran on:
`environment.machine_record`, not part of the key). KEY hashes the kind and the settings, which
include the keys of the cells it reads, so changing one setting changes the keys of exactly the
cells downstream of it. A cell is written in a temporary folder and renamed into place when
complete, so a killed run leaves no half cell; a cell whose cell.json is unreadable or whose
artefacts do not match their recorded hashes is reported and recomputed, never used.

A store may also read the cells of other experiment folders (`reuse`): a cell missing here
whose key is stored there, intact, is copied in (marked `reused_from`) instead of computed.
Keys cover every setting, so only the same work is taken: a SparseGPT grid of the same model,
seeds and calibration takes a Wanda grid's scores and allocations (their searches prune with
their own pruner option, not the grid's), never its pruned models or evaluations.

Beside the cells, OUT/cells/search-trials keeps the finished trials of the searches (ATP's beta,
LayerIF's epsilon) one file each, so that an interrupted search loses at most one trial.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)
CELL_FILE = "cell.json"
# Kinds never taken from another folder: their artefacts (pruned weights, adapters) are deleted
# once evaluated, and the runner reads whether they are still there to decide what to redo.
NOT_REUSED = ("pruned", "adapter")
# and no cell's weights, adapters or training checkpoints are copied (as `run-required.sh
# --save-cells` leaves them out)
WEIGHTS = shutil.ignore_patterns("model", "adapter", "checkpoint*")


class CellMissing(Exception):
    """A cell a store in stored-only mode would have to compute (kind, label)."""


def cell_key(kind: str, settings: dict) -> str:
    """16 hex digits of the SHA-256 of the kind and the canonical JSON of the settings."""
    text = json.dumps({"kind": kind, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cell_damage(folder: Path) -> str | None:
    """Why the cell in `folder` cannot be trusted (its cell.json unreadable, or an artefact
    not matching its recorded SHA-256), or None when it is intact."""
    try:
        cell = json.loads((folder / CELL_FILE).read_text())
        for name, digest in cell["hashes"].items():
            if file_sha256(folder / name) != digest:
                return f"{name} does not match its recorded hash"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{CELL_FILE} is unreadable ({type(exc).__name__}: {exc})"
    return None


def cells_folder(folder: str | Path) -> Path:
    """The cells of an experiment folder (FOLDER/cells), or FOLDER itself when it is one."""
    folder = Path(folder)
    return folder / "cells" if (folder / "cells").is_dir() else folder


def stored_machines(cells: Path) -> dict[str, int]:
    """How many of the cells under `cells` (a folder of KIND/KEY/cell.json) each machine and
    build computed, by `environment.describe_machine`; "not recorded" for cells made before
    cells recorded it (2026-12-04). Unreadable cells are skipped (the runner reports them)."""
    from ..environment import describe_machine

    counts: dict[str, int] = {}
    for path in sorted(cells.glob("*/*/" + CELL_FILE)):
        try:
            machine = json.loads(path.read_text()).get("machine")
        except (OSError, ValueError, AttributeError):
            continue
        name = describe_machine(machine) if isinstance(machine, dict) else "not recorded"
        counts[name] = counts.get(name, 0) + 1
    return counts


class CellStore:
    """The cells of one experiment folder; `executed` lists what this process computed."""

    def __init__(self, root: str | Path, progress: Callable[[str], None] | None = None,
                 stored_only: bool = False, reuse: Sequence[str | Path] = ()):
        self.root = Path(root) / "cells"
        self.stored_only = stored_only  # never compute: a missing cell raises CellMissing
        self.reuse = [cells_folder(r) for r in reuse]  # other experiments' cells, read only
        self.executed: list[tuple[str, str]] = []
        self.reused: list[tuple[str, str]] = []
        self.corrupt: list[str] = []
        self.progress = progress or (lambda _line: None)
        self.bars = progress is not None  # whether an hours-long cell shows its own bar
        self._seconds: dict[str, list[float]] = {}  # stage -> seconds of its cells so far
        self.todo: dict[str, int] = {}  # cells of each stage the runner has yet to visit
        if not stored_only:
            self._warn_other_machines()

    def _warn_other_machines(self) -> None:
        """Say before any work when stored cells were computed on another machine or build
        than this run's: float results (a SparseGPT prune's above all) differ between them,
        so a resumed grid would mix them (the report lists them again)."""
        from ..environment import describe_machine, machine_record

        here = describe_machine(machine_record())
        others = {name: n for name, n in stored_machines(self.root).items()
                  if name not in (here, "not recorded")}
        if others:
            log.warning("%s: %d stored cells were computed on another machine or build (%s); "
                        "this run computes on %s. Their float results can differ (a SparseGPT "
                        "prune by a few percent): run where they ran, or read the report's "
                        "t-tests over seeds", self.root, sum(others.values()),
                        "; ".join(f"{n} on {name}" for name, n in others.items()), here)

    def plan(self, counts: dict[str, int]) -> None:
        """How many cells of each stage the run will visit (stored or not), for the estimate
        of the time left on each progress line. A stage is a cell kind, or a finer name the
        runner passes to `run` where one kind's cells differ by orders of magnitude (an ATP
        search against a closed-form allocation: "allocation atp")."""
        self.todo = dict(counts)

    def visited(self, stage: str, cell: dict | None = None) -> None:
        """One planned cell of `stage` was visited; a stored `cell` (its cell.json) lends its
        recorded seconds to the stage's estimate, so that a resumed run estimates from the
        start."""
        if self.todo.get(stage, 0) > 0:
            self.todo[stage] -= 1
        if cell is not None and isinstance(cell.get("seconds"), int | float):
            self._seconds.setdefault(stage, []).append(float(cell["seconds"]))

    def time_left(self) -> str:
        """"~M min left for up to N cells": every cell still to visit (some may turn out
        stored) counted at the mean recorded time of its stage (stages not timed yet are
        named, not guessed)."""
        left = sum(self.todo.values())
        if not left:
            return ""
        seconds = sum(sum(t) / len(t) * self.todo.get(stage, 0)
                      for stage, t in self._seconds.items())
        untimed = sorted(k for k, n in self.todo.items() if n and k not in self._seconds)
        return (f"   ~{seconds / 60:.0f} min left for up to {left} more cells"
                + (f" (+ {', '.join(untimed)} not timed yet)" if untimed else ""))

    def folder(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    @property
    def trials(self) -> Path:
        """Where the allocations' searches keep each finished trial (files, not cells: a search
        killed mid-way resumes at its next trial; see `setting_search.kept_trials`)."""
        return self.root / "search-trials"

    def load(self, kind: str, key: str) -> dict | None:
        """The stored cell (its cell.json) if complete and intact, else None (a damaged one is
        removed, logged and listed in `corrupt`)."""
        folder = self.folder(kind, key)
        if not folder.is_dir():
            return self._take(kind, key)
        damage = cell_damage(folder)
        if damage:
            log.warning("cell %s/%s is damaged (%s); recomputing it", kind, key, damage)
            self.corrupt.append(f"{kind}/{key}")
            if not self.stored_only:  # a stored-only look changes nothing on disk
                shutil.rmtree(folder, ignore_errors=True)
            return None
        return json.loads((folder / CELL_FILE).read_text())

    def _take(self, kind: str, key: str) -> dict | None:
        """The cell kind/key copied in from the first `reuse` folder that stores it intact
        (atomically, marked `reused_from`; its cell.json), or None."""
        if self.stored_only or kind in NOT_REUSED:
            return None
        folder = self.folder(kind, key)
        tmp = folder.with_name(f".{key}.tmp")
        for other in self.reuse:
            if not (other / kind / key).is_dir():
                continue
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(other / kind / key, tmp, ignore=WEIGHTS)
            if cell_damage(tmp):  # (checked on the copy: what lands here is what was hashed)
                shutil.rmtree(tmp, ignore_errors=True)
                continue
            cell = json.loads((tmp / CELL_FILE).read_text())
            cell["reused_from"] = str(other)
            (tmp / CELL_FILE).write_text(json.dumps(cell, indent=1, default=str))
            os.replace(tmp, folder)
            self.reused.append((kind, key))
            self.progress(f"{kind:8s} {cell.get('label', ''):48s}  reused from {other}")
            return cell
        return None

    def run(self, kind: str, settings: dict, compute: Callable[[Path], dict], label: str = "",
            hashed: tuple[str, ...] = (), stage: str | None = None) -> tuple[str, dict]:
        """(key, result) of the cell; computed by compute(folder) -> result (a JSON-able dict)
        only when not stored (in stored-only mode, CellMissing is raised instead). hashed:
        artefact file names whose SHA-256 is recorded and checked on reuse. stage: what the
        time-left estimate counts the cell as (see `plan`; default the kind)."""
        key = cell_key(kind, settings)
        stage = stage or kind
        cell = self.load(kind, key)
        self.visited(stage, cell)
        if cell is not None:
            return key, cell["result"]
        if self.stored_only:
            raise CellMissing(kind, label)
        folder = self.folder(kind, key)
        tmp = folder.with_name(f".{key}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        start = time.perf_counter()
        try:
            result = compute(tmp)
        except BaseException:  # an error or Ctrl-C: nothing half-made stays behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            from ..memory import release_freed_memory

            release_freed_memory()  # a cell's peak is not held through every later cell
        seconds = time.perf_counter() - start
        from ..environment import machine_record  # (torch: imported where work is done)

        cell = {"kind": kind, "key": key, "label": label, "settings": settings,
                "result": result, "seconds": round(seconds, 2), "machine": machine_record(),
                "hashes": {name: file_sha256(tmp / name) for name in hashed}}
        (tmp / CELL_FILE).write_text(json.dumps(cell, indent=1, default=str))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        self.executed.append((kind, key))
        self._seconds.setdefault(stage, []).append(seconds)
        self.progress(f"{kind:8s} {label:48s} {seconds:7.1f} s{self.time_left()}")
        return key, result
