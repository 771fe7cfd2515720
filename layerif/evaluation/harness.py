"""Zero-shot multiple-choice accuracy through lm-evaluation-harness's own task definitions.

For each task slice, a YAML that `include`s the registered task (its prompt, choices, target,
metrics and document processing: nothing re-typed) overrides only where the documents come from:
a JSONL of the slice's packaged rows, mapped into the fields that task reads (`TaskConfig
.to_lm_eval`; BoolQ's packaged copy says `answer`, lm-eval's `label`). lm-eval's
`simple_evaluate` then scores the in-memory model through `HFLM`. Each task reports the metrics
its definition lists (acc for all; acc_norm where lm-eval defines it).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from ..data.sources import TaskSpec, task_rows
from ..data.tasks import get_task
from ..errors import DataError

METRICS = ("acc", "acc_norm")


def lm_eval_tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def lm_eval_name(task: str) -> str:
    return f"layerif_{task}"


def _task_yaml(include: Path, name: str, data_file: Path) -> str:
    # Everything below overrides the included definition: the data source and the splits only.
    return (
        f"include: {include}\ntask: {name}\ntag: []\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {data_file}\n"
        "training_split: null\nvalidation_split: validation\ntest_split: null\n"
        "fewshot_split: null\n"
    )


def write_task(spec: TaskSpec, folder: Path) -> tuple[str, int]:
    """JSONL + YAML for one task slice; returns (lm-eval task name, number of items)."""
    task, rows = task_rows(spec)
    include = lm_eval_tasks_dir() / task.lm_eval_yaml
    if not task.lm_eval_yaml or not include.is_file():
        raise DataError(f"task {task.name!r}: lm-evaluation-harness's definition {include} is "
                        "missing; install the lm_eval version scripts/constraints.txt names.")
    name = lm_eval_name(spec.task)
    data_file = folder / f"{name}.jsonl"
    with data_file.open("w") as f:
        for _origin, row in rows:
            f.write(json.dumps(task.to_lm_eval(dict(row))) + "\n")
    (folder / f"{name}.yaml").write_text(_task_yaml(include, name, data_file))
    return name, len(rows)


# lm-eval bootstraps the stderr of metrics that are not means (mrpc's f1) with 100,000 resamples
# by default: five minutes on 2 cores for 4 items. 1,000 gives the stderr to about 2%.
BOOTSTRAP_ITERS = 1000


def evaluate_multiple_choice(model, tokenizer, specs: list[TaskSpec], batch_size: int = 8,
                             bootstrap_iters: int = BOOTSTRAP_ITERS) -> dict:
    """{"tasks": {task: {acc, acc_stderr, and every other metric the task defines (acc_norm,
    f1, ...), n, slice, per_item: {acc: [0/1 per item in row order], acc_norm: [...]}}},
    "mean": {acc, [acc_norm over the tasks that define it]}}; per_item is lm-eval's own
    per-document scoring, kept for paired tests between models."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    for spec in specs:
        get_task(spec.task)
    with tempfile.TemporaryDirectory(prefix="layerif-lmeval-") as tmp:
        folder = Path(tmp)
        names = {spec.task: write_task(spec, folder) for spec in specs}
        # lm-eval warns that an in-memory model is not a string and that the included tasks
        # leave aggregation to its defaults: true, and nothing a user can act on.
        logging.getLogger("lm_eval").setLevel(logging.ERROR)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        out = simple_evaluate(model=lm, tasks=[n for n, _ in names.values()],
                              task_manager=TaskManager(include_path=str(folder),
                                                       include_defaults=False),
                              bootstrap_iters=bootstrap_iters, verbosity="ERROR")
    tasks = {}
    for spec in specs:
        name, n = names[spec.task]
        r = out["results"][name]
        tasks[spec.task] = {"slice": str(spec), "n": n}
        for key, value in r.items():  # every metric the task defines ("acc,none" -> "acc")
            metric, _, filt = key.partition(",")
            if filt == "none" and isinstance(value, (int, float)):
                tasks[spec.task][metric] = float(value)
        samples = sorted(out.get("samples", {}).get(name, []), key=lambda d: d["doc_id"])
        tasks[spec.task]["per_item"] = {
            k: [float(d[k]) for d in samples] for k in METRICS if samples and k in samples[0]}
    mean = {}
    for k in METRICS:
        values = [t[k] for t in tasks.values() if k in t]
        if values:
            mean[k] = sum(values) / len(values)
    return {"tasks": tasks, "mean": mean}
