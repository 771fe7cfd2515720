"""`layerif model-folder`: the Hugging Face folder a model argument loads from."""

from __future__ import annotations

from .commands import command_help

NAME = "model-folder"


def add(sub) -> None:
    mf = sub.add_parser(NAME, help=command_help(NAME))
    mf.add_argument("model", help="a built-in name or .gguf (de-quantised once into the cache), "
                    "or a model folder")


def run(args) -> int:
    from ..models import model_folder

    print(model_folder(args.model))
    return 0
