"""`layerif prune`: a model pruned block by block with an allocation (HF folder + pruning.json),
by a pruner of the registry in pruning/pruners (its options become flags here)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from ..errors import LayerIFError
from ..options import add_flags, chosen_options
from ..pruning.pruners import PRUNERS, make_pruner
from .commands import command_help
from .common import (
    add_calibration_args,
    add_device_dtype,
    add_dry_run,
    add_mask_structure_arg,
    kept_checkpoint,
    resolve_device,
    show_plan,
)

if TYPE_CHECKING:  # the parser is built without it (cli/commands.py)
    from ..allocation.api import SparsityAllocation

NAME = "prune"


def add(sub) -> None:
    pr = sub.add_parser(NAME, help=command_help(NAME))
    pr.add_argument("--model", required=True, help="the model to prune (name, folder, .gguf)")
    pr.add_argument("--allocation", required=True, help="alloc.json")
    pr.add_argument("--pruner", required=True, choices=list(PRUNERS),
                    help="how weights are chosen within a layer")
    add_mask_structure_arg(pr, "prune every layer N:M (N zeros in every M consecutive inputs of "
                        "a row; 2:4 when given alone); the allocation must be uniform at N/M. "
                        "For per-layer patterns use `allocate sparsity --patterns`")
    add_calibration_args(pr)
    add_device_dtype(pr, "where each block is pruned (the model waits on the CPU)")
    add_flags(pr, PRUNERS)
    pr.add_argument("--quiet", action="store_true", help="no progress bars, no memory plan")
    add_dry_run(pr)
    pr.add_argument("--no-resume", action="store_true",
                    help="keep no checkpoint (by default each pruned block is kept in "
                    "OUT_PARENT/.OUT.resume and the same command again resumes at the next "
                    "block)")
    pr.add_argument("--out", required=True, help="output folder (a Hugging Face model folder)")


def run(args) -> int:
    from ..allocation.api import SparsityAllocation
    from ..data.calibration import calibration_samples
    from ..data.provenance import check_disjoint, content_set
    from ..evaluation.overlap import allocation_sets
    from ..fingerprint import check_same_model, model_fingerprint
    from ..io import check_output_folder, check_writable
    from ..models import discover_blocks, load_model
    from ..pruning.prune import PRUNING_FILE, prune_model, save_pruned

    if not args.dry_run:
        check_writable(args.out)
        check_output_folder(args.out, marker=PRUNING_FILE)
    pruner_options = chosen_options(args, PRUNERS, args.pruner, "pruner")
    pruner = make_pruner(args.pruner, **pruner_options)
    alloc = SparsityAllocation.load(args.allocation)
    patterns = _prune_patterns(alloc, args.allocation, args.mask_structure)
    if _show_prune_plan(args, pruner):
        return 0
    recorded = allocation_sets(asdict(alloc), args.allocation)
    calibration = None
    if pruner.needs_calibration:  # refuse leaking calibration data before loading anything
        calibration_set = content_set(args.calibration, "calibration")
        check_disjoint([calibration_set], recorded)
        recorded.append(calibration_set)
        calibration = {"source": args.calibration, "nsamples": args.nsamples,
                       "seqlen": args.seqlen, "seed": args.seed}
    start = time.perf_counter()
    model, tokenizer = load_model(args.model, device="cpu", dtype=args.dtype)
    n_blocks = len(discover_blocks(model))
    if len(alloc.ratios) != n_blocks:
        raise LayerIFError(
            f"{args.allocation} has {len(alloc.ratios)} layer ratios but {args.model} has "
            f"{n_blocks} blocks; allocate for this model."
        )
    fingerprint = model_fingerprint(model, args.model)
    check_same_model(alloc.model_fingerprint, fingerprint, args.allocation)
    samples = []
    if calibration is not None:
        samples = calibration_samples(tokenizer, args.calibration, args.nsamples, args.seqlen,
                                      args.seed)
    load_s = time.perf_counter() - start
    from pathlib import Path

    from ..influence.checkpoint import StepCache

    out = Path(args.out)
    resume_dir = None if args.no_resume else out.parent / f".{out.name}.resume"
    steps = StepCache(resume_dir, {  # what every kept block depends on
        "fingerprint": fingerprint, "ratios": alloc.ratios, "patterns": patterns,
        "pruner": args.pruner, "arguments": repr(pruner.args), "calibration": calibration,
        "dtype": args.dtype})
    with kept_checkpoint(resume_dir):
        report = prune_model(model, alloc.ratios, pruner, samples,
                             device=resolve_device(args.device), progress=not args.quiet,
                             patterns=patterns, steps=steps)
    if steps.resumed:
        print(f"resumed from {resume_dir}: {len(steps.resumed)} pruned blocks were kept")
    info = {
        "model": args.model, "pruner": args.pruner, "pruner_arguments": asdict(pruner.args),
        "allocation": asdict(alloc),
        "patterns": patterns, "mask_structure": args.mask_structure,
        "calibration": calibration, "achieved": report.achieved,
        "global_achieved": _global(report.achieved, model),
        "dtype": args.dtype, "device": str(resolve_device(args.device)),
        "model_fingerprint": fingerprint,
        "pruned_fingerprint": model_fingerprint(model, args.out),
        "provenance": [c.to_dict() for c in recorded],
        "seconds": {"load": round(load_s, 3), **{k: round(v, 3) for k, v in
                                                 report.seconds.items()}},
    }
    out = save_pruned(model, tokenizer, args.out, info)
    steps.clear()
    print(f"pruned {args.model} with {args.pruner} to {info['global_achieved']:.4f} "
          f"(target {alloc.sparsity}); wrote {out}")
    return 0


def _show_prune_plan(args, pruner) -> bool:
    """The memory plan from the model's config (no weight read), refused with the options that
    would fit; True for --dry-run."""
    from ..memory import plan_pruning
    from ..models import load_skeleton

    skeleton = load_skeleton(args.model)
    device = resolve_device(args.device)

    def plan(nsamples=args.nsamples, dtype=args.dtype):
        return plan_pruning(skeleton, pruner, device=device, dtype=dtype, nsamples=nsamples,
                            seqlen=args.seqlen)

    alternatives = [(f"--nsamples {n}", plan(nsamples=n))
                    for n in (args.nsamples // 2, args.nsamples // 4) if n >= 1]
    if args.dtype == "float32":
        alternatives.append(("--dtype bfloat16", plan(dtype="bfloat16")))
    return show_plan(plan(), args, alternatives)


def _prune_patterns(alloc: SparsityAllocation, path: str, mask_structure: str | None
                    ) -> list[str]:
    """The per-layer patterns a prune applies: the allocation's, or N:M everywhere for
    --mask-structure (refused unless the allocation asks N/M of every layer)."""
    from ..pruning.pruners import parse_structure

    if mask_structure is None:
        return list(alloc.patterns)
    structure = parse_structure(mask_structure)
    if structure is None:
        return list(alloc.patterns)
    if alloc.patterns:
        raise LayerIFError(f"{path} already sets a pattern per layer; drop --mask-structure.")
    level = structure[0] / structure[1]
    if any(abs(r - level) > 1e-6 for r in alloc.ratios):
        raise LayerIFError(
            f"--mask-structure {mask_structure} prunes every layer to {level:g}, but {path} "
            f"allocates {min(alloc.ratios):.4f} to {max(alloc.ratios):.4f}; allocate uniform at "
            f"{level:g}, or choose per-layer patterns with `allocate sparsity --patterns "
            f"dense,{mask_structure},...`.")
    return [mask_structure] * len(alloc.ratios)


def _global(achieved: dict, model) -> float:
    from ..models import discover_blocks

    sizes = {m.name: m.numel for b in discover_blocks(model) for m in b.matrices}
    return sum(achieved[n] * sizes[n] for n in sizes) / sum(sizes.values())
