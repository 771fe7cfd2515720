"""Zero-shot multiple-choice accuracy through lm-evaluation-harness, offline.

Each task slice is written as a JSONL of multiple-choice items (our task registry's formatting)
next to a generated task YAML (`dataset_path: json`), and lm-eval's `simple_evaluate` scores the
in-memory model through `HFLM`: acc = argmax of the summed log-likelihood of " " + choice,
acc_norm = the same divided by the choice's length in characters (SPEC section 6). Items whose
contexts differ per choice (WinoGrande's partial scoring) use lm-eval's multiple-input form.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..data.sources import TaskSpec, task_rows

METRICS = ("acc", "acc_norm")


def _task_yaml(name: str, data_file: Path, multiple_input: bool) -> str:
    # A column name (not a template) as doc_to_text returns the raw int: lm-eval's multiple-input.
    text, choice, target = (("gold", "contexts", "continuation") if multiple_input
                            else ("'{{context}}'", "choices", "gold"))
    metrics = "".join(
        f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n" for m in METRICS
    )
    return (
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data_file}\ntest_split: test\noutput_type: multiple_choice\n"
        f"doc_to_text: {text}\ndoc_to_choice: {choice}\ndoc_to_target: {target}\n"
        f"metric_list:\n{metrics}"
    )


def write_task(spec: TaskSpec, folder: Path) -> tuple[str, int]:
    """JSONL + YAML for one task slice; returns (lm-eval task name, number of items)."""
    task, rows = task_rows(spec)
    items = [task.multiple_choice(row, origin) for origin, row in rows]
    multiple_input = any(len(set(it.contexts)) > 1 for it in items)
    name = f"layerif_{spec.task}"
    data_file = folder / f"{name}.jsonl"
    with data_file.open("w") as f:
        for it in items:
            # lm-eval puts its target delimiter " " before a continuation; ours carry that space.
            strip = [c[1:] if c.startswith(" ") else c for c in it.continuations]
            f.write(json.dumps({
                "context": it.contexts[0], "contexts": list(it.contexts), "choices": strip,
                "continuation": strip[it.gold], "gold": it.gold,
            }) + "\n")
    (folder / f"{name}.yaml").write_text(_task_yaml(name, data_file, multiple_input))
    return name, len(items)


def evaluate_multiple_choice(model, tokenizer, specs: list[TaskSpec], batch_size: int = 8,
                             ) -> dict:
    """{"tasks": {task: {acc, acc_stderr, acc_norm, acc_norm_stderr, n, slice}}, "mean": {...}}"""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="layerif-lmeval-") as tmp:
        folder = Path(tmp)
        names = {spec.task: write_task(spec, folder) for spec in specs}
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        out = simple_evaluate(model=lm, tasks=[n for n, _ in names.values()],
                              task_manager=TaskManager(include_path=str(folder)),
                              verbosity="ERROR")
    tasks = {}
    for spec in specs:
        name, n = names[spec.task]
        r = out["results"][name]
        tasks[spec.task] = {"slice": str(spec), "n": n,
                            **{k: float(r[f"{k},none"]) for k in METRICS},
                            **{f"{k}_stderr": float(r[f"{k}_stderr,none"]) for k in METRICS}}
    mean = {k: sum(t[k] for t in tasks.values()) / len(tasks) for k in METRICS}
    return {"tasks": tasks, "mean": mean}
