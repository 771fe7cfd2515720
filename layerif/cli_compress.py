"""CLI commands for allocation, pruning and evaluation: `allocate sparsity|experts|ranks`,
`prune`, `eval`, `export-recipe` (the adapter commands are in cli_adapters). Thin wrappers over
layerif.allocation, layerif.pruning and layerif.evaluation."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict

from .allocation.api import (
    SparsityAllocation,
    allocate_experts,
    allocate_sparsity,
    load_scores,
    recipe_yaml,
)
from .allocation.expert_methods import EXPERT_METHODS, make_expert_method, make_rank_method
from .allocation.sparsity_methods import SPARSITY_METHODS, make_sparsity_method
from .cli_adapters import add_commands as adapter_commands
from .cli_adapters import add_rank_kind, cmd_allocate_ranks
from .cli_args import add_aggregate, add_device_dtype, resolve_device
from .data.calibration import DEFAULT_CALIBRATION, DEFAULT_PERPLEXITY, calibration_samples
from .errors import LayerIFError
from .options import add_flags, chosen_options
from .pruning.pruners import PRUNERS, make_pruner


def add_commands(sub) -> dict:
    alloc = sub.add_parser("allocate", help="per-layer sparsity ratios or expert counts")
    kinds = alloc.add_subparsers(dest="kind", required=True)

    sp = kinds.add_parser("sparsity", help="per-layer sparsity ratios (alloc.json)")
    sp.add_argument("--method", required=True, choices=SPARSITY_METHODS,
                    help="how ratios are allocated across layers")
    sp.add_argument("--sparsity", type=float, required=True, help="global target in [0, 1)")
    sp.add_argument("--scores", help="DIR/scores.json from `layerif score` (method layerif)")
    add_aggregate(sp, None, "which saved aggregate to use (default: the file's `scores`)")
    sp.add_argument("--model", help="model (default: the one named in --scores)")
    _calibration_args(sp)
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
    add_rank_kind(kinds)

    pr = sub.add_parser("prune", help="prune a model with an allocation (HF folder + pruning.json)")
    pr.add_argument("--model", required=True, help="the model to prune (name, folder, .gguf)")
    pr.add_argument("--allocation", required=True, help="alloc.json")
    pr.add_argument("--pruner", required=True, choices=list(PRUNERS),
                    help="how weights are chosen within a layer")
    _mask_structure_arg(pr, "prune every layer N:M (N zeros in every M consecutive inputs of "
                        "a row; 2:4 when given alone); the allocation must be uniform at N/M. "
                        "For per-layer patterns use `allocate sparsity --patterns`")
    _calibration_args(pr)
    add_device_dtype(pr, "where each block is pruned (the model waits on the CPU)")
    add_flags(pr, PRUNERS)
    pr.add_argument("--quiet", action="store_true", help="no progress bars")
    pr.add_argument("--out", required=True, help="output folder (a Hugging Face model folder)")

    ev = sub.add_parser("eval", help="zero-shot accuracy (lm-evaluation-harness) and perplexity")
    ev.add_argument("--model", required=True, help="model name, folder (e.g. a pruned DIR)")
    ev.add_argument("--tasks", default="boolq,rte,hellaswag,winogrande,arc_easy,arc_challenge,"
                    "openbookqa", help="comma-separated built-in tasks (default: the seven "
                    "pruning tasks)")
    group = ev.add_mutually_exclusive_group()
    group.add_argument("--limit", type=int, default=200,
                       help="the last N validation rows of each task (default 200)")
    group.add_argument("--slice", help="rows a:b of each task's validation split")
    ev.add_argument("--ppl", default=DEFAULT_PERPLEXITY,
                    help="held text for perplexity: a file or task spec ('none' to skip; "
                    f"default {DEFAULT_PERPLEXITY}, disjoint by content from the default "
                    "calibration and evaluation data)")
    ev.add_argument("--exclude-scores", action="append", default=[],
                    help="scores.json whose train/val slices must not be evaluated on")
    ev.add_argument("--batch-size", type=int, default=8, help="lm-eval batch size")
    ev.add_argument("--adapter", help="an adapter folder: a peft LoRA (`layerif finetune-lora`, "
                    "peft's save_pretrained) or a LoRA-MoE (`layerif finetune-moe`)")
    ev.add_argument("--generate", action="store_true",
                    help="add generative accuracy (instruction format, greedy decoding, the "
                    "stated answer matched), the paper's metric for fine-tuned adapters")
    add_device_dtype(ev)
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.add_argument("--out", required=True, help="results.json")

    rc = sub.add_parser("export-recipe", help="an allocation as an llm-compressor recipe")
    rc.add_argument("--allocation", required=True, help="alloc.json from `allocate sparsity`")
    rc.add_argument("--model", help="model (default: the allocation's)")
    rc.add_argument("--modifier", default="sparsegpt", choices=("sparsegpt", "wanda"),
                    help="llm-compressor modifier (default sparsegpt)")
    _mask_structure_arg(rc, "the modifiers' mask_structure (default: the allocation's N:M "
                        "pattern if every layer has the same one, else unstructured)")
    _calibration_args(rc)
    rc.add_argument("--write-calibration", metavar="FILE.jsonl",
                    help="also write the calibration windows (one {\"input_ids\": [...]} per "
                    "line) for llm-compressor's oneshot, so both prune on the same tokens")
    rc.add_argument("--out", required=True, help="recipe.yaml")
    return {"allocate": _cmd_allocate, "prune": _cmd_prune, "export-recipe": _cmd_recipe,
            "eval": _cmd_eval, **adapter_commands(sub)}


def _cmd_eval(args) -> int:
    from .evaluation import evaluate_model, evaluation_specs
    from .io import check_writable, write_json
    from .models import load_model

    check_writable(args.out)
    specs = evaluation_specs([t.strip() for t in args.tasks.split(",") if t.strip()],
                             limit=args.limit, rows=args.slice)
    from .lora import is_peft_adapter, load_peft_adapter
    from .moe import load_adapters

    peft = is_peft_adapter(args.adapter) if args.adapter else False  # before loading a model
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    if peft:
        model = load_peft_adapter(model, args.adapter)
    elif args.adapter:
        load_adapters(model, args.adapter)
        model.eval()
    result = evaluate_model(model, tokenizer, specs, model_name=args.model,
                            batch_size=args.batch_size,
                            ppl=None if args.ppl == "none" else args.ppl,
                            check_against=args.exclude_scores, adapter=args.adapter,
                            generate=args.generate, progress=not args.quiet)
    result["dtype"], result["device"] = args.dtype, str(next(model.parameters()).device)
    write_json(args.out, result)
    for task, r in [*result["tasks"].items(), ("mean", result["mean"])]:
        cells = "   ".join(f"{k} {r[k]:.4f}" for k in ("acc", "acc_norm", "gen_acc") if k in r)
        print(f"{task:15s} {cells}" + (f"   n={r['n']}  {r['slice']}" if "n" in r else ""))
    if "perplexity" in result:
        ppl = result["perplexity"]
        print(f"perplexity {ppl['perplexity']:.3f} on {args.ppl} ({ppl['tokens']} tokens)")
    print(f"wrote {args.out}")
    return 0


def _calibration_args(p) -> None:
    p.add_argument("--calibration", default=DEFAULT_CALIBRATION,
                   help=f"calibration text: a file or task spec (default {DEFAULT_CALIBRATION})")
    p.add_argument("--nsamples", type=int, default=128, help="calibration windows (default 128)")
    p.add_argument("--seqlen", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seeds the windows' positions")


def _mask_structure_arg(p, help: str) -> None:
    p.add_argument("--mask-structure", nargs="?", const="2:4", default=None, metavar="N:M",
                   help=help)


def _model_name(args, scores) -> str:
    name = args.model or (scores or {}).get("model")
    if not name:
        raise LayerIFError("give --model (or --scores from `layerif score`).")
    return name


def _allocation_model(name: str, needs_weights: bool):
    """(model, fingerprint): the full model where the method reads weights or activations, else
    its skeleton from the config, the fingerprint then read from the weight files."""
    from .fingerprint import fingerprint_from_files, model_fingerprint
    from .models import load_model, load_skeleton

    if needs_weights:
        model = load_model(name, device="cpu")[0]
        return model, model_fingerprint(model, name)
    return load_skeleton(name), fingerprint_from_files(name)


def _cmd_allocate(args) -> int:
    from .data.provenance import content_set
    from .io import check_writable
    from .models import load_tokenizer

    check_writable(args.out)
    scores = load_scores(args.scores, args.aggregate) if args.scores else None
    if args.kind == "ranks":
        options = chosen_options(args, EXPERT_METHODS, args.method, "method")
        make_rank_method(args.method, **options)  # refuse bad options before loading
        model, fingerprint = _allocation_model(_model_name(args, scores),
                                               args.method == "alphalora")
        return cmd_allocate_ranks(args, scores, model, fingerprint, options)
    if args.kind == "experts":
        options = chosen_options(args, EXPERT_METHODS, args.method, "method")
        make_expert_method(args.method, **options)  # refuse bad options before loading
        model = fingerprint = None
        if args.model or args.method == "alphalora":
            model, fingerprint = _allocation_model(_model_name(args, scores),
                                                   args.method == "alphalora")
        result = allocate_experts(args.method, args.total, scores=scores, model=model,
                                  model_name=args.model, fingerprint=fingerprint, **options)
        result.save(args.out)
        print(f"experts per layer ({result.method}, total {result.total}): {result.experts}")
    else:
        options = chosen_options(args, SPARSITY_METHODS, args.method, "method")
        make_sparsity_method(args.method, **options)  # refuse bad options before loading
        name = _model_name(args, scores)
        needs = SPARSITY_METHODS[args.method].needs
        model, fingerprint = _allocation_model(name, "weights" in needs)
        samples = calibration_set = None
        if "calibration" in needs:
            samples = calibration_samples(load_tokenizer(name), args.calibration, args.nsamples,
                                          args.seqlen, args.seed)
            calibration_set = content_set(args.calibration, "calibration").to_dict()
        result = allocate_sparsity(
            args.method, args.sparsity, model=model, model_name=name, scores=scores,
            calibration=samples, calibration_set=calibration_set, fingerprint=fingerprint,
            **options)
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
    print(f"wrote {args.out}")
    return 0


def _cmd_prune(args) -> int:
    from .data.provenance import check_disjoint, content_set
    from .evaluation.overlap import allocation_sets
    from .fingerprint import check_same_model, model_fingerprint
    from .io import check_writable
    from .models import discover_blocks, load_model
    from .pruning.prune import prune_model, save_pruned

    check_writable(args.out)
    pruner_options = chosen_options(args, PRUNERS, args.pruner, "pruner")
    pruner = make_pruner(args.pruner, **pruner_options)
    alloc = SparsityAllocation.load(args.allocation)
    patterns = _prune_patterns(alloc, args.allocation, args.mask_structure)
    recorded = allocation_sets(asdict(alloc), args.allocation)
    calibration = None
    if pruner.needs_calibration:  # refuse leaking calibration data before loading anything
        calibration_set = content_set(args.calibration, "calibration")
        check_disjoint([calibration_set], recorded)
        recorded.append(calibration_set)
        calibration = {"source": args.calibration, "nsamples": args.nsamples,
                       "seqlen": args.seqlen, "seed": args.seed}
    start = time.perf_counter()
    model, tokenizer = load_model(args.model, device="cpu", dtype=args.dtype)
    n_blocks = len(discover_blocks(model))
    if len(alloc.ratios) != n_blocks:
        raise LayerIFError(
            f"{args.allocation} has {len(alloc.ratios)} layer ratios but {args.model} has "
            f"{n_blocks} blocks; allocate for this model."
        )
    fingerprint = model_fingerprint(model, args.model)
    check_same_model(alloc.model_fingerprint, fingerprint, args.allocation)
    samples = []
    if calibration is not None:
        samples = calibration_samples(tokenizer, args.calibration, args.nsamples, args.seqlen,
                                      args.seed)
    load_s = time.perf_counter() - start
    report = prune_model(model, alloc.ratios, pruner, samples,
                         device=resolve_device(args.device), progress=not args.quiet,
                         patterns=patterns)
    info = {
        "model": args.model, "pruner": args.pruner, "pruner_arguments": asdict(pruner.args),
        "allocation": asdict(alloc),
        "patterns": patterns, "mask_structure": args.mask_structure,
        "calibration": calibration, "achieved": report.achieved,
        "global_achieved": _global(report.achieved, model),
        "dtype": args.dtype, "device": str(resolve_device(args.device)),
        "model_fingerprint": fingerprint,
        "pruned_fingerprint": model_fingerprint(model, args.out),
        "provenance": [c.to_dict() for c in recorded],
        "seconds": {"load": round(load_s, 3), **{k: round(v, 3) for k, v in
                                                 report.seconds.items()}},
    }
    out = save_pruned(model, tokenizer, args.out, info)
    print(f"pruned {args.model} with {args.pruner} to {info['global_achieved']:.4f} "
          f"(target {alloc.sparsity}); wrote {out}")
    return 0


def _prune_patterns(alloc: SparsityAllocation, path: str, mask_structure: str | None
                    ) -> list[str]:
    """The per-layer patterns a prune applies: the allocation's, or N:M everywhere for
    --mask-structure (refused unless the allocation asks N/M of every layer)."""
    from .pruning.pruners import parse_structure

    if mask_structure is None:
        return list(alloc.patterns)
    structure = parse_structure(mask_structure)
    if structure is None:
        return list(alloc.patterns)
    if alloc.patterns:
        raise LayerIFError(f"{path} already sets a pattern per layer; drop --mask-structure.")
    level = structure[0] / structure[1]
    if any(abs(r - level) > 1e-6 for r in alloc.ratios):
        raise LayerIFError(
            f"--mask-structure {mask_structure} prunes every layer to {level:g}, but {path} "
            f"allocates {min(alloc.ratios):.4f} to {max(alloc.ratios):.4f}; allocate uniform at "
            f"{level:g}, or choose per-layer patterns with `allocate sparsity --patterns "
            f"dense,{mask_structure},...`.")
    return [mask_structure] * len(alloc.ratios)


def _global(achieved: dict, model) -> float:
    from .models import discover_blocks

    sizes = {m.name: m.numel for b in discover_blocks(model) for m in b.matrices}
    return sum(achieved[n] * sizes[n] for n in sizes) / sum(sizes.values())


def _cmd_recipe(args) -> int:
    from .io import check_writable, write_text
    from .models import discover_blocks, load_skeleton

    check_writable(args.out)
    alloc = SparsityAllocation.load(args.allocation)
    skeleton = load_skeleton(args.model or alloc.model)  # block paths from the config only
    calibration = {"source": args.calibration, "nsamples": args.nsamples,
                   "seqlen": args.seqlen, "seed": args.seed}
    text = recipe_yaml(alloc, [b.path for b in discover_blocks(skeleton)], args.modifier,
                       args.mask_structure, calibration)
    if args.write_calibration:
        import json

        from .models import load_tokenizer

        check_writable(args.write_calibration)
        windows = calibration_samples(load_tokenizer(args.model or alloc.model),
                                      args.calibration, args.nsamples, args.seqlen, args.seed)
        write_text(args.write_calibration, "".join(
            json.dumps({"input_ids": w.reshape(-1).tolist()}) + "\n" for w in windows))
        print(f"wrote {args.write_calibration} ({len(windows)} windows)")
    write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0
