"""Perplexity on held text: non-overlapping windows, batch size 1."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def perplexity(model, tokenizer, text: str, window: int = 512, max_windows: int | None = None
               ) -> dict:
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    if len(ids) < 2:
        raise ValueError("perplexity needs at least two tokens of text")
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    starts = range(0, len(ids) - 1, window)
    for k, start in enumerate(starts):
        if max_windows is not None and k >= max_windows:
            break
        chunk = torch.tensor([ids[start : start + window]], device=device)
        if chunk.shape[1] < 2:
            break
        logits = model(input_ids=chunk).logits[0, :-1].float()
        nll += float(F.cross_entropy(logits, chunk[0, 1:], reduction="sum"))
        count += chunk.shape[1] - 1
    return {"perplexity": math.exp(nll / count), "tokens": count, "window": window}
