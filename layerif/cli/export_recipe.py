"""`layerif export-recipe`: a sparsity allocation as an llm-compressor recipe (and, optionally,
the calibration windows layerif prunes on)."""

from __future__ import annotations

from .commands import command_help
from .common import add_calibration_args, add_mask_structure_arg

NAME = "export-recipe"


def add(sub) -> None:
    rc = sub.add_parser(NAME, help=command_help(NAME))
    rc.add_argument("--allocation", required=True, help="alloc.json from `allocate sparsity`")
    rc.add_argument("--model", help="model (default: the allocation's)")
    rc.add_argument("--modifier", default="sparsegpt", choices=("sparsegpt", "wanda"),
                    help="llm-compressor modifier (default sparsegpt)")
    add_mask_structure_arg(rc, "the modifiers' mask_structure (default: the allocation's N:M "
                        "pattern if every layer has the same one, else unstructured)")
    add_calibration_args(rc)
    rc.add_argument("--write-calibration", metavar="FILE.jsonl",
                    help="also write the calibration windows (one {\"input_ids\": [...]} per "
                    "line) for llm-compressor's oneshot, so both prune on the same tokens")
    rc.add_argument("--out", required=True, help="recipe.yaml")


def run(args) -> int:
    from ..allocation.api import SparsityAllocation
    from ..data.calibration import calibration_samples
    from ..errors import LayerIFError
    from ..export.llmcompressor import calibration_jsonl, recipe_yaml
    from ..fingerprint import check_same_model, fingerprint_from_files
    from ..io import check_writable, write_text
    from ..models import discover_blocks, load_skeleton

    check_writable(args.out)
    if args.write_calibration:
        check_writable(args.write_calibration, "--write-calibration")
    alloc = SparsityAllocation.load(args.allocation)
    model = args.model or alloc.model
    skeleton = load_skeleton(model)  # block paths from the config only
    n_blocks = len(discover_blocks(skeleton))
    if len(alloc.ratios) != n_blocks:
        raise LayerIFError(f"{args.allocation} has {len(alloc.ratios)} layer ratios but {model} "
                           f"has {n_blocks} blocks; allocate for this model.")
    # As `prune` does: a recipe for other weights than the allocation's is refused.
    check_same_model(alloc.model_fingerprint, fingerprint_from_files(model), args.allocation)
    calibration = {"source": args.calibration, "nsamples": args.nsamples,
                   "seqlen": args.seqlen, "seed": args.seed}
    text = recipe_yaml(alloc, [b.path for b in discover_blocks(skeleton)], args.modifier,
                       args.mask_structure, calibration)
    if args.write_calibration:
        from ..models import load_tokenizer

        windows = calibration_samples(load_tokenizer(args.model or alloc.model),
                                      args.calibration, args.nsamples, args.seqlen, args.seed)
        write_text(args.write_calibration, calibration_jsonl(windows))
        print(f"wrote {args.write_calibration} ({len(windows)} windows)")
    write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0
