"""The examples used for scores, calibration and evaluation must never overlap: find the task
slices a model folder records (pruning.json -> calibration source, allocation -> scores.json
-> train/val) and refuse evaluation slices that intersect them."""

from __future__ import annotations

import json
from pathlib import Path

from ..data import TaskSpec
from ..errors import DataError


def _spec(text) -> TaskSpec | None:
    try:
        return TaskSpec.parse(text) if isinstance(text, str) else None
    except DataError:
        return None  # a file path, not a task slice


def recorded_slices(model: str, extra_scores: list[str] = (), adapter: str | None = None
                    ) -> dict[str, TaskSpec]:
    """{what: spec} for every task slice recorded by a pruned model folder, an adapter folder
    (training.json: its training slice and the scores behind its allocation) or scores files."""
    found: dict[str, TaskSpec] = {}
    scores_files = list(extra_scores)
    training_path = Path(adapter) / "training.json" if adapter else None
    if training_path is not None and training_path.exists():
        training = json.loads(training_path.read_text())
        if spec := _spec(training.get("train")):
            found[f"fine-tuning ({training_path})"] = spec
        if path := training.get("scores"):
            scores_files.append(path)
    info_path = Path(model) / "pruning.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if spec := _spec((info.get("calibration") or {}).get("source")):
            found[f"calibration ({info_path})"] = spec
        if path := ((info.get("allocation") or {}).get("parameters") or {}).get("scores"):
            scores_files.append(path)
    for path in scores_files:
        p = Path(path)
        p = p / "scores.json" if p.is_dir() else p
        if not p.exists():
            continue
        meta = json.loads(p.read_text())
        for key in ("train", "val"):
            if spec := _spec(meta.get(key)):
                found[f"scoring {key} ({p})"] = spec
    return found


def _rows(spec: TaskSpec, n_rows: int) -> range:
    return range(spec.start or 0, n_rows if spec.stop is None else spec.stop)


def check_disjoint(evaluation: list[TaskSpec], recorded: dict[str, TaskSpec],
                   sizes: dict[str, int]) -> None:
    for ev in evaluation:
        for what, used in recorded.items():
            if (ev.task, ev.split) != (used.task, used.split):
                continue
            a, b = _rows(ev, sizes[ev.task]), _rows(used, sizes[ev.task])
            lo, hi = max(a.start, b.start), min(a.stop, b.stop)
            if lo < hi:
                raise DataError(
                    f"evaluation slice {ev} overlaps the {what} slice {used} in rows "
                    f"[{lo}:{hi}]; evaluate on rows that were not used for scores or "
                    "calibration or fine-tuning (--slice or --limit)."
                )
