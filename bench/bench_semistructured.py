"""Forward speed of a 2:4-pruned model against the dense one on a GPU, with PyTorch's
semi-structured sparse kernels (`torch.sparse.to_sparse_semi_structured`, NVIDIA Ampere or
later, fp16/bf16): the figure users ask for before choosing N:M.

    .venv/bin/python bench/bench_semistructured.py --model runs/wanda-2-4 [--batch 8 --seqlen 512]

The model folder is a `layerif prune --mask-structure 2:4` output (or any model whose block
Linear weights are 2:4). Every such weight is converted in place; the embeddings and lm_head stay
dense. Timed with CUDA events after warm-up, median of --repeat runs, both on the same inputs;
prints the two medians, their ratio and the largest logit difference. Without CUDA it says so
and exits 2 (the CPU has no semi-structured kernels)."""

from __future__ import annotations

import argparse
import statistics
import sys

import torch


def timed_forward(model, ids: torch.Tensor, repeat: int) -> tuple[float, torch.Tensor]:
    """(median milliseconds per forward, the logits)."""
    with torch.no_grad():
        for _ in range(3):
            model(ids)
        times = []
        for _ in range(repeat):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            logits = model(ids).logits
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    return statistics.median(times), logits


def is_2_4(W: torch.Tensor) -> bool:
    return W.shape[1] % 4 == 0 and bool(((W.reshape(W.shape[0], -1, 4) == 0).sum(-1) >= 2).all())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a 2:4-pruned Hugging Face folder")
    parser.add_argument("--batch", type=int, default=8, help="sequences per forward (default 8)")
    parser.add_argument("--seqlen", type=int, default=512, help="tokens per sequence (default 512)")
    parser.add_argument("--repeat", type=int, default=20, help="timed forwards (default 20)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA device; semi-structured kernels need an NVIDIA GPU (Ampere or "
              "later).", file=sys.stderr)
        return 2
    from torch.sparse import to_sparse_semi_structured
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float16).cuda().eval()
    gen = torch.Generator("cuda").manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seqlen), device="cuda",
                        generator=gen)
    dense_ms, dense_logits = timed_forward(model, ids, args.repeat)
    converted = 0
    for layer in model.model.layers:
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear) and is_2_4(module.weight.data):
                module.weight = torch.nn.Parameter(to_sparse_semi_structured(module.weight.data),
                                                   requires_grad=False)
                converted += 1
    sparse_ms, sparse_logits = timed_forward(model, ids, args.repeat)
    diff = (sparse_logits.float() - dense_logits.float()).abs().max().item()
    print(f"{converted} matrices converted; dense {dense_ms:.2f} ms, 2:4 {sparse_ms:.2f} ms per "
          f"forward ({args.batch} x {args.seqlen} tokens): speed-up {dense_ms / sparse_ms:.2f}x; "
          f"max logit difference {diff:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
