"""Zero-shot evaluation: multiple-choice accuracy through lm-evaluation-harness, perplexity."""

from __future__ import annotations

import time

from .. import __version__
from ..data import TaskSpec, load_examples, load_rows
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
                   check_against: list[str] = ()) -> dict:
    """Accuracy on `specs` and perplexity on `ppl`; refuses slices overlapping those recorded
    for `model_name` (a pruned folder's calibration and scoring slices) or `check_against`."""
    start = time.perf_counter()
    recorded = recorded_slices(model_name, list(check_against))
    ppl_spec = [TaskSpec.parse(ppl)] if ppl and not ppl.endswith((".jsonl", ".json", ".csv")) \
        else []
    to_check = specs + ppl_spec
    sizes = {s.task: len(load_rows(TaskSpec(s.task, s.split))) for s in to_check}
    check_disjoint(to_check, recorded, sizes)
    result = {"layerif_version": __version__, "model": model_name,
              **evaluate_multiple_choice(model, tokenizer, specs, batch_size)}
    if ppl:
        texts = [e.text if e.text is not None else e.prompt for e in load_examples(ppl)]
        result["perplexity"] = {"source": ppl, **perplexity(model, tokenizer, "\n\n".join(texts))}
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


__all__ = ["PRUNING_TASKS", "evaluate_model", "evaluate_multiple_choice", "evaluation_specs",
           "perplexity"]
