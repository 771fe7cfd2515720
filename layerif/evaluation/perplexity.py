"""Perplexity on held text as the pruning literature computes it (Wanda, SparseGPT, OWL,
AlphaPruning): the text tokenised once, cut into non-overlapping windows of `seqlen` tokens, the
last partial window dropped (its token count recorded), each window scored on its own at batch
size 1; perplexity = exp(total NLL / predicted tokens), seqlen - 1 predictions per window (the
same number as their exp(mean of per-window mean NLL)). Per-window NLL sums are kept, so two
models can be compared window by window (evaluation/paired.py)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import DataError

MAX_SEQLEN = 2048  # the literature's window; longer contexts are capped to it


def default_seqlen(model) -> int:
    """The model's context length capped at 2048 tokens (Wanda/SparseGPT's `model.seqlen`)."""
    config = model.config
    context = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None) or MAX_SEQLEN
    return min(int(context), MAX_SEQLEN)


@torch.no_grad()
def window_nll(model, window: torch.Tensor) -> tuple[float, int]:
    """(summed next-token NLL in nats, predicted tokens) of one (T,) or (1, T) token window."""
    chunk = window.reshape(1, -1).to(next(model.parameters()).device)
    logits = model(input_ids=chunk).logits[0, :-1].float()
    return float(F.cross_entropy(logits, chunk[0, 1:], reduction="sum")), chunk.shape[1] - 1


def windows_perplexity(model, windows) -> float:
    """exp(total NLL / total predicted tokens) over token windows, each scored on its own."""
    nll, count = map(sum, zip(*(window_nll(model, w) for w in windows), strict=True))
    return math.exp(nll / count)


def perplexity(model, tokenizer, text: str, seqlen: int, max_windows: int | None = None,
               source: str = "the text") -> dict:
    """{"perplexity", "tokens" (predicted), "window" (seqlen), "windows", "dropped_tokens"
    (the partial last window's), "window_nll" (per window, nats)} of `model` on `text`."""
    if seqlen < 2:
        raise DataError(f"--ppl-seqlen must be >= 2, got {seqlen}.")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    n = len(ids) // seqlen
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise DataError(f"{source}: {len(ids)} tokens, fewer than one window of {seqlen}; give "
                        "more text or a shorter --ppl-seqlen.")
    flat = torch.tensor(ids[: n * seqlen])
    nlls = [window_nll(model, flat[i * seqlen : (i + 1) * seqlen])[0] for i in range(n)]
    tokens = n * (seqlen - 1)
    return {"perplexity": math.exp(sum(nlls) / tokens), "tokens": tokens, "window": seqlen,
            "windows": n, "dropped_tokens": len(ids) - n * seqlen, "window_nll": nlls}
