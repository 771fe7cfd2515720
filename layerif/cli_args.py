"""Argument types and option groups shared by the `layerif` commands."""

from __future__ import annotations

import argparse

from .influence import AGGREGATES
from .influence.aggregate import DEFAULT_AGGREGATE, AggregateError, check_aggregate


def aggregate_arg(name: str) -> str:
    """argparse type: an aggregate name; a renamed one fails naming its replacement."""
    try:
        return check_aggregate(name)
    except AggregateError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_aggregate(p, default: str | None = DEFAULT_AGGREGATE, help: str = "") -> None:
    p.add_argument("--aggregate", default=default, type=aggregate_arg,
                   metavar="{" + ",".join(AGGREGATES) + "}", help=help)


class Parser(argparse.ArgumentParser):
    """Usage errors as one line (`error: ...`, exit 2) like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`.\n")


def add_device_dtype(p, device_help: str = "cpu, cuda, cuda:1 (default: cuda if any)") -> None:
    p.add_argument("--device", default=None, help=device_help)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="the model weights' dtype (statistics are fp32 regardless; fp32 is the "
                   "safe choice on CPU)")


def resolve_device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def add_training_args(p) -> None:
    """The data, optimisation, seed and device options both fine-tuning commands take."""
    from .data.instruct import DATA_FORMATS

    p.add_argument("--train", required=True,
                   help="a file (text or prompt/completion records) or a task spec")
    p.add_argument("--format", default="instruct", choices=DATA_FORMATS,
                   help="how a task spec reads: the paper's instruction format with answers "
                   "like 'Answer: equivalent.' (default) or lm-eval's gold pairs")
    p.add_argument("--epochs", type=int, default=3, help="passes over the data (default 3)")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate (default 3e-4)")
    p.add_argument("--batch-size", type=int, default=4, help="examples per step (default 4)")
    p.add_argument("--max-length", type=int, default=256, help="token cutoff (default 256)")
    p.add_argument("--seed", type=int, default=0,
                   help="fixes the adapters' initial values, the data order and dropout")
    add_device_dtype(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="adapter folder")
