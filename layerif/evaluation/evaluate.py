"""`evaluate_model`: zero-shot accuracy, generative accuracy and perplexity of a model, refusing
evaluation data that shares content with the data that shaped the model."""

from __future__ import annotations

import time
from collections.abc import Sequence

from .. import __version__
from ..data import TaskSpec, load_rows
from ..data.calibration import DEFAULT_PERPLEXITY, perplexity_text
from ..data.provenance import check_disjoint, content_set
from .generation import evaluate_generation
from .harness import evaluate_multiple_choice
from .overlap import recorded_sets
from .perplexity import default_seqlen, perplexity

PRUNING_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                 "openbookqa")
DEFAULT_PPL = DEFAULT_PERPLEXITY


def evaluation_specs(tasks: list[str], limit: int | None = 200, rows: str | None = None
                     ) -> list[TaskSpec]:
    """One validation slice per task: `rows` ("a:b") for all, else the last `limit` rows (the
    end of each split, away from the slices scoring and calibration default to)."""
    specs = []
    for task in tasks:
        if rows is not None:
            specs.append(TaskSpec.parse(f"{task}:validation[{rows}]"))
            continue
        n = len(load_rows(TaskSpec(task)))
        start = max(0, n - limit) if limit else 0
        specs.append(TaskSpec(task, "validation", start, n))
    return specs


def evaluate_model(model, tokenizer, specs: list[TaskSpec], *, model_name: str = "",
                   batch_size: int = 8, ppl: str | Sequence[str] | None = DEFAULT_PPL,
                   ppl_seqlen: int | None = None,
                   check_against: list[str] = (), adapter: str | None = None,
                   multiple_choice: bool = True, generate: bool = False,
                   max_length: int = 256, progress: bool = True,
                   shots: dict[str, str] | None = None) -> dict:
    """Log-likelihood multiple-choice accuracy (lm-eval's own tasks; `multiple_choice`),
    generative accuracy (`generate`: the instruction format, greedy decoding) and perplexity on
    each source of `ppl` (a name, file or task spec, or several; windows of `ppl_seqlen`
    tokens, default the model's context capped at 2048), for `specs`. Before any model pass,
    refuses evaluation or perplexity data sharing content with the sets recorded by
    `model_name` (a pruned folder's pruning.json), `adapter` (its training.json) or the scores
    files `check_against`. result["perplexity"] maps each ppl source to its figures.
    max_length: tokens of a generative prompt plus its answer (longer prompts lose tokens on the
    left, as fine-tuning cuts them; give the fine-tuning's max_length). shots: task -> rows
    shown as worked examples before each generative prompt (refused where they share content
    with the evaluation rows)."""
    if not (multiple_choice or generate):
        raise ValueError("nothing to evaluate: enable multiple_choice or generate.")
    start = time.perf_counter()
    ppl_sources = [ppl] if isinstance(ppl, str) else list(ppl or [])
    new = [content_set(str(s), "evaluation") for s in specs]
    new += [content_set(source, "perplexity") for source in ppl_sources]
    check_disjoint(new, recorded_sets(model_name or None, list(check_against), adapter))
    if shots:
        check_disjoint([content_set(s, "shots") for s in shots.values()],
                       [content_set(str(s), "evaluation") for s in specs])
    result = {"layerif_version": __version__, "model": model_name, "adapter": adapter,
              "tasks": {s.task: {} for s in specs}, "mean": {},
              "provenance": [s.to_dict() for s in new]}
    parts = []
    if multiple_choice:
        parts.append(evaluate_multiple_choice(model, tokenizer, specs, batch_size))
    if generate:
        parts.append(evaluate_generation(model, tokenizer, specs, batch_size=batch_size,
                                         max_length=max_length, progress=progress,
                                         shots=shots))
    for part in parts:
        for task, metrics in part["tasks"].items():
            per_item = result["tasks"][task].get("per_item", {}) | metrics.get("per_item", {})
            result["tasks"][task].update(metrics)
            if per_item:  # each part keeps per-item results under its own metric names
                result["tasks"][task]["per_item"] = per_item
        result["mean"].update(part["mean"])
    if ppl_sources:
        seqlen = ppl_seqlen or default_seqlen(model)
        result["perplexity"] = {}
        for source in ppl_sources:
            text, max_windows = perplexity_text(source)
            result["perplexity"][source] = perplexity(model, tokenizer, text, seqlen,
                                                      max_windows, source)
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result
