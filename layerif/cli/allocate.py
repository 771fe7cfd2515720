"""`layerif allocate sparsity|experts|ranks`: per-layer budgets from scores, weights or
calibration data, by the methods registered in allocation/sparsity_methods and
allocation/expert_methods (their options become flags here)."""

from __future__ import annotations

import sys

from ..allocation.expert_methods import (
    EXPERT_METHODS,
    make_expert_method,
    make_rank_method,
    rank_methods,
)
from ..allocation.sparsity_methods import SPARSITY_METHODS, make_sparsity_method
from ..options import add_flags, chosen_options, finite_float
from .commands import command_help
from .common import (
    add_aggregate,
    add_calibration_args,
    allocation_model,
    model_name,
)

NAME = "allocate"


def add(sub) -> None:
    alloc = sub.add_parser(NAME, help=command_help(NAME))
    kinds = alloc.add_subparsers(dest="kind", required=True)

    sp = kinds.add_parser("sparsity", help="per-layer sparsity ratios (alloc.json)")
    sp.add_argument("--method", required=True, choices=list(SPARSITY_METHODS),
                    help="how ratios are allocated across layers")
    sp.add_argument("--sparsity", type=finite_float, required=True, help="global target in [0, 1)")
    sp.add_argument("--scores", help="DIR/scores.json from `layerif score` (method layerif)")
    add_aggregate(sp, None, "which saved aggregate to use (default: the file's `scores`)")
    sp.add_argument("--model", help="model (default: the one named in --scores)")
    add_calibration_args(sp)
    add_flags(sp, SPARSITY_METHODS)
    sp.add_argument("--patterns", help="comma-separated per-layer patterns to choose from, "
                    "e.g. dense,1:4,2:4,3:4 (add 'unstructured' to let one layer take the exact "
                    "remainder): each layer gets the pattern nearest its allocated ratio, the "
                    "global target kept as closely as the patterns allow")
    sp.add_argument("--out", required=True, help="alloc.json to write")

    ex = kinds.add_parser("experts", help="per-layer LoRA expert counts (experts.json)")
    ex.add_argument("--method", required=True, choices=list(EXPERT_METHODS),
                    help="how experts are allocated across layers")
    ex.add_argument("--total", type=int,
                    help="total experts T (>= layers); mola's pattern fixes its own")
    add_flags(ex, EXPERT_METHODS)
    ex.add_argument("--scores", help="DIR/scores.json from `layerif score` (method layerif)")
    add_aggregate(ex, None, "which saved aggregate to use (default: the file's `scores`)")
    ex.add_argument("--model", help="the model (default: the layers of --scores)")
    ex.add_argument("--out", required=True, help="experts.json to write")
    _add_rank_kind(kinds)


def _add_rank_kind(kinds) -> None:
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
    rk.add_argument("--alpha-per-rank", type=finite_float, default=2.0,
                    help="lora_alpha = this x rank in every layer (default 2: alpha 16 at rank 8)")
    rk.add_argument("--dropout", type=finite_float, default=0.05,
                    help="lora_dropout (default 0.05)")
    rk.add_argument("--scores", help="DIR/scores.json from `layerif score` (method layerif)")
    add_aggregate(rk, None, "which saved aggregate to use (default: the file's `scores`)")
    rk.add_argument("--model", help="the model (default: the one named in --scores)")
    rk.add_argument("--out", required=True,
                    help="ranks.json to write; the LoraConfig goes to ranks.lora_config.json")


