"""`layerif sensitivity`: the measured per-block sensitivity D_l(s), every block pruned alone to
every level (sensitivity/measure.py), written to DIR/sensitivity.json with its heat map."""

from __future__ import annotations

from ..environment import describe_machine
from .commands import command_help
from .common import add_device_dtype, add_dry_run, kept_checkpoint

NAME = "sensitivity"
DEFAULT_HELD = "sciq:validation[800:1000]"  # SciQ paragraphs no default calibration or eval reads


def add(sub) -> None:
    from ..data.calibration import DEFAULT_CALIBRATION
    from ..pruning.pruners import PRUNERS

    p = sub.add_parser(
        NAME, help=command_help(NAME),
        description="For every block l and level s, prune block l alone to s (the pruner's "
        "statistics from the dense model's inputs on calibration windows) and measure the mean "
        "token NLL on held windows: D_l(s) = NLL - NLL(dense), with a bootstrap interval over "
        "the windows. Writes DIR/sensitivity.json and DIR/sensitivity.png atomically; a killed "
        "run resumes.")
    p.add_argument("--model", required=True, help="built-in name, .gguf file or model folder")
    p.add_argument("--pruner", required=True, choices=list(PRUNERS),
                   help="how a block is pruned (the pruner you will prune with)")
    p.add_argument("--levels", default="0.5,0.6,0.7,0.8,0.9",
                   help="comma-separated pruning ratios in (0, 0.99] (default 0.5,...,0.9)")
    p.add_argument("--calibration", default=DEFAULT_CALIBRATION,
                   help=f"the pruner's calibration text (default {DEFAULT_CALIBRATION})")
    p.add_argument("--nsamples", type=int, default=32, help="calibration windows (default 32)")
    p.add_argument("--seqlen", type=int, default=512,
                   help="tokens per window, calibration and held (default 512)")
    p.add_argument("--held", default=DEFAULT_HELD,
                   help="text the NLL is measured on, disjoint by content from the "
                   f"calibration (default {DEFAULT_HELD})")
    p.add_argument("--held-windows", type=int, default=16,
                   help="held windows; the bootstrap resamples them (default 16)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the windows' positions and the bootstrap")
    p.add_argument("--check", action="append", default=[], metavar="ALLOC",
                   help="an alloc.json for this model: prune the whole model with it and "
                   "record the measured NLL increase beside the additive prediction "
                   "sum_l D_l(s_l) (repeatable)")
    add_device_dtype(p, "where the model runs (default: cuda if any)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no memory plan")
    add_dry_run(p)
    p.add_argument("--no-resume", action="store_true",
                   help="keep no checkpoint (by default each finished block is kept in "
                   "OUT_PARENT/.OUT.resume and the same command again resumes)")
    p.add_argument("--out", required=True, help="output folder")


def run(args) -> int:
    from pathlib import Path

    from ..errors import LayerIFError
    from ..sensitivity import check_levels
    from ..sensitivity.run import SensitivityRun

    try:
        levels = check_levels(args.levels.split(","))
    except LayerIFError:
        raise LayerIFError(f"--levels {args.levels!r}: give increasing pruning ratios in "
                           "(0, 0.99], e.g. 0.5,0.6,0.7,0.8,0.9.") from None
    from ..io import check_output_folder, check_writable
    from ..sensitivity.files import FILE, PLOT

    check_writable(args.out)  # the output, before hours of trials (and no .OUT.resume left)
    check_output_folder(args.out, owned_files={FILE, PLOT})
    job = SensitivityRun(
        model=args.model, pruner=args.pruner, levels=levels, calibration=args.calibration,
        nsamples=args.nsamples, seqlen=args.seqlen, held=args.held,
        held_windows=args.held_windows, seed=args.seed, checks=list(args.check),
        device=args.device, dtype=args.dtype)
    job.check_inputs()  # data overlap, writability, allocations: before any weight is read
    plan = job.plan()
    from .common import show_plan

    if show_plan(plan, args):
        return 0
    out = Path(args.out)
    resume_dir = None if args.no_resume else out.parent / f".{out.name}.resume"
    with kept_checkpoint(resume_dir):
        record = job.run(out, resume_dir=resume_dir, progress=not args.quiet)
    _print(record)
    print(f"wrote {out}/sensitivity.json and {out}/sensitivity.png")
    return 0


def _print(record: dict) -> None:
    from ..report import format_layer_table

    levels = record["levels"]
    print(format_layer_table(record["layers"], {
        f"s={s:.2f}": [row[k] for row in record["delta"]] for k, s in enumerate(levels)}))
    print(f"(NLL increase in nats per token with the block alone pruned by {record['pruner']}; "
          f"dense NLL {record['dense_nll']:.4f} on {record['held']['windows']} held windows of "
          f"{record['held']['seqlen']} tokens; 95% intervals in sensitivity.json)")
    for check in record.get("additivity", []):
        print(f"additivity, {check['name']}: predicted sum D_l(s_l) {check['predicted']:.4f}, "
              f"measured {check['measured']:.4f} nats per token")
    print(f"{len(record['layers'])} blocks x {len(levels)} levels in {record['seconds']:.0f} s on "
          f"{describe_machine(record['machine'])}")
