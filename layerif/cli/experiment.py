"""`layerif experiment run CONFIG --out DIR` and `layerif experiment report DIR`."""

from __future__ import annotations

from pathlib import Path

from .commands import command_help

NAME = "experiment"


def add(sub) -> None:
    ex = sub.add_parser(NAME, help=command_help(NAME))
    actions = ex.add_subparsers(dest="action", required=True)
    run_p = actions.add_parser("run", help="run (or resume) the cells of a config")
    run_p.add_argument("config", help="experiment YAML (see experiments/*.yaml)")
    run_p.add_argument("--out", required=True, help="the experiment folder (cells, manifest)")
    run_p.add_argument("--quiet", action="store_true", help="no progress lines")
    run_p.add_argument("--stored-only", action="store_true",
                       help="compute nothing: write the manifest of the finished cells (whole "
                            "seeds), so that `report` shows a grid still running or stopped")
    run_p.add_argument("--reuse-cells", action="append", default=[], metavar="DIR",
                       help="another experiment's folder (or its cells/): a cell stored there "
                            "with the same key is copied in instead of computed (keys cover "
                            "every setting, so only the same work is taken); repeatable")
    rep = actions.add_parser("report", help="results.csv, tables.md, plots and report.html")
    rep.add_argument("out", help="the folder of `experiment run --out`")


def run(args) -> int:
    from ..experiments import load_config, run_experiment, write_report

    if args.action == "report":
        for path in write_report(args.out):
            print(f"wrote {path}")
        return 0
    config = load_config(args.config)
    summary = run_experiment(config, args.out, progress=not args.quiet,
                             stored_only=args.stored_only, reuse=reuse_folders(args))
    if summary.partial:
        part = summary.partial
        print(f"{part['stored']} of {part['planned']} planned evaluated models are stored; the "
              f"manifest names {len(summary.rows)} (seed {', '.join(map(str, part['seeds']))}"
              f"{'' if part['whole'] else ', not complete'}); `layerif experiment report "
              f"{args.out}` writes their tables")
        if summary.corrupt:
            print(f"left out {len(summary.corrupt)} damaged cells (`experiment run` recomputes "
                  f"them): {', '.join(summary.corrupt)}")
        return 0
    kinds: dict[str, int] = {}
    for kind, _key in summary.executed:
        kinds[kind] = kinds.get(kind, 0) + 1
    done = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "nothing new (all cells stored)"
    print(f"computed {done} in {summary.seconds:.0f} s; {len(summary.rows)} evaluated models "
          f"in {args.out}")
    if summary.reused:
        print(f"took {len(summary.reused)} stored cells from --reuse-cells instead of "
              f"computing them")
    if summary.corrupt:
        print(f"recomputed {len(summary.corrupt)} damaged cells: {', '.join(summary.corrupt)}")
    return 0


def reuse_folders(args) -> list[Path]:
    """--reuse-cells, checked before any work: each an existing folder other than --out."""
    from ..errors import LayerIFError

    folders = []
    for given in args.reuse_cells:
        folder = Path(given)
        if not folder.is_dir():
            raise LayerIFError(f"--reuse-cells {given}: no such folder; give another "
                               f"experiment's --out folder (or its cells/ folder).")
        if folder.resolve() in (Path(args.out).resolve(), (Path(args.out) / "cells").resolve()):
            raise LayerIFError(f"--reuse-cells {given} is the --out folder itself; give "
                               f"another experiment's folder.")
        folders.append(folder)
    return folders
