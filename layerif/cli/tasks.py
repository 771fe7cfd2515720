"""`layerif tasks`: the built-in tasks and where their data comes from."""

from __future__ import annotations

from .commands import command_help

NAME = "tasks"


def add(sub) -> None:
    sub.add_parser(NAME, help=command_help(NAME))


def run(_args) -> int:
    from ..data import TASKS
    from ..data.sources import packaged_root

    root = packaged_root()
    for name, task in sorted(TASKS.items()):
        packaged = root is not None and task.packaged and (root / task.packaged).is_dir()
        splits = sorted(p.name for p in (root / task.packaged).iterdir()) if packaged else []
        print(f"{name:15s} {task.description:40s} packaged: {','.join(splits) or '-':12s} "
              f"hub: {task.hub[0]}{'/' + task.hub[1] if task.hub[1] else ''}")
    return 0
