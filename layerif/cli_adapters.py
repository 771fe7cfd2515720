"""CLI commands for adapters: `allocate ranks`, `finetune-moe`, `finetune-lora`. Thin wrappers
over layerif.allocation, layerif.moe and layerif.lora; the two fine-tuning commands share their
data, seed and device options and their checks (cli_args.add_training_args, `_prepare`)."""

from __future__ import annotations

from dataclasses import asdict

from .allocation.expert_methods import EXPERT_METHODS, rank_methods
from .cli_args import add_aggregate, add_training_args
from .options import add_flags


def add_rank_kind(kinds) -> None:
    """`allocate ranks`: per-layer LoRA ranks (ranks.json) and the peft LoraConfig beside it."""
    rk = kinds.add_parser("ranks", help="per-layer LoRA ranks (ranks.json + a peft LoraConfig)")
    rk.add_argument("--method", required=True, choices=rank_methods(),
                    help="how the rank budget is split across layers")
    rk.add_argument("--budget", type=int, required=True,
                    help="total rank over layers (e.g. 8 x layers for the budget of rank 8 "
                    "everywhere); every adapted matrix of a layer takes its layer's rank")
    rk.add_argument("--min-rank", type=int, default=1, help="smallest rank of a layer (default 1)")
    rk.add_argument("--multiple-of", type=int, default=1,
                    help="every rank is a multiple of this (default 1)")
    add_flags(rk, {n: EXPERT_METHODS[n] for n in rank_methods()})
    rk.add_argument("--alpha-per-rank", type=float, default=2.0,
                    help="lora_alpha = this x rank in every layer (default 2: alpha 16 at rank 8)")
    rk.add_argument("--dropout", type=float, default=0.05, help="lora_dropout (default 0.05)")
    rk.add_argument("--scores", help="DIR/scores.json from `layerif score` (method layerif)")
    add_aggregate(rk, None, "which saved aggregate to use (default: the file's `scores`)")
    rk.add_argument("--model", help="the model (default: the one named in --scores)")
    rk.add_argument("--out", required=True,
                    help="ranks.json to write; the LoraConfig goes to ranks.lora_config.json")


def add_commands(sub) -> dict:
    ft = sub.add_parser("finetune-moe", help="train a LoRA-MoE with a per-layer expert allocation")
    ft.add_argument("--model", required=True, help="the base model (name, folder, .gguf)")
    ft.add_argument("--experts", required=True, help="experts.json from `allocate experts`")
    add_training_args(ft)
    ft.add_argument("--rank", type=int, default=8, help="LoRA rank of every expert (default 8)")
    ft.add_argument("--alpha", type=float, default=16, help="LoRA alpha (default 16)")
    ft.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (default 0.05)")
    ft.add_argument("--top-k", type=int, default=2, help="experts routed per token (default 2)")
    ft.add_argument("--balance-coef", type=float, default=0.001,
                    help="weight of the load-balancing loss (default 0.001)")
    ft.add_argument("--adapter-dtype", default="float32", choices=("float32", "bfloat16"),
                    help="dtype the adapters and routers train in (default fp32, whatever "
                    "the base model's --dtype)")

    fl = sub.add_parser("finetune-lora", help="train a peft LoRA with per-layer ranks")
    fl.add_argument("--model", required=True, help="the base model (name, folder, .gguf)")
    fl.add_argument("--ranks", required=True, help="ranks.json from `allocate ranks` (its "
                    "LoraConfig, ranks.lora_config.json, is read from beside it)")
    add_training_args(fl)
    return {"finetune-moe": _cmd_finetune_moe, "finetune-lora": _cmd_finetune_lora}


