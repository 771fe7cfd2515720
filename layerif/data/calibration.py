"""Calibration text for pruning: windows of token ids drawn with a fixed seed from any data
source the scoring engine accepts (default: BoolQ's Wikipedia passages from a slice that the
examples of the scoring defaults and the evaluation slices do not use)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataError
from .records import FILE_SUFFIXES
from .sources import load_examples

DEFAULT_CALIBRATION = "boolq:validation[1000:2000]"


def calibration_samples(
    tokenizer, source: str = DEFAULT_CALIBRATION, nsamples: int = 128, seqlen: int = 512,
    seed: int = 0,
) -> list[torch.Tensor]:
    """`nsamples` random windows of `seqlen` tokens from the concatenated texts of `source`
    (for task examples their prompt, i.e. the passage and question; no answers)."""
    if nsamples < 1 or seqlen < 2:
        raise DataError(f"need nsamples >= 1 and seqlen >= 2, got {nsamples}, {seqlen}.")
    from_file = Path(source).suffix.lower() in FILE_SUFFIXES
    texts = [
        e.text if e.text is not None else (e.prompt + e.completion if from_file else e.prompt)
        for e in load_examples(source)
    ]
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False, verbose=False)["input_ids"]
    if len(ids) <= seqlen:
        raise DataError(
            f"{source}: only {len(ids)} tokens of calibration text, fewer than --seqlen "
            f"{seqlen}; give more text or a shorter --seqlen."
        )
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - seqlen, (nsamples,), generator=gen).tolist()
    flat = torch.tensor(ids)
    return [flat[s : s + seqlen].clone() for s in starts]
