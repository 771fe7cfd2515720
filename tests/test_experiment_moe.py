"""`layerif experiment` on a LoRA-MoE grid (`kind: lora-moe`): end to end on a tiny model, resume
counted in cell executions, shared training for equal allocations, what a new seed recomputes,
overlap refused before any work, per-item results, the report; and answer balancing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import killed_at_step

from layerif.cli import main
from layerif.data.instruct import balance_answers, load_instruct
from layerif.errors import DataError
from layerif.experiments import load_config, run_experiment, write_report
from layerif.experiments.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke-moe.yaml"


def config_file(tmp_path: Path, **changes) -> Path:
    """experiments/smoke-moe.yaml with one seed, uniform twice (under two labels) and LayerIF."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(methods=[{"method": "uniform"},
                        {"method": "uniform", "label": "uniform-twin"},
                        {"method": "layerif", "aggregate": "helpful", "label": "layerif"}],
               seeds=[0], base=False)
    raw.update(changes)
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def kinds(summary) -> dict:
    return dict(Counter(kind for kind, _ in summary.executed))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("moe")
    config = config_file(tmp)
    out = tmp / "run"
    return tmp, config, out, run_experiment(load_config(config), out, progress=False)


def test_a_grid_runs_shares_equal_allocations_and_a_rerun_computes_nothing(first_run):
    _, config, out, summary = first_run
    # allocations: uniform (one cell for both labels and both tasks) + layerif per task;
    # adapters: uniform and its twin train once per task, layerif once per task
    assert kinds(summary) == {"model": 1, "scores": 2, "allocation": 3, "adapter": 4, "eval": 4}
    by = {(r["method"], r["task"]): r for r in summary.rows}
    for task in ("mrpc", "arc_easy"):
        assert by["uniform", task]["eval"] == by["uniform-twin", task]["eval"]
        assert sum(by["layerif", task]["experts"]) == 8
    again = run_experiment(load_config(config), out, progress=False)
    assert again.executed == [] and again.corrupt == []
    assert [r["eval"] for r in again.rows] == [r["eval"] for r in summary.rows]
    assert not list(out.glob("cells/adapter/*/adapter/*.safetensors"))  # deleted once evaluated


def test_evaluations_keep_both_metrics_per_item(first_run):
    _, _, out, summary = first_run
    for row in summary.rows:
        result = json.loads((out / "cells" / "eval" / row["eval"] / "eval.json").read_text())
        (task,) = result["tasks"].values()
        assert task["n"] == 8 and task["slice"].endswith("]")
        for metric in ("gen_acc", "acc"):  # generation and lm-eval both kept, neither lost
            assert len(task["per_item"][metric]) == 8
            assert np.mean(task["per_item"][metric]) == pytest.approx(task[metric])
        hits = [g["predicted"] == (g["gold"] if g["gold"].isupper() else g["gold"].lower())
                for g in task["generations"]]
        assert task["per_item"]["gen_acc"] == [int(h) for h in hits]


def test_generative_prompts_are_cut_to_the_fine_tuning_length(first_run, tmp_path):
    """An evaluation prompt keeps what training kept (smoke-moe trains at 96 tokens), unless
    the config's evaluation.max_length says otherwise; either way the cell's key records it."""
    from layerif.experiments.lora_moe import moe_settings

    _, _, out, summary = first_run
    for row in summary.rows:
        cell = json.loads((out / "cells" / "eval" / row["eval"] / "cell.json").read_text())
        assert cell["settings"]["max_length"] == 96
    raw_eval = yaml.safe_load(SMOKE.read_text())["evaluation"]
    changed = load_config(config_file(tmp_path, evaluation={**raw_eval, "max_length": 64}))
    assert moe_settings(changed)[3]["max_length"] == 64


def test_a_new_seed_trains_and_evaluates_only_its_own_adapters(first_run, tmp_path):
    _, _, out, _ = first_run
    summary = run_experiment(load_config(config_file(tmp_path, seeds=[0, 1])), out,
                             progress=False)
    assert kinds(summary) == {"adapter": 4, "eval": 4}


def test_training_is_balanced_when_asked(first_run):
    _, _, out, _ = first_run
    adapter = next(c for c in (out / "cells" / "adapter").iterdir()
                   if json.loads((c / "cell.json").read_text())["settings"]["train"]
                   == "mrpc:validation[0:12]")
    cell = json.loads((adapter / "cell.json").read_text())
    items = load_instruct("mrpc:validation[0:12]")
    counts = Counter(it.answer for it in items)
    assert cell["result"]["examples"] == 2 * min(counts.values()) < len(items)


def test_report_tables(first_run):
    _, _, out, _ = first_run
    paths = write_report(out)
    text = (out / "tables.md").read_text()
    assert "**per task: generative acc" in text and "mean generative accuracy" in text
    assert "mean log-likelihood accuracy" in text and "(best baseline)" in text
    # the no-skill row, by hand: the majority answer of the fine-tuning rows on the eval rows
    train = Counter(it.answer for it in load_instruct("mrpc:validation[0:12]"))
    top = train.most_common(1)[0][0]
    mrpc = next(json.loads(p.read_text()) for p in (out / "cells" / "eval").glob("*/eval.json")
                if "mrpc" in json.loads(p.read_text())["tasks"])["tasks"]["mrpc"]
    gold = [g["gold"] for g in mrpc["generations"]]
    assert f"{100 * gold.count(top) / len(gold):.1f} ({top})" in text
    assert {p.name for p in paths} >= {"results.csv", "tables.md", "report.html"}
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0] == "method,task,seed,metric,value,n" and len(rows) > 6


