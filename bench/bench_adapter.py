"""What one adapter's training step costs, and where: LoRA-MoE against plain peft LoRA at the same
trainable parameter count, on real batches of a task in the instruction format.

    .venv/bin/python bench/bench_adapter.py --model smollm2-135m --task boolq [--repeats 3]

Timed in the same run, alternating (after a warm-up step each), on the same batches: the uniform
LoRA-MoE (total/layers experts of rank 8, top-2), plain LoRA through peft at the matched rank
(`moe.reference.matched_rank`, the baseline), a one-expert LoRA-MoE of rank 8 and peft LoRA of
rank 8 (the adapters' own arithmetic: their difference to the frozen model's forward and
backward). Prints each one's median seconds per step, tokens per second and ratio to the
baseline; the padded share of the batches plain and grouped by length; writes
bench/results/adapter-MODEL-TASK.json and .md."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="built-in name, folder or .gguf")
    parser.add_argument("--task", default="boolq", help="a task with an instruction format")
    parser.add_argument("--rows", default="0:64", help="fine-tuning rows timed (default 0:64)")
    parser.add_argument("--total", type=int, default=120, help="experts over all layers")
    parser.add_argument("--batch-size", type=int, default=4, help="examples per step")
    parser.add_argument("--max-length", type=int, default=384, help="tokens per example")
    parser.add_argument("--steps", type=int, default=4, help="steps per timing (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per adapter")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; 1 beside another heavy job)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from layerif.data import batch_losses, encode_examples, load_instruct, make_batches
    from layerif.lora import wrap_lora
    from layerif.models import discover_blocks, load_model
    from layerif.moe import MoEConfig, apply_lora_moe, matched_rank, plain_lora_config
    from layerif.training import epoch_batches

    torch.manual_seed(0)
    _, tokenizer = load_model(args.model, device="cpu")
    items = load_instruct(f"{args.task}:validation[{args.rows}]")
    encoded = encode_examples([it.example() for it in items], tokenizer, args.max_length)
    lengths = [len(e.input_ids) for e in encoded]

    def padded_share(grouped: bool) -> float:
        groups = epoch_batches(lengths, args.batch_size, torch.Generator().manual_seed(0),
                               grouped)
        padded = sum(len(g) * max(lengths[i] for i in g) for g in groups)
        return 1 - sum(lengths) / padded

    groups = epoch_batches(lengths, args.batch_size, torch.Generator().manual_seed(0))
    batches = [make_batches([encoded[i] for i in g], len(g), tokenizer.pad_token_id)[0]
               for g in groups][: args.steps]
    tokens = sum(int(b.attention_mask.sum()) for b in batches)

    def fresh():
        model, _ = load_model(args.model, device="cpu")
        return model

    layers = len(discover_blocks(fresh()))
    uniform = MoEConfig(experts=[args.total // layers] * layers)
    rank, plain_params, moe_params = matched_rank(fresh(), uniform)

    def moe(config):
        model = fresh()
        apply_lora_moe(model, config)
        return model

    def peft(r):
        model = fresh()
        return wrap_lora(model, plain_lora_config(model, r, scaling=2.0, dropout=0.05,
                                                  targets=uniform.targets))

    adapters = {
        f"peft LoRA r{rank} (baseline)": peft(rank),
        f"LoRA-MoE uniform {args.total // layers}x r8": moe(uniform),
        "LoRA-MoE 1x r8": moe(MoEConfig(experts=[1] * layers, top_k=1)),
        "peft LoRA r8": peft(8),
    }

    def run_steps(model) -> float:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=1e-4)
        model.train()
        start = time.perf_counter()
        for batch in batches:
            loss = batch_losses(model, batch).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    for model in adapters.values():  # warm-up
        run_steps(model)
    times: dict[str, list[float]] = {name: [] for name in adapters}
    for _ in range(args.repeats):
        for name, model in adapters.items():
            times[name].append(run_steps(model))
    baseline = statistics.median(times[next(iter(adapters))])
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        rows.append({"adapter": name, "seconds_per_step": median / len(batches),
                     "tokens_per_second": tokens / median, "ratio_to_baseline": median / baseline,
                     "trainable": sum(p.numel() for p in adapters[name].parameters()
                                      if p.requires_grad)})
    result = {"model": args.model, "task": args.task, "rows": args.rows,
              "batch_size": args.batch_size, "max_length": args.max_length,
              "steps": len(batches), "tokens": tokens, "repeats": args.repeats,
              "threads": torch.get_num_threads(), "matched_rank": rank,
              "plain_parameters": plain_params, "mixture_parameters": moe_params,
              "padded_share": {"plain": padded_share(False), "grouped": padded_share(True)},
              "mean_tokens_per_example": sum(lengths) / len(lengths), "adapters": rows}
    out = ROOT / "bench" / "results" / f"adapter-{Path(args.model).stem}-{args.task}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [f"# one adapter's training step: {args.model}, {args.task} {args.rows}", "",
             f"{len(batches)} steps of {args.batch_size} examples ({tokens} tokens), median of "
             f"{args.repeats}, {torch.get_num_threads()} threads; padded share of the batches "
             f"{100 * result['padded_share']['plain']:.0f}% plain, "
             f"{100 * result['padded_share']['grouped']:.0f}% grouped by length.", "",
             "| adapter | trainable | s/step | tokens/s | x baseline |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['adapter']} | {r['trainable'] / 1e6:.2f}M | "
                     f"{r['seconds_per_step']:.2f} | {r['tokens_per_second']:.0f} | "
                     f"{r['ratio_to_baseline']:.2f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
