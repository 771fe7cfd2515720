"""The content sets an artefact records (data/provenance.py), gathered for the overlap checks:
scores.json (scoring train/val), alloc.json / experts.json (their scores' sets), pruning.json
(the allocation's sets and the calibration set) and an adapter's training.json (the expert
allocation's sets and the fine-tuning set).

Files written by this version embed their sets under "provenance". Older files only name their
data (a spec or a file) and the scores file behind them; their sets are rebuilt from those
names, and a named file that no longer exists is an error, never a silent skip.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data.provenance import ContentSet, content_set, read_recorded, sets_from
from ..data.sources import TaskSpec
from ..errors import DataError


def _named_set(source, role: str, where: str) -> list[ContentSet]:
    """The set of data an old file names by a spec or a path (nothing for in-memory data)."""
    if not isinstance(source, str) or source.startswith("<"):
        return []
    is_file = Path(source).suffix.lower() in (".jsonl", ".json", ".csv")
    if not is_file:
        try:
            TaskSpec.parse(source)
        except DataError:
            return []
    elif not Path(source).is_file():
        raise DataError(f"{where} records the {role} data {source}, which does not exist; "
                        "restore it or redo the step that used it.")
    found = content_set(source, role)
    found.where = where
    return [found]


def scores_sets(path: str | Path, what: str) -> list[ContentSet]:
    """The scoring train/val sets behind a scores.json (or its folder) that `what` names."""
    meta = read_recorded(path, what)
    where = str(Path(path) / "scores.json" if Path(path).is_dir() else path)
    if "provenance" in meta:
        return sets_from(meta, where)
    return (_named_set(meta.get("train"), "scoring train", where)
            + _named_set(meta.get("val"), "scoring val", where))


def allocation_sets(alloc: dict, where: str) -> list[ContentSet]:
    """An allocation's recorded sets (its scores', for method layerif)."""
    if "provenance" in alloc:
        return sets_from(alloc, where)
    scores = (alloc.get("parameters") or {}).get("scores")
    return scores_sets(scores, where) if scores else []


def _folder_sets(folder: str | Path | None, name: str) -> list[ContentSet]:
    if folder is None:
        return []
    path = Path(folder) / name
    if not path.is_file():
        return []
    meta = json.loads(path.read_text())
    if "provenance" in meta:
        return sets_from(meta, str(path))
    if name == "pruning.json":  # before provenance was embedded
        sets = _named_set((meta.get("calibration") or {}).get("source"), "calibration", str(path))
        return sets + allocation_sets(meta.get("allocation") or {}, str(path))
    sets = _named_set(meta.get("train"), "fine-tuning", str(path))
    return sets + (scores_sets(meta["scores"], str(path)) if meta.get("scores") else [])


def recorded_sets(model: str | None = None, extra_scores: list[str] = (),
                  adapter: str | None = None) -> list[ContentSet]:
    """Every set recorded by a pruned model folder (pruning.json), an adapter folder
    (training.json) and the scores files `extra_scores` (which must exist)."""
    sets = _folder_sets(model, "pruning.json") + _folder_sets(adapter, "training.json")
    for path in extra_scores:
        sets += scores_sets(path, "--exclude-scores")
    return sets
