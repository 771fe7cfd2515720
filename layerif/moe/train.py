"""Fine-tuning a LoRA-MoE (`layerif finetune-moe`): the paper's recipe as defaults (rank 8,
alpha 16, dropout 0.05, lr 3e-4, all seven projections) on the shared loop of layerif.training
(checkpoint per epoch, resume, seeded so that two processes write byte-identical adapters)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ..io import write_json
from ..training import FinetuneArguments, finish, train_adapters
from .lora_moe import MoEConfig, apply_lora_moe, aux_loss, save_adapters

__all__ = ["FinetuneArguments", "finetune_moe"]


def finetune_moe(model, tokenizer, config: MoEConfig, train_examples, out_dir: str | Path,
                 args: FinetuneArguments | None = None, progress: bool = True, *,
                 provenance: dict | None = None,
                 on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train adapters and routers on `train_examples`; writes out_dir (adapters, config,
    training.json). A checkpoint beside out_dir is resumed when it matches.
    provenance: recorded in training.json, e.g. {"train": "mrpc:validation[0:200]", "scores":
    "runs/s/scores.json"}, so that evaluation can refuse slices overlapping them. on_epoch:
    called with {"epoch", "loss"} as each epoch ends (the CLI prints it at once)."""
    args = args or FinetuneArguments()
    apply_lora_moe(model, config, seed=args.seed)
    coef = args.balance_coef
    history, seconds = train_adapters(
        model, tokenizer, train_examples, args, out_dir, {"config": asdict(config)},
        extra_loss=(lambda: coef * aux_loss(model)) if coef else None, progress=progress,
        on_epoch=on_epoch)
    save_adapters(model, config, out_dir)
    summary = {**(provenance or {}), "history": history, "seconds": round(seconds, 2),
               "arguments": asdict(args), "experts": config.experts}
    write_json(Path(out_dir) / "training.json", summary)
    finish(out_dir)
    return summary
