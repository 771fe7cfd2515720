"""Tokenisation and batching: the loss contract every estimator relies on.

Per-example loss is the mean token cross-entropy over the counted tokens:
- a `text` example: tokenised with the tokenizer's default special tokens, truncated on the right
  at `max_length`; every predicted token counts (all but the first).
- a `prompt`/`completion` example: the prompt tokenised with default special tokens, the
  completion without, concatenated; past `max_length` the prompt loses tokens on the left first
  (then the completion on the right). Only completion tokens count.
Pads never count. An example with no counted token is an error that names it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import DataError
from .records import Example

IGNORE_INDEX = -100  # label of a token that does not count (transformers' convention)


@dataclass(frozen=True)
class EncodedExample:
    """Token ids and labels (same length; IGNORE_INDEX where a token does not count)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    origin: str
    truncated: bool

    @property
    def n_counted(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels[1:])


def encode_example(example: Example, tokenizer, max_length: int) -> EncodedExample:
    if max_length < 2:
        raise DataError(f"max_length must be at least 2 tokens, got {max_length}.")
    if example.is_pair:
        prompt = tokenizer(example.prompt, add_special_tokens=True, verbose=False)["input_ids"]
        completion = tokenizer(example.completion, add_special_tokens=False, verbose=False)[
            "input_ids"
        ]
        excess = len(prompt) + len(completion) - max_length
        truncated = excess > 0
        if excess > 0:
            cut = min(excess, len(prompt))
            prompt = prompt[cut:]
            completion = completion[: max_length - len(prompt)]
        ids = list(prompt) + list(completion)
        labels = [IGNORE_INDEX] * len(prompt) + list(completion)
        what = "completion"
    else:
        ids = tokenizer(example.text, add_special_tokens=True, verbose=False)["input_ids"]
        truncated = len(ids) > max_length
        ids = list(ids[:max_length])
        labels = list(ids)
        what = "text"
    if labels:
        labels[0] = IGNORE_INDEX  # the first token is never predicted
    encoded = EncodedExample(tuple(ids), tuple(labels), example.origin, truncated)
    if encoded.n_counted == 0:
        raise DataError(
            f"{example.origin}: no token of this example counts in the loss (its {what} gives "
            f"{len(ids)} token(s) after tokenisation and truncation to {max_length}); give it a "
            "longer text/completion or remove it."
        )
    return encoded


def encode_examples(examples: list[Example], tokenizer, max_length: int) -> list[EncodedExample]:
    if not examples:
        raise DataError("no examples to encode.")
    return [encode_example(ex, tokenizer, max_length) for ex in examples]


@dataclass
class Batch:
    """A right-padded batch. indices: positions of its examples in the input list."""

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long, 0 at pads
    labels: torch.Tensor  # (B, T) long, IGNORE_INDEX at pads and uncounted tokens
    indices: torch.Tensor  # (B,) long
    origins: tuple[str, ...]

    def to(self, device) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.labels.to(device),
            self.indices,
            self.origins,
        )


def make_batches(encoded: list[EncodedExample], batch_size: int, pad_id: int) -> list[Batch]:
    """Consecutive examples in input order, padded on the right to the batch's longest."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for row, e in enumerate(chunk):
            n = len(e.input_ids)
            ids[row, :n] = torch.tensor(e.input_ids)
            mask[row, :n] = 1
            labels[row, :n] = torch.tensor(e.labels)
        indices = torch.arange(start, start + len(chunk))
        batches.append(Batch(ids, mask, labels, indices, tuple(e.origin for e in chunk)))
    return batches


def predicting_positions(labels: torch.Tensor) -> torch.Tensor:
    """(K,) positions p whose logits predict a counted token (labels[b, p + 1]) for some b."""
    return (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero().flatten()


def batch_losses(model, batch: Batch) -> torch.Tensor:
    """(B,) per-example losses of a causal LM on `batch` (the contract above). Logits are formed
    only where a counted token is predicted when the model takes `logits_to_keep`: a
    prompt/completion batch needs a few positions, not T x vocab (the LM head and softmax are
    ~30% of a SmolLM2 pass)."""
    positions = predicting_positions(batch.labels) if _keeps_positions(model) else None
    extra = {} if positions is None else {"logits_to_keep": positions}
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False,
                **extra)
    return per_example_loss(out.logits, batch.labels, positions)


def _keeps_positions(model) -> bool:
    """Whether `model` takes `logits_to_keep`; a peft model passes it on to its base model (its
    own forward lists only **kwargs)."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def per_example_loss(
    logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy over each example's counted tokens, in fp32 -> (B,).

    logits: (B, T, V) for every position, or (B, K, V) for `positions` only (the logits at
    position p predict token p + 1); labels: (B, T).
    """
    if positions is None:
        logits, target = logits[:, :-1], labels[:, 1:]
    else:
        target = labels[:, positions + 1]
    counted = target != IGNORE_INDEX
    token_loss = F.cross_entropy(
        logits.float().flatten(0, 1), target.clamp_min(0).flatten(), reduction="none"
    ).view_as(target)
    # where(), not a product: a non-finite value at an uncounted position must not leak in.
    return torch.where(counted, token_loss, 0.0).sum(1) / counted.sum(1).clamp_min(1)
