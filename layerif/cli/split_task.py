"""`layerif split-task`: a task split dealt into content-disjoint parts (layerif/data/parts.py),
for tasks whose rows share content (BoolQ's passages) so that no contiguous slices are disjoint."""

from __future__ import annotations

from ..errors import LayerIFError
from .commands import command_help

NAME = "split-task"


def add(sub) -> None:
    p = sub.add_parser(NAME, help=command_help(NAME))
    p.add_argument("spec", help="the rows to deal, e.g. boolq:validation (or a slice of it)")
    p.add_argument("--parts", required=True,
                   help="NAME=ROWS,... in the order they are filled, e.g. "
                   "fit=2000,val=16,select=200; each part gets exactly ROWS rows")
    p.add_argument("--hold", default=None,
                   help="rows left where they are (an evaluation slice of the same split, e.g. "
                   "boolq:validation[2970:3270]): no part gets a row sharing content with them")
    p.add_argument("--out", required=True,
                   help="the parts file to write (.json: each part's row indices; read a part "
                   "as TASK@OUT:PART[a:b])")


def parse_parts(text: str) -> dict[str, int]:
    """"fit=2000,val=16" -> {"fit": 2000, "val": 16}; a usage error names the bad item."""
    sizes: dict[str, int] = {}
    for item in text.split(","):
        name, _, rows = item.strip().partition("=")
        if not name.isidentifier() or not rows.isdigit() or int(rows) < 1 or name in sizes:
            raise LayerIFError(f"--parts: {item.strip()!r} is not NAME=ROWS (a new name, a whole "
                               "number >= 1); e.g. --parts fit=2000,val=16,select=200.")
        sizes[name] = int(rows)
    return sizes


def run(args) -> int:
    from ..data.parts import write_parts

    sizes = parse_parts(args.parts)
    if not args.out.endswith(".json"):
        raise LayerIFError(f"--out {args.out}: give a .json file name (the parts file the data "
                           "specs read as TASK@FILE.json:PART).")
    record = write_parts(args.spec, sizes, args.out, hold=args.hold)
    for name, rows in record["parts"].items():
        print(f"{name}: {len(rows)} rows (source rows {rows[0]}-{rows[-1]}) -> "
              f"{args.spec.split(':')[0]}@{args.out}:{name}")
    return 0
