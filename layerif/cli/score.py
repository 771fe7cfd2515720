"""`layerif score`: layer-wise influence scores of a model for training/validation data."""

from __future__ import annotations

import numpy as np

from ..data.instruct import DATA_FORMATS
from ..environment import describe_machine
from ..influence import AGGREGATES, ESTIMATORS
from ..influence.aggregate import describe
from ..influence.base import MODES, InfluenceArguments
from ..options import finite_float
from .commands import command_help
from .common import add_aggregate, device_arg, kept_checkpoint

NAME = "score"
_DEFAULTS = InfluenceArguments()


def add(sub) -> None:
    p = sub.add_parser(
        NAME, help=command_help(NAME),
        description="Compute per-example, per-layer influences and one score per layer; writes "
        "DIR/scores.json and DIR/influence.npy atomically. Data-parallel over N processes: "
        "torchrun --nproc_per_node N -m layerif score ... (gloo on CPU, nccl on CUDA).",
    )
    p.add_argument("--model", required=True,
                   help="built-in name (smollm2-135m), .gguf file, model folder or hub id")
    p.add_argument("--train", required=True,
                   help="a .jsonl/.json/.csv file, or TASK[@SOURCE][:SPLIT][[START:STOP]]")
    p.add_argument("--val", required=True, help="same forms as --train; disjoint from it")
    p.add_argument("--format", default="plain", choices=DATA_FORMATS,
                   help="how task specs read: lm-eval's prompt + gold answer (plain) or the "
                   "fine-tuning instruction format (instruct, for `allocate experts`)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--estimator", default=_DEFAULTS.estimator, choices=sorted(ESTIMATORS),
                   help="influence estimator (default datainf; exact: tiny models only)")
    p.add_argument("--params", default=_DEFAULTS.params, choices=("all", "attn", "mlp"),
                   help="which block matrices are tracked (default all)")
    add_aggregate(p, help="which aggregate `scores` holds (all are saved); helpful = sum of "
                  "the loss-reducing influences, the paper's setting (default)")
    p.add_argument("--bootstrap", type=int, default=200,
                   help="resamples of the training examples for the profile's stability")
    p.add_argument("--max-length", type=int, default=_DEFAULTS.max_length,
                   help="tokens per example; longer ones are truncated (default 256)")
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size,
                   help="examples per forward/backward pass (default 8)")
    p.add_argument("--mode", default=_DEFAULTS.mode, choices=MODES,
                   help="streaming: memory independent of n; cached: one training pass; "
                   "auto: cached when it fits --cache-gb")
    p.add_argument("--cache-gb", type=finite_float, default=_DEFAULTS.cache_gb,
                   help="memory budget of cached mode in GiB (default: auto picks cached when "
                   "the whole run fits the memory free on the device)")
    p.add_argument("--damping", type=finite_float, default=_DEFAULTS.damping,
                   help="lambda_m = damping * mean ||g||^2 / d_m (DataInf: 0.1)")
    p.add_argument("--max-exact-dim", type=int, default=_DEFAULTS.max_exact_dim,
                   help="the exact estimator refuses matrices with more entries (default 8192)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds everything random (the bootstrap resamples)")
    p.add_argument("--device", default=None, type=device_arg,
                   help="cpu, cuda, cuda:1 (default: cuda if any)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="model weights' dtype; the influence arithmetic is fp32 regardless")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no memory plan")
    p.add_argument("--dry-run", action="store_true",
                   help="print the memory plan (and the mode auto would choose) and exit: no "
                   "weight is loaded, nothing is written")
    p.add_argument("--no-resume", action="store_true",
                   help="keep no checkpoint (by default finished steps are kept in "
                   "OUT_PARENT/.OUT.resume, so the same command again resumes a killed run)")


def run(args) -> int:
    from pathlib import Path

    from ..io import check_writable
    from ..report import format_layer_table
    from ..scoring import score_layers

    out = Path(args.out)
    if args.dry_run:
        return _dry_run(args)
    check_writable(out)  # before any work, not after it
    resume_dir = None if args.no_resume else out.parent / f".{out.name}.resume"
    with kept_checkpoint(resume_dir):
        result = score_layers(
            args.model, args.train, args.val,
            estimator=args.estimator, params=args.params, aggregate=args.aggregate,
            max_length=args.max_length, batch_size=args.batch_size, mode=args.mode,
            cache_gb=args.cache_gb, damping=args.damping, max_exact_dim=args.max_exact_dim,
            seed=args.seed, device=args.device, dtype=args.dtype, progress=not args.quiet,
            checkpoint_dir=resume_dir, data_format=args.format, bootstrap=args.bootstrap,
        )
    if not _is_main_process():
        return 0  # every process holds the whole result; rank 0 writes and reports it
    if result.resumed_steps:
        print(f"resumed from {resume_dir}: {', '.join(result.resumed_steps)} were already done")
    out = result.save(args.out)
    stability = result.profile_stability
    pct = f"{stability.level:.0%}"
    print(format_layer_table(result.layers, {
        result.aggregate: result.scores, f"{pct} low": stability.low,
        f"{pct} high": stability.high}))
    print(f"({describe(result.aggregate)}; {pct} bootstrap intervals)")
    print(f"\n{len(result.layers)} layers, {result.n_train} train / {result.n_val} val examples, "
          f"{result.estimator} ({result.mode}), {result.seconds:.1f} s on "
          f"{describe_machine(result.machine)}")
    print(f"{result.harmful_share:.1%} of per-layer influences are positive (harmful)")
    print(stability.summary())
    if result.zero_gradient_matrices:
        print(f"{len(result.zero_gradient_matrices)} matrices had a zero gradient for every "
              "training example and contribute 0 (listed in scores.json)")
    if max(result.scores) == min(result.scores):
        others = [a for a in AGGREGATES if a != result.aggregate
                  and np.ptp(result.aggregates[a]) > 0]
        print(f"every layer's {result.aggregate!r} score is the same, so `allocate` refuses it; "
              f"scores.json also holds {', '.join(others) or 'no non-flat aggregate'} "
              "(allocate --aggregate NAME)")
    print(f"wrote {out}/scores.json and {out}/influence.npy")
    return 0


def _dry_run(args) -> int:
    import sys

    from ..memory import InsufficientMemoryError
    from ..scoring import plan_score_layers

    try:
        plan = plan_score_layers(
            args.model, args.train, args.val, estimator=args.estimator, params=args.params,
            max_length=args.max_length, batch_size=args.batch_size, mode=args.mode,
            cache_gb=args.cache_gb, max_exact_dim=args.max_exact_dim, device=args.device,
            dtype=args.dtype, data_format=args.format)
    except InsufficientMemoryError as exc:
        if exc.plan is not None:
            print(exc.plan.format())
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(plan.format())
    print("dry run: nothing was computed or written")
    return 0


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0
