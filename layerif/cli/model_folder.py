"""`layerif model-folder`: the Hugging Face folder a model argument loads from."""

from __future__ import annotations

NAME = "model-folder"


def add(sub) -> None:
    mf = sub.add_parser("model-folder", help="print the Hugging Face folder a model argument "
                        "loads from, for tools that take a folder (llm-compressor, vLLM)")
    mf.add_argument("model", help="a built-in name or .gguf (de-quantised once into the cache), "
                    "or a model folder")


def run(args) -> int:
    from ..models import model_folder

    print(model_folder(args.model))
    return 0
