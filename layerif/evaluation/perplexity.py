"""Perplexity on held text: non-overlapping windows, batch size 1."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


@torch.no_grad()
def perplexity(model, tokenizer, text: str, window: int = 512, max_windows: int | None = None
               ) -> dict:
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    if len(ids) < 2:
        raise ValueError("perplexity needs at least two tokens of text")
    nll, count = 0.0, 0
    starts = range(0, len(ids) - 1, window)
    for k, start in enumerate(starts):
        if max_windows is not None and k >= max_windows:
            break
        chunk = torch.tensor(ids[start : start + window])
        if len(chunk) < 2:
            break
        window_sum, predicted = window_nll(model, chunk)
        nll += window_sum
        count += predicted
    return {"perplexity": math.exp(nll / count), "tokens": count, "window": window}
