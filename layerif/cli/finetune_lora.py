"""`layerif finetune-lora`: a peft LoRA trained with per-layer ranks from `allocate ranks`."""

from __future__ import annotations

from dataclasses import asdict

from .commands import command_help
from .common import (
    add_training_args,
    prepare_finetune,
    print_epoch,
    report_training,
    training_arguments,
)

NAME = "finetune-lora"


def add(sub) -> None:
    fl = sub.add_parser(NAME, help=command_help(NAME))
    fl.add_argument("--model", required=True, help="the base model (name, folder, .gguf)")
    fl.add_argument("--ranks", required=True, help="ranks.json from `allocate ranks` (its "
                    "LoraConfig, ranks.lora_config.json, is read from beside it)")
    add_training_args(fl)


def run(args) -> int:
    import json

    from ..allocation.api import RankAllocation
    from ..errors import LayerIFError
    from ..lora import finetune_lora, lora_config_path

    alloc = RankAllocation.load(args.ranks)
    config_path = lora_config_path(args.ranks)
    if not config_path.is_file():
        raise LayerIFError(f"{config_path}: missing; `layerif allocate ranks --out "
                           f"{args.ranks}` writes it beside the ranks.")
    config = json.loads(config_path.read_text())
    train_args = training_arguments(args)
    model, tokenizer, examples, fingerprint, sets = prepare_finetune(args, asdict(alloc),
                                                                     args.ranks)
    provenance = {"train": args.train, "format": args.format, "ranks_file": args.ranks,
                  "ranks": alloc.ranks, "scores": alloc.parameters.get("scores"),
                  "base_model": args.model, "base_fingerprint": fingerprint,
                  "provenance": [c.to_dict() for c in sets]}
    summary = finetune_lora(model, tokenizer, config, examples, args.out, train_args,
                            progress=not args.quiet, provenance=provenance,
                           on_epoch=print_epoch)
    return report_training(summary, args.out)
