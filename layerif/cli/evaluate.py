"""`layerif eval`: zero-shot accuracy (lm-evaluation-harness), generative accuracy and
perplexity of a model, optionally with an adapter."""

from __future__ import annotations

from ..data.calibration import DEFAULT_PERPLEXITY
from ..errors import LayerIFError
from .commands import command_help
from .common import add_device_dtype, positive_int

NAME = "eval"


def add(sub) -> None:
    ev = sub.add_parser(NAME, help=command_help(NAME))
    ev.add_argument("--model", required=True, help="model name, folder (e.g. a pruned DIR)")
    ev.add_argument("--tasks", default="boolq,rte,hellaswag,winogrande,arc_easy,arc_challenge,"
                    "openbookqa", help="comma-separated built-in tasks (default: the seven "
                    "pruning tasks)")
    group = ev.add_mutually_exclusive_group()
    group.add_argument("--limit", type=positive_int, default=200,
                       help="the last N validation rows of each task (default 200)")
    group.add_argument("--slice", help="rows a:b of each task's validation split")
    ev.add_argument("--ppl", action="append", default=None,
                    help="held text for perplexity, repeatable: wikitext2 or c4 (the hub "
                    "corpora of the pruning literature), a .txt file, a data file or a task "
                    f"spec ('none' to skip; default {DEFAULT_PERPLEXITY}, disjoint by content "
                    "from the default calibration and evaluation data)")
    ev.add_argument("--ppl-seqlen", type=int, default=None,
                    help="tokens per perplexity window (default: the model's context length "
                    "capped at 2048); windows do not overlap, the last partial one is dropped")
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


def run(args) -> int:
    from pathlib import Path

    from ..evaluation import evaluate_model, evaluation_specs
    from ..io import check_writable, write_json
    from ..models import load_model

    if Path(args.out).is_dir():  # refused now, not after the evaluation
        raise LayerIFError(f"{args.out} is a folder; --out takes a file name for the results, "
                           f"e.g. --out {Path(args.out) / 'results.json'}.")
    check_writable(args.out)
    ppl = _ppl_sources(args.ppl)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise LayerIFError(f"--tasks {args.tasks!r} names no task; give comma-separated "
                           "built-in tasks (`layerif tasks` lists them).")
    specs = evaluation_specs(tasks, limit=args.limit, rows=args.slice)
    from ..lora import is_peft_adapter, load_peft_adapter
    from ..moe import load_adapters

    peft = is_peft_adapter(args.adapter) if args.adapter else False  # before loading a model
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    if peft:
        model = load_peft_adapter(model, args.adapter)
    elif args.adapter:
        load_adapters(model, args.adapter)
        model.eval()
    result = evaluate_model(model, tokenizer, specs, model_name=args.model,
                            batch_size=args.batch_size,
                            ppl=ppl, ppl_seqlen=args.ppl_seqlen,
                            check_against=args.exclude_scores, adapter=args.adapter,
                            generate=args.generate, progress=not args.quiet)
    result["dtype"], result["device"] = args.dtype, str(next(model.parameters()).device)
    write_json(args.out, result)
    for task, r in [*result["tasks"].items(), ("mean", result["mean"])]:
        cells = "   ".join(f"{k} {r[k]:.4f}" for k in ("acc", "acc_norm", "gen_acc") if k in r)
        print(f"{task:15s} {cells}" + (f"   n={r['n']}  {r['slice']}" if "n" in r else ""))
    for source, p in result.get("perplexity", {}).items():
        print(f"perplexity {p['perplexity']:.3f} on {source} ({p['windows']} windows of "
              f"{p['window']} tokens, {p['tokens']} predicted)")
    print(f"wrote {args.out}")
    return 0


def _ppl_sources(given: list[str] | None) -> list[str]:
    """The --ppl values (comma-separated lists allowed), the default when none, [] for none."""
    if given is None:
        return [DEFAULT_PERPLEXITY]
    sources = [s.strip() for g in given for s in g.split(",") if s.strip()]
    return [] if sources == ["none"] else sources