def cmd_allocate_ranks(args, scores: dict | None, model, fingerprint, options: dict) -> int:
    from .allocation.api import allocate_ranks
    from .io import write_json
    from .lora import lora_config, lora_config_path

    result = allocate_ranks(args.method, args.budget, model, min_rank=args.min_rank,
                            multiple_of=args.multiple_of, scores=scores,
                            model_name=args.model or (scores or {}).get("model"),
                            fingerprint=fingerprint, **options)
    config = lora_config(result, args.alpha_per_rank, args.dropout)
    from peft import LoraConfig  # refuse here, not at training, what peft would not take

    LoraConfig(**config)
    result.save(args.out)
    write_json(lora_config_path(args.out), config)
    print(f"ranks per layer ({result.method}, total {result.budget}): {result.ranks}")
    print(f"wrote {args.out} and {lora_config_path(args.out)}")
    return 0


def _prepare(args, alloc: dict, alloc_path: str):
    """The checks both fine-tuning commands make, then (model, tokenizer, examples, fingerprint,
    content sets): the training data refused before any model is loaded when it overlaps a set
    the allocation records (its scores' train/val), the model refused when the allocation was
    made for other weights."""
    from .data import load_examples_as
    from .data.provenance import check_disjoint, content_set
    from .evaluation.overlap import allocation_sets
    from .fingerprint import check_same_model, model_fingerprint
    from .io import check_writable
    from .models import load_model

    check_writable(args.out)
    recorded = allocation_sets(alloc, alloc_path)
    train_set = content_set(args.train, "fine-tuning")
    check_disjoint([train_set], recorded)
    examples = load_examples_as(args.train, args.format)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    fingerprint = model_fingerprint(model, args.model)
    check_same_model(alloc.get("model_fingerprint"), fingerprint, alloc_path)
    return model, tokenizer, examples, fingerprint, [*recorded, train_set]


def _training_arguments(args, balance_coef: float = 0.0):
    from .training import FinetuneArguments

    return FinetuneArguments(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                             max_length=args.max_length, balance_coef=balance_coef,
                             seed=args.seed)


def _report(summary: dict, out: str) -> int:
    for h in summary["history"]:
        print(f"epoch {h['epoch']}: loss {h['loss']:.4f}")
    print(f"{summary['seconds']:.1f} s; wrote {out}")
    return 0


def _cmd_finetune_moe(args) -> int:
    from .allocation.api import ExpertAllocation
    from .moe import MoEConfig
    from .moe.train import finetune_moe

    alloc = ExpertAllocation.load(args.experts)
    train_args = _training_arguments(args, args.balance_coef)
    model, tokenizer, examples, fingerprint, sets = _prepare(args, asdict(alloc), args.experts)
    config = MoEConfig(experts=alloc.experts, rank=args.rank, alpha=args.alpha,
                       dropout=args.dropout, top_k=args.top_k, base_model=args.model,
                       adapter_dtype=args.adapter_dtype, base_fingerprint=fingerprint)
    provenance = {"train": args.train, "format": args.format, "experts_file": args.experts,
                  "scores": alloc.parameters.get("scores"),
                  "provenance": [c.to_dict() for c in sets]}
    summary = finetune_moe(model, tokenizer, config, examples, args.out, train_args,
                           progress=not args.quiet, provenance=provenance)
    return _report(summary, args.out)


def _cmd_finetune_lora(args) -> int:
    import json

    from .allocation.api import RankAllocation
    from .errors import LayerIFError
    from .lora import finetune_lora, lora_config_path

    alloc = RankAllocation.load(args.ranks)
    config_path = lora_config_path(args.ranks)
    if not config_path.is_file():
        raise LayerIFError(f"{config_path}: missing; `layerif allocate ranks --out "
                           f"{args.ranks}` writes it beside the ranks.")
    config = json.loads(config_path.read_text())
    train_args = _training_arguments(args)
    model, tokenizer, examples, fingerprint, sets = _prepare(args, asdict(alloc), args.ranks)
    provenance = {"train": args.train, "format": args.format, "ranks_file": args.ranks,
                  "ranks": alloc.ranks, "scores": alloc.parameters.get("scores"),
                  "base_model": args.model, "base_fingerprint": fingerprint,
                  "provenance": [c.to_dict() for c in sets]}
    summary = finetune_lora(model, tokenizer, config, examples, args.out, train_args,
                            progress=not args.quiet, provenance=provenance)
    return _report(summary, args.out)
