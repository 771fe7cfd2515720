"""`layerif finetune-moe`: a LoRA-MoE trained with a per-layer expert allocation."""

from __future__ import annotations

from dataclasses import asdict

from ..options import finite_float
from .commands import command_help
from .common import (
    add_dry_run,
    add_training_args,
    prepare_finetune,
    print_epoch,
    report_training,
    resolve_device,
    show_plan,
    training_arguments,
)

NAME = "finetune-moe"


def add(sub) -> None:
    ft = sub.add_parser(NAME, help=command_help(NAME))
    ft.add_argument("--model", required=True, help="the base model (name, folder, .gguf)")
    ft.add_argument("--experts", required=True, help="experts.json from `allocate experts`")
    add_training_args(ft)
    ft.add_argument("--rank", type=int, default=8, help="LoRA rank of every expert (default 8)")
    ft.add_argument("--alpha", type=finite_float, default=16, help="LoRA alpha (default 16)")
    ft.add_argument("--dropout", type=finite_float, default=0.05,
                    help="LoRA dropout (default 0.05)")
    ft.add_argument("--top-k", type=int, default=2, help="experts routed per token (default 2)")
    ft.add_argument("--balance-coef", type=finite_float, default=0.001,
                    help="weight of the load-balancing loss (default 0.001)")
    ft.add_argument("--adapter-dtype", default="float32", choices=("float32", "bfloat16"),
                    help="dtype the adapters and routers train in (default fp32, whatever "
                    "the base model's --dtype)")
    add_dry_run(ft)


def run(args) -> int:
    from ..allocation.api import ExpertAllocation
    from ..moe import MoEConfig
    from ..moe.train import finetune_moe

    alloc = ExpertAllocation.load(args.experts)
    train_args = training_arguments(args, args.balance_coef)
    config = MoEConfig(experts=alloc.experts, rank=args.rank, alpha=args.alpha,
                       dropout=args.dropout, top_k=args.top_k, base_model=args.model,
                       adapter_dtype=args.adapter_dtype)
    if _show_plan(args, config):
        return 0
    model, tokenizer, examples, fingerprint, sets = prepare_finetune(args, asdict(alloc),
                                                                     args.experts)
    config.base_fingerprint = fingerprint
    provenance = {"train": args.train, "format": args.format, "experts_file": args.experts,
                  "scores": alloc.parameters.get("scores"),
                  "provenance": [c.to_dict() for c in sets]}
    summary = finetune_moe(model, tokenizer, config, examples, args.out, train_args,
                           progress=not args.quiet, provenance=provenance,
                           on_epoch=print_epoch)
    return report_training(summary, args.out)


def _show_plan(args, config) -> bool:
    """The memory plan from the model's config (no weight read), refused with the options that
    would fit; True for --dry-run."""
    from dataclasses import replace

    from ..memory import plan_finetuning
    from ..models import load_skeleton
    from ..moe.lora_moe import adapter_footprint

    skeleton = load_skeleton(args.model)
    device = resolve_device(args.device)

    def plan(batch=args.batch_size, dtype=args.dtype, cfg=config):
        params, per_token = adapter_footprint(skeleton, cfg)
        return plan_finetuning(skeleton, params, per_token, device=device, dtype=dtype,
                               adapter_dtype=cfg.adapter_dtype, batch=batch,
                               tokens=args.max_length)

    alternatives = [(f"--batch-size {b}", plan(batch=b))
                    for b in (args.batch_size // 2, 1) if 1 <= b < args.batch_size]
    if args.dtype == "float32":
        alternatives.append(("--dtype bfloat16", plan(dtype="bfloat16")))
    if config.adapter_dtype == "float32":
        alternatives.append(("--adapter-dtype bfloat16",
                             plan(cfg=replace(config, adapter_dtype="bfloat16"))))
    return show_plan(plan(), args, alternatives)
