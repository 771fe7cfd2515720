"""Content-disjoint parts of a task split, recorded as a parts file (JSON) the data specs read.

Some tasks share content between rows: BoolQ asks up to several questions about one passage, so
any two contiguous slices of its validation split share passages (rows 0-1999 and the last 300
share 35), and the runners refuse such slices. This module groups the rows that share any
content key (`provenance.row_keys`: the example, the prompt, the passage) and deals whole groups
to named parts, so that slices of different parts never share content:

    layerif split-task boolq:validation --hold "boolq:validation[2970:3270]" \\
        --parts fit=2000,val=16,select=200 --out experiments/data/boolq-parts.json
    # then: boolq@experiments/data/boolq-parts.json:fit[0:1000], ...:select, ...

The parts file holds the source spec and each part's row indices in the source split, so it is
small, reviewable and committed; a spec `TASK@FILE.json:PART` reads the source rows and picks
that part's (`sources.part_rows`). `hold`: rows that stay where they are (an evaluation slice
read from the packaged split): every group touching them is left out of all parts. Groups are
dealt in the order of their first row, each to the first part (in the order given) with room for
all of it, so a part has exactly its size and the result depends on the data only.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .provenance import row_keys
from .sources import PARTS_KIND, TaskSpec, is_parts, task_rows


def content_groups(keys: list[list[str]]) -> list[list[int]]:
    """Rows (indices into `keys`) grouped by shared content: two rows are in one group when a
    chain of rows links them, each sharing a key with the next. Groups in order of their first
    row, rows in order within a group."""
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, row in enumerate(keys):
        for key in row:
            j = first.setdefault(key, i)
            a, b = root(i), root(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(keys)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def disjoint_parts(spec: str, sizes: dict[str, int], hold: str | None = None
                   ) -> dict[str, list[int]]:
    """part -> the row indices (into `spec`'s split, ascending) it gets; raises DataError when
    the rows left after `hold` cannot fill every part."""
    parsed = TaskSpec.parse(spec)
    task, rows = task_rows(parsed)
    start = parsed.start or 0
    keys = [row_keys(task, row, origin) for origin, row in rows]
    held: set[str] = set()
    if hold is not None:
        held_task, held_rows = task_rows(hold)
        if held_task.name != task.name:
            raise DataError(f"--hold {hold}: another task than {spec}; hold rows of the same "
                            "task.")
        held = {k for origin, row in held_rows for k in row_keys(held_task, row, origin)}
    room = dict(sizes)
    parts: dict[str, list[int]] = {name: [] for name in sizes}
    left_out = 0
    for group in content_groups(keys):
        if any(k in held for i in group for k in keys[i]):
            left_out += len(group)
            continue
        name = next((n for n in sizes if room[n] >= len(group)), None)
        if name is None:
            continue
        room[name] -= len(group)
        parts[name] += [start + i for i in group]
    short = {n: r for n, r in room.items() if r > 0}
    if short:
        raise DataError(f"{spec}: too few rows for the parts ({len(rows)} rows, {left_out} "
                        f"share content with --hold); short by "
                        + ", ".join(f"{n}: {r}" for n, r in short.items())
                        + "; ask for smaller parts.")
    return {n: sorted(p) for n, p in parts.items()}


def write_parts(spec: str, sizes: dict[str, int], out: str | Path, hold: str | None = None
                ) -> dict:
    """Write the parts file of `spec` to `out` (JSON: source, hold, parts), atomically; an
    existing `out` is replaced only if it is a parts file. Returns what it holds."""
    from ..io import check_writable, refuse_foreign_file, write_json

    refuse_foreign_file(out, is_parts, "parts file")  # before the rows are read
    check_writable(out)
    record = {"kind": PARTS_KIND, "source": spec, "hold": hold,
              "parts": disjoint_parts(spec, sizes, hold)}
    write_json(out, record)
    return record