def run(args) -> int:
    from ..allocation.api import (
        ExpertAllocation,
        RankAllocation,
        SparsityAllocation,
        allocate_experts,
        allocate_sparsity,
        load_scores,
    )
    from ..data.calibration import calibration_samples
    from ..data.provenance import content_set
    from ..io import check_writable
    from ..models import load_tokenizer

    check_writable(args.out)
    {"sparsity": SparsityAllocation, "experts": ExpertAllocation,  # before the work: a
     "ranks": RankAllocation}[args.kind].refuse_foreign(args.out)   # search runs for hours
    scores = load_scores(args.scores, args.aggregate) if args.scores else None
    if args.kind == "ranks":
        options = chosen_options(args, EXPERT_METHODS, args.method, "method")
        make_rank_method(args.method, **options)  # refuse bad options before loading
        model, fingerprint = allocation_model(model_name(args, scores),
                                              "weights" in EXPERT_METHODS[args.method].needs)
        return _allocate_ranks(args, scores, model, fingerprint, options)
    if args.kind == "experts":
        options = chosen_options(args, EXPERT_METHODS, args.method, "method")
        make_expert_method(args.method, **options)  # refuse bad options before loading
        reads_weights = "weights" in EXPERT_METHODS[args.method].needs
        model = fingerprint = None
        if args.model or reads_weights:
            model, fingerprint = allocation_model(model_name(args, scores), reads_weights)
        result = allocate_experts(args.method, args.total, scores=scores, model=model,
                                  model_name=args.model, fingerprint=fingerprint, **options)
        result.save(args.out)
        print(f"experts per layer ({result.method}, total {result.total}): {result.experts}")
    else:
        options = chosen_options(args, SPARSITY_METHODS, args.method, "method")
        # refuse bad options before loading anything
        needs = make_sparsity_method(args.method, **options).requires()
        name = model_name(args, scores)
        model, fingerprint = allocation_model(name, "weights" in needs)
        samples = calibration_set = None
        tokenizer = load_tokenizer(name) if "tokenizer" in needs else None
        if "calibration" in needs:
            samples = calibration_samples(load_tokenizer(name), args.calibration, args.nsamples,
                                          args.seqlen, args.seed)
            calibration_set = content_set(args.calibration, "calibration").to_dict()
        result = allocate_sparsity(
            args.method, args.sparsity, model=model, model_name=name, scores=scores,
            calibration=samples, calibration_set=calibration_set, fingerprint=fingerprint,
            tokenizer=tokenizer, **options)
        if args.patterns:
            before = result.ratios
            result = result.with_patterns([p for p in args.patterns.split(",") if p.strip()])
            print(f"patterns per layer: {result.patterns}")
            if len(set(result.patterns)) == 1 and max(before) - min(before) > 1e-9:
                print(f"warning: every layer got {result.patterns[0]}: the allocated ratios "
                      f"({min(before):.3f} to {max(before):.3f}) lie closer together than the "
                      "patterns' levels, so the allocation is lost; use finer patterns (e.g. "
                      "3:8,4:8,5:8) or a larger --epsilon.", file=sys.stderr)
        result.save(args.out)
        print(f"sparsity per layer ({result.method}): "
              f"{[round(r, 4) for r in result.ratios]}\nglobal: {result.global_sparsity:.6f}")
        if result.method == "search":
            _print_search(result.parameters, args.out)
    print(f"wrote {args.out}")
    return 0


def _allocate_ranks(args, scores: dict | None, model, fingerprint, options: dict) -> int:
    from ..allocation.api import allocate_ranks
    from ..lora import lora_config, lora_config_path

    result = allocate_ranks(args.method, args.budget, model, min_rank=args.min_rank,
                            multiple_of=args.multiple_of, scores=scores,
                            model_name=args.model or (scores or {}).get("model"),
                            fingerprint=fingerprint, **options)
    config = lora_config(result, args.alpha_per_rank, args.dropout)
    from peft import LoraConfig  # refuse here, not at training, what peft would not take

    LoraConfig(**config)
    result.save(args.out, companions=[(lora_config_path(args.out), config)])
    print(f"ranks per layer ({result.method}, total {result.budget}): {result.ranks}")
    print(f"wrote {args.out} and {lora_config_path(args.out)}")
    return 0


def _print_search(record: dict, out: str) -> None:
    """The search's answer in a few lines, and its trajectory plotted beside --out."""
    from pathlib import Path

    from ..report import plot_search_trajectories

    final, conv = record["final"], record["convergence"]
    low, high = final["interval"]
    kind = record["fitness"]["kind"]
    print(f"search from {record['start']}: {kind} {final['start_fitness']:.4f} -> "
          f"{final['fitness']:.4f} [{low:.4f}, {high:.4f}] on {record['fitness']['tokens']} "
          f"held tokens (gain {final['gain']:.4f} [{final['gain_interval'][0]:.4f}, "
          f"{final['gain_interval'][1]:.4f}]), answer of generation {final['generation']} of "
          f"{conv['generations']} ({conv['stopped']}); last tenth improved "
          f"{conv['last_tenth_improvement']:.4f}: "
          f"{'converged' if conv['converged'] else 'NOT converged'}")
    print(f"{record['tokens']:,} candidate tokens, database {record['database']['seconds']:.0f} s"
          f", search {record['search_seconds']:.0f} s")
    plot = Path(out).with_suffix(".search.png")
    plot_search_trajectories({f"from {record['start']}": record}, plot)
    print(f"wrote {plot}")
