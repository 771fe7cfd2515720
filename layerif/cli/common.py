"""Argument types, option groups and checks shared by the `layerif` subcommands."""

from __future__ import annotations

import argparse
import contextlib

from ..errors import LayerIFError
from ..influence import AGGREGATES  # light: estimators import torch only where they compute
from ..influence.aggregate import DEFAULT_AGGREGATE, AggregateError, check_aggregate
from ..options import finite_float

# What `layerif --help` imports: no torch, transformers or scipy at the top of this module
# (the commands' own modules import them when one is invoked).


class Parser(argparse.ArgumentParser):
    """Usage errors as one line (`error: ...`, exit 2) like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`.\n")


def aggregate_arg(name: str) -> str:
    """argparse type: an aggregate name; a renamed one fails naming its replacement."""
    try:
        return check_aggregate(name)
    except AggregateError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_aggregate(p, default: str | None = DEFAULT_AGGREGATE, help: str = "") -> None:  # noqa: A002
    p.add_argument("--aggregate", default=default, type=aggregate_arg,
                   metavar="{" + ",".join(AGGREGATES) + "}", help=help)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def device_arg(text: str) -> str:
    """argparse type: cpu, cuda, cuda:N (or mps), refused at once when this machine has no
    such device (not after the model has loaded)."""
    import re

    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda or cuda:N")
    if text == "cpu":
        return text
    import torch

    if text == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise argparse.ArgumentTypeError("no MPS device here; use --device cpu")
        return text
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"no CUDA device is available here (torch "
                                         f"{torch.__version__}); use --device cpu")
    index = int(text.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"this machine has {torch.cuda.device_count()} CUDA "
                                         f"device(s), so no {text}")
    return text


def add_device_dtype(p, device_help: str = "cpu, cuda, cuda:1 (default: cuda if any)") -> None:
    p.add_argument("--device", default=None, type=device_arg, help=device_help)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="the model weights' dtype (statistics are fp32 regardless; fp32 is the "
                   "safe choice on CPU)")


def resolve_device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def add_dry_run(p) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="print the memory plan and exit: no weight is loaded, nothing is written")


def show_plan(plan, args, alternatives=()) -> bool:
    """Print a command's memory plan before its heavy work (on stderr; on stdout with
    --dry-run; not at all with --quiet), and refuse it, naming the `alternatives` ((flag,
    plan) pairs) that would fit, when it does not fit the free memory. True when the command
    stops here (--dry-run)."""
    import sys

    if args.dry_run or not getattr(args, "quiet", False):
        print(plan.format(), file=sys.stdout if args.dry_run else sys.stderr)
    plan.refuse(alternatives)
    if args.dry_run:
        print("dry run: nothing was computed or written")
    return args.dry_run


def add_calibration_args(p) -> None:
    from ..data.calibration import DEFAULT_CALIBRATION

    p.add_argument("--calibration", default=DEFAULT_CALIBRATION,
                   help="calibration text: c4 (the hub corpus, the literature's: run with "
                   "--nsamples 128 --seqlen 2048), a .txt or data file, or a task spec "
                   f"(default {DEFAULT_CALIBRATION}, packaged)")
    p.add_argument("--nsamples", type=int, default=128, help="calibration windows (default 128)")
    p.add_argument("--seqlen", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seeds the windows' positions")


def add_mask_structure_arg(p, help: str) -> None:  # noqa: A002
    p.add_argument("--mask-structure", nargs="?", const="2:4", default=None, metavar="N:M",
                   help=help)


def model_name(args, scores) -> str:
    """--model, else the model named in the loaded scores."""
    name = args.model or (scores or {}).get("model")
    if not name:
        raise LayerIFError("give --model (or --scores from `layerif score`).")
    return name


def allocation_model(name: str, needs_weights: bool):
    """(model, fingerprint): the full model where the method reads weights or activations, else
    its skeleton from the config, the fingerprint then read from the weight files."""
    from ..fingerprint import fingerprint_from_files, model_fingerprint
    from ..models import load_model, load_skeleton

    if needs_weights:
        model = load_model(name, device="cpu")[0]
        return model, model_fingerprint(model, name)
    return load_skeleton(name), fingerprint_from_files(name)


def add_training_args(p) -> None:
    """The data, optimisation, seed and device options both fine-tuning commands take."""
    from ..data.instruct import DATA_FORMATS

    p.add_argument("--train", required=True,
                   help="a file (text or prompt/completion records) or a task spec")
    p.add_argument("--format", default="instruct", choices=DATA_FORMATS,
                   help="how a task spec reads: the paper's instruction format with answers "
                   "like 'Answer: equivalent.' (default) or lm-eval's gold pairs")
    p.add_argument("--epochs", type=int, default=3, help="passes over the data (default 3)")
    p.add_argument("--lr", type=finite_float, default=3e-4,
                   help="AdamW learning rate (default 3e-4)")
    p.add_argument("--batch-size", type=int, default=4, help="examples per step (default 4)")
    p.add_argument("--max-length", type=int, default=256, help="token cutoff (default 256)")
    p.add_argument("--seed", type=int, default=0,
                   help="fixes the adapters' initial values, the data order and dropout")
    p.add_argument("--group-by-length", action="store_true",
                   help="batch examples of similar length together (less padding, as "
                   "transformers' group_by_length)")
    add_device_dtype(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="adapter folder")


def training_arguments(args, balance_coef: float = 0.0):
    from ..training import FinetuneArguments

    return FinetuneArguments(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                             max_length=args.max_length, balance_coef=balance_coef,
                             seed=args.seed, group_by_length=args.group_by_length)


def prepare_finetune(args, alloc: dict, alloc_path: str):
    """The checks both fine-tuning commands make, then (model, tokenizer, examples, fingerprint,
    content sets): the training data refused before any model is loaded when it overlaps a set
    the allocation records (its scores' train/val), the model refused when the allocation was
    made for other weights."""
    from ..data import load_examples_as
    from ..data.provenance import check_disjoint, content_set
    from ..evaluation.overlap import allocation_sets
    from ..fingerprint import check_same_model, model_fingerprint
    from ..io import check_writable
    from ..models import load_model

    check_writable(args.out)
    recorded = allocation_sets(alloc, alloc_path)
    train_set = content_set(args.train, "fine-tuning")
    check_disjoint([train_set], recorded)
    examples = load_examples_as(args.train, args.format)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    fingerprint = model_fingerprint(model, args.model)
    check_same_model(alloc.get("model_fingerprint"), fingerprint, alloc_path)
    return model, tokenizer, examples, fingerprint, [*recorded, train_set]


def print_epoch(entry: dict) -> None:
    """One line as each epoch ends, flushed (a redirected log shows it then, not at exit)."""
    print(f"epoch {entry['epoch']}: loss {entry['loss']:.4f}", flush=True)


def report_training(summary: dict, out: str) -> int:
    print(f"{summary['seconds']:.1f} s; wrote {out}")
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
