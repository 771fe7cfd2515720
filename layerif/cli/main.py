"""The `layerif` entry point: the parser built from the subcommand modules, and `main`.

    layerif score --model smollm2-135m --train boolq:validation[0:64] \
                  --val boolq:validation[64:80] --out runs/x
    layerif demo
    layerif tasks

Each subcommand is one module with NAME, add(subparsers) and run(args) -> exit code. A
LayerIFError becomes one `error: ...` line and exit code 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from ..errors import LayerIFError
from . import (
    allocate,
    demo,
    evaluate,
    experiment,
    export_recipe,
    finetune_lora,
    finetune_moe,
    model_folder,
    prune,
    score,
    sensitivity,
    tasks,
)
from .common import Interrupted, Parser

# In the order `layerif --help` lists them.
SUBCOMMANDS = (score, demo, tasks, model_folder, allocate, prune, sensitivity, evaluate,
               export_recipe, finetune_moe, finetune_lora, experiment)
COMMANDS = {m.NAME: m.run for m in SUBCOMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="layerif", description="Layer quality scores for LLMs from influence functions."
    )
    parser.add_argument("--version", action="version", version=f"layerif {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in SUBCOMMANDS:
        module.add(sub)
    return parser


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
