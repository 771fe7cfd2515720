"""Prune a model with llm-compressor's `oneshot` and a recipe from `layerif export-recipe`, on
calibration windows from `layerif export-recipe --write-calibration`, then report what it did.

Runs in llm-compressor's own environment (it pins its own transformers; scripts/llmcompressor_env.sh
builds one in .venv-llmcompressor), so it does not import layerif:

    .venv-llmcompressor/bin/python scripts/llmcompressor_oneshot.py --model DIR \\
        --recipe recipe.yaml --calibration calib.jsonl --out pruned-llmc [--report r.json]

Prints (and writes to --report) one JSON object: the achieved sparsity of every decoder block's
Linear weights (zeros / entries, in block order), the N:M group check when the recipe asks for
N:M, the seconds oneshot took (calibration and pruning, the save excluded) and whether the saved
folder (llm-compressor's compressed-tensors format, what vLLM loads) reloads to equal weights.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Hugging Face model folder")
    parser.add_argument("--recipe", required=True, help="recipe.yaml from layerif export-recipe")
    parser.add_argument("--calibration", required=True,
                        help="JSONL of {'input_ids': [...]} windows (--write-calibration)")
    parser.add_argument("--out", required=True, help="where oneshot saves the pruned model")
    parser.add_argument("--report", help="also write the JSON report here")
    args = parser.parse_args()

    from datasets import load_dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data = load_dataset("json", data_files=args.calibration, split="train")
    data = data.map(lambda row: {"attention_mask": [1] * len(row["input_ids"])})
    seqlen = len(data[0]["input_ids"])
    start = time.perf_counter()
    oneshot(model=model, recipe=args.recipe, dataset=data, num_calibration_samples=len(data),
            max_seq_length=seqlen, pipeline="sequential")
    seconds = time.perf_counter() - start
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)

    with open(args.recipe) as f:
        stage = next(iter(yaml.safe_load(f).values()))
    modifier = next(iter(stage["sparsity_modifiers"].values()))
    n, m = (int(x) for x in str(modifier.get("mask_structure", "0:0")).split(":"))
    blocks, groups_ok = [], True
    for layer in model.model.layers:
        zeros = total = 0
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear):
                W = module.weight.detach()
                zeros += int((W == 0).sum())
                total += W.numel()
                if m:
                    per_group = (W.reshape(W.shape[0], -1, m) == 0).sum(-1)
                    groups_ok &= bool((per_group >= n).all())
        blocks.append(zeros / total)
    # what a serving stack reads back: the saved (compressed-tensors) folder, decompressed
    saved = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.float32)
    reloads = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                    saved.state_dict().values(), strict=True))
    report = {"block_sparsity": blocks, "seconds": round(seconds, 2), "samples": len(data),
              "seqlen": seqlen, "mask_structure": f"{n}:{m}", "reloads_equal": reloads}
    if m:
        report["every_group_has_n_zeros"] = groups_ok
    text = json.dumps(report)
    print(text)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
