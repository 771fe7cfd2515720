"""Zero-shot evaluation: multiple-choice accuracy through lm-evaluation-harness, perplexity."""

from __future__ import annotations

import time

from .. import __version__
from ..data import TaskSpec, load_examples, load_rows
from .generation import evaluate_generation, generate_greedy
from .harness import evaluate_multiple_choice
from .overlap import check_disjoint, recorded_slices
from .perplexity import perplexity

PRUNING_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                 "openbookqa")
DEFAULT_PPL = "boolq:validation[2000:2200]"


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
                   batch_size: int = 8, ppl: str | None = DEFAULT_PPL,
                   check_against: list[str] = (), adapter: str | None = None,
                   multiple_choice: bool = True, generate: bool = False,
                   progress: bool = True) -> dict:
    """Log-likelihood multiple-choice accuracy (lm-eval; `multiple_choice`), generative accuracy
    (`generate`: the instruction format, greedy decoding) and perplexity on `ppl`, for `specs`.
    Refuses slices overlapping those recorded for `model_name` (a pruned folder's calibration
    and scoring slices), an `adapter` folder (its training slice and scores) or the scores files
    `check_against`."""
    start = time.perf_counter()
    recorded = recorded_slices(model_name, list(check_against), adapter)
    ppl_spec = [TaskSpec.parse(ppl)] if ppl and not ppl.endswith((".jsonl", ".json", ".csv")) \
        else []
    to_check = specs + ppl_spec
    sizes = {s.task: len(load_rows(TaskSpec(s.task, s.split))) for s in to_check}
    check_disjoint(to_check, recorded, sizes)
    if not (multiple_choice or generate):
        raise ValueError("nothing to evaluate: enable multiple_choice or generate.")
    result = {"layerif_version": __version__, "model": model_name, "adapter": adapter,
              "tasks": {s.task: {} for s in specs}, "mean": {}}
    parts = []
    if multiple_choice:
        parts.append(evaluate_multiple_choice(model, tokenizer, specs, batch_size))
    if generate:
        parts.append(evaluate_generation(model, tokenizer, specs, batch_size=batch_size,
                                         progress=progress))
    for part in parts:
        for task, metrics in part["tasks"].items():
            result["tasks"][task].update(metrics)
        result["mean"].update(part["mean"])
    if ppl:
        texts = [e.text if e.text is not None else e.prompt for e in load_examples(ppl)]
        result["perplexity"] = {"source": ppl, **perplexity(model, tokenizer, "\n\n".join(texts))}
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


__all__ = ["PRUNING_TASKS", "evaluate_generation", "evaluate_model", "evaluate_multiple_choice",
           "evaluation_specs", "generate_greedy", "perplexity"]
