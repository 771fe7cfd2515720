"""Generative accuracy, as the paper measures its LoRA-MoE models: each item's Alpaca prompt
(data/instruct.py) is greedily decoded for a few tokens, the stated answer is read from the
response and matched exactly with the gold one; no readable answer counts as wrong.

Prompts are left-padded into batches of similar length (`generate` needs the new tokens at the
end of every row); a batch gives the same tokens as one prompt at a time (tested).
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..data import TaskSpec, extract_answer, load_instruct
from ..data.instruct import few_shot_prompt

MAX_NEW_TOKENS = 10  # "Answer: not_equivalent." and "The answer is B." fit in SmolLM2 tokens


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: list[str], *, max_new_tokens: int = MAX_NEW_TOKENS,
                    max_length: int = 256, batch_size: int = 8, progress: bool = False
                    ) -> list[str]:
    """The greedy continuation (decoded text, special tokens dropped) of every prompt; a prompt
    longer than max_length - max_new_tokens tokens loses tokens on the left, as in training."""
    from transformers import GenerationConfig

    keep = max(1, max_length - max_new_tokens)
    ids = [tokenizer(p, add_special_tokens=True, verbose=False)["input_ids"][-keep:]
           for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                              eos_token_id=tokenizer.eos_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[str] = [""] * len(ids)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="generating", disable=not progress, leave=False):
        chunk = order[start:start + batch_size]
        width = max(len(ids[i]) for i in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            input_ids[row, width - len(ids[i]):] = torch.tensor(ids[i])
            attention[row, width - len(ids[i]):] = 1
        generated = model.generate(input_ids=input_ids.to(device),
                                   attention_mask=attention.to(device),
                                   generation_config=config)
        for row, i in enumerate(chunk):
            out[i] = tokenizer.decode(generated[row, width:], skip_special_tokens=True)
    model.train(was_training)
    return out


def evaluate_generation(model, tokenizer, specs: list[TaskSpec], *, batch_size: int = 8,
                        max_new_tokens: int = MAX_NEW_TOKENS, max_length: int = 256,
                        progress: bool = True, shots: dict[str, str] | None = None) -> dict:
    """{"tasks": {task: {gen_acc, gen_acc_stderr, gen_unanswered, n, slice, generations,
    per_item: {gen_acc: [0/1 per item in row order]}}}, "mean": {"gen_acc"}}; `generations`
    lists every item's origin, response and answers. shots: task -> the spec of rows whose
    prompts and gold responses precede every prompt of that task (`few_shot_prompt`; recorded as
    the task's "shots", their origins)."""
    tasks = {}
    for spec in specs:
        items = load_instruct(spec)
        examples = load_instruct((shots or {})[spec.task]) if spec.task in (shots or {}) else []
        responses = generate_greedy(model, tokenizer,
                                    [few_shot_prompt(examples, it.prompt) for it in items],
                                    max_new_tokens=max_new_tokens, max_length=max_length,
                                    batch_size=batch_size, progress=progress)
        predicted = [extract_answer(r, it.lettered) for r, it in zip(responses, items, strict=True)]
        # extract_answer returns letters upper-cased and labels lower-cased
        hits = [p == (it.answer if it.lettered else it.answer.lower())
                for p, it in zip(predicted, items, strict=True)]
        n = len(items)
        acc = sum(hits) / n
        tasks[spec.task] = {
            "slice": str(spec), "n": n, "gen_acc": acc,
            # lm-eval's stderr of a mean: sample standard deviation / sqrt(n)
            "gen_acc_stderr": math.sqrt(acc * (1 - acc) / (n - 1)) if n > 1 else 0.0,
            "gen_unanswered": sum(p is None for p in predicted) / n,
            "per_item": {"gen_acc": [int(h) for h in hits]},
            **({"shots": [shot.origin for shot in examples]} if examples else {}),
            "generations": [{"origin": it.origin, "response": r, "predicted": p,
                             "gold": it.answer} for it, r, p in zip(items, responses, predicted,
                                                                     strict=True)],
        }
    mean = {"gen_acc": sum(t["gen_acc"] for t in tasks.values()) / len(tasks)}
    return {"tasks": tasks, "mean": mean}