def test_overlapping_evaluation_rows_are_refused_before_any_work(tmp_path):
    config = config_file(tmp_path, evaluation={"slice": "8:16"})  # overlaps train [0:12]
    out = tmp_path / "run"
    with pytest.raises(DataError, match="share"):
        run_experiment(load_config(config), out, progress=False)
    assert not (out / "cells").exists()


@pytest.mark.parametrize("change, message", [
    ({"tasks": [{"task": "mrpc", "train": "mrpc:validation[0:8]"}]}, "tasks[0]"),
    ({"tasks": [{"task": "wikitext", "train": "a", "val": "b"}]}, "no instruction format"),
    ({"total": None}, "total"),
    ({"training": {"epochs": 0}}, "training"),
    ({"lora": {"rnk": 2}}, "unknown key rnk"),
    ({"methods": [{"method": "moka"}]}, "methods[0]"),
])
def test_config_errors_name_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(config_file(tmp_path, **change))


def test_balance_answers_keeps_the_first_of_each_answer_in_row_order():
    items = load_instruct("boolq:validation[0:40]")
    counts = Counter(it.answer for it in items)
    balanced = balance_answers(items)
    assert Counter(it.answer for it in balanced) == {a: min(counts.values()) for a in counts}
    seen = {a: 0 for a in counts}
    expected = []
    for it in items:
        if seen[it.answer] < min(counts.values()):
            seen[it.answer] += 1
            expected.append(it.origin)
    assert [it.origin for it in balanced] == expected
    with pytest.raises(DataError, match="single gold answer"):
        balance_answers([it for it in items if it.answer == items[0].answer])


def test_validation_rows_overlapping_the_fine_tuning_rows_are_refused_before_any_work(
        tmp_path, capsys):
    """Named by the config file and key, with nothing built or evaluated (it used to come
    after the model cell and the base evaluation, naming only data slices)."""
    config = config_file(tmp_path, tasks=[{"task": "mrpc", "train": "mrpc:validation[0:12]",
                                           "val": "mrpc:validation[8:16]"}], base=True)
    out = tmp_path / "run"
    assert main(["experiment", "run", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{config}: tasks[0].val:" in err and "shares content" in err
    assert not (out / "cells").exists()


def test_seed_spread_gives_the_seeds_and_rows_a_1_5_point_difference_needs():
    from layerif.experiments.moe_report import seed_spread

    rng = np.random.default_rng(0)

    def record(correct: np.ndarray) -> dict:
        return {"result": {"tasks": {"t": {"per_item": {"gen_acc": correct.tolist()}}}}}

    n = 400
    # uniform's three seeds answer 40%, 44%, 48% of the items: sd over seeds 4.0 points
    uniform = [record((np.arange(n) < k).astype(float)) for k in (160, 176, 192)]
    other = [record(rng.integers(0, 2, n).astype(float)) for _ in range(3)]
    lines = "\n".join(seed_spread({"uniform": {"t": uniform}, "mola": {"t": other}}, ["t"]))
    assert "| uniform | 40.0 / 44.0 / 48.0 | 4.0 | - | - |" in lines
    z = 1.959964 + 0.841621
    assert f"needs ~{int(np.ceil(2 * (z * 4.0 / 1.5) ** 2))} seeds" in lines  # 112
    d = 100 * (np.asarray(uniform[0]["result"]["tasks"]["t"]["per_item"]["gen_acc"])
               - np.asarray(other[0]["result"]["tasks"]["t"]["per_item"]["gen_acc"]))
    assert f"~{int(np.ceil((z * np.std(d, ddof=1) / 1.5) ** 2))} evaluation rows" in lines
    # one seed: no spread to report
    assert seed_spread({"uniform": {"t": uniform[:1]}}, ["t"]) == []


def test_a_grid_killed_while_training_resumes_from_the_training_checkpoint(first_run, tmp_path,
                                                                           monkeypatch):
    """Killed in the first adapter's second optimiser step (a checkpoint after every step), the
    grid's rerun continues that training from its checkpoint, which the cell store's emptying of
    the cell's .KEY.tmp must not take, and ends with the uninterrupted run's losses and
    per-item results (the same cell keys as the first run's uniform rows)."""
    import torch

    import layerif.training

    _, _, first_out, first = first_run
    config = load_config(config_file(tmp_path, methods=[{"method": "uniform"}]))
    out = tmp_path / "killed"
    monkeypatch.setattr(layerif.training, "CHECKPOINT_SECONDS", 0.0)

    with killed_at_step(monkeypatch, 2):
        run_experiment(config, out, progress=False)
    (kept,) = out.glob("cells/adapter/.*.training/.adapter.checkpoint/state.pt")
    assert torch.load(kept, weights_only=False)["position"]["batches"] == 1
    resumed_from = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: resumed_from.append(str(f))
                        or real_load(f, *a, **k))
    summary = run_experiment(config, out, progress=False)
    assert str(kept) in resumed_from
    assert not list(out.glob("cells/adapter/.*.training"))
    uniform = {r["task"]: r["eval"] for r in first.rows if r["method"] == "uniform"}
    for row in summary.rows:
        assert row["eval"] == uniform[row["task"]]
        got, want = ((o / "cells" / "eval" / row["eval"] / "eval.json").read_text()
                     for o in (out, first_out))
        assert json.loads(got)["tasks"] == json.loads(want)["tasks"]
