"""The `layerif` entry point: the parser built from the subcommand modules, and `main`.

    layerif score --model smollm2-135m --train boolq:validation[0:64] \
                  --val boolq:validation[64:80] --out runs/x
    layerif demo
    layerif tasks

Each subcommand is one module with NAME, add(subparsers) and run(args) -> exit code; only
the invoked one is imported (commands.py lists them). A command with an `out` argument runs
holding that output's lock (layerif/locks.py; `--wait` waits for a running one). A
LayerIFError becomes one `error: ...` line and exit code 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import shlex
import sys
from collections.abc import Iterable

from .. import __version__
from ..errors import LayerIFError
from ..locks import is_secondary_rank, output_lock
from .commands import COMMANDS, command_help
from .common import Interrupted, Parser


def _module(name: str):
    return importlib.import_module(f".{COMMANDS[name][0]}", __package__)


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The full parser of the subcommands in `commands` (default: all); every other one is
    listed by its help line only, so that building it imports no subcommand module."""
    full = set(COMMANDS if commands is None else commands)
    parser = Parser(
        prog="layerif", description="Layer quality scores for LLMs from influence functions."
    )
    parser.add_argument("--version", action="version", version=f"layerif {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMANDS:
        if name in full:
            _module(name).add(sub)
        else:
            sub.add_parser(name, help=command_help(name))
    _add_wait(parser)
    return parser


def _add_wait(parser: argparse.ArgumentParser) -> None:
    """--wait on every (sub)command that writes an output (`out`): main holds its lock."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                _add_wait(child)
    if any(a.dest == "out" for a in parser._actions):
        parser.add_argument("--wait", action="store_true",
                            help="when another run is writing the same output, wait for it to "
                            "end instead of refusing")


def invoked_command(argv: list[str]) -> list[str]:
    """The subcommand named in `argv` (the first word after the top-level options), if any."""
    for word in argv:
        if word in ("-v", "--verbose"):
            continue
        return [word] if word in COMMANDS else []
    return []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(invoked_command(argv)).parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "quiet", False):
        # Before tqdm is first imported: it reads TQDM_* then (every bar of every library, the
        # GGUF de-quantisation's included, takes it as its default).
        os.environ["TQDM_DISABLE"] = "1"
        import warnings

        import datasets
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        datasets.disable_progress_bars()
        warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' notices
    out = getattr(args, "out", None)
    lock = (output_lock(out, shlex.join(["layerif", *argv]), wait=args.wait)
            if out and not is_secondary_rank() else contextlib.nullcontext())
    try:
        with lock:
            return _module(args.command).run(args)
    except LayerIFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        note = f"; {exc}" if isinstance(exc, Interrupted) else ""
        print(f"interrupted; no output was written{note}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
