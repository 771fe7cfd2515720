"""`layerif experiment`: a tiny grid end to end, its resume (counted in cell executions, not
seconds), what a changed setting recomputes, a killed run, a damaged cell, the report."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from layerif.cli import main
from layerif.experiments import cell_key, load_config, run_pruning, write_report
from layerif.experiments.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def small_config(tmp_path: Path, **changes) -> Path:
    """experiments/smoke.yaml cut to two methods, one seed, no dense run."""
    raw = yaml.safe_load((ROOT / "experiments" / "smoke.yaml").read_text())
    raw.update(methods=[{"method": "uniform"},
                        {"method": "layerif", "aggregate": "helpful", "label": "layerif"}],
               seeds=[0], dense=False)
    raw.pop("sensitivity")  # measured by the smoke test itself
    raw["evaluation"]["slice"] = "0:8"
    raw.update(changes)
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def kinds(summary) -> dict:
    counts: dict[str, int] = {}
    for kind, _ in summary.executed:
        counts[kind] = counts.get(kind, 0) + 1
    return counts


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exp")
    config = small_config(tmp)
    out = tmp / "run"
    summary = run_pruning(load_config(config), out, progress=False)
    return tmp, config, out, summary


def test_a_grid_runs_and_a_rerun_computes_nothing(first_run):
    tmp, config, out, summary = first_run
    assert kinds(summary) == {"model": 1, "scores": 1, "allocation": 2, "pruned": 2, "eval": 2}
    again = run_pruning(load_config(config), out, progress=False)
    assert again.executed == [] and again.corrupt == []
    assert [r["eval"] for r in again.rows] == [r["eval"] for r in summary.rows]
    # pruned weights are deleted once evaluated; the evaluation keeps per-item results
    assert not list(out.glob("cells/pruned/*/model/*.safetensors"))
    result = json.loads(next(out.glob("cells/eval/*/eval.json")).read_text())
    assert len(result["tasks"]["arc_easy"]["per_item"]["acc"]) == 8
    assert "window_nll" in next(iter(result["perplexity"].values()))


def test_a_changed_setting_recomputes_only_what_depends_on_it(first_run, tmp_path):
    _, _, out, _ = first_run
    # a second calibration seed: the same allocations (neither reads calibration data), new
    # prunes and evaluations for seed 1 only
    summary = run_pruning(load_config(small_config(tmp_path, seeds=[0, 1])), out,
                          progress=False)
    assert kinds(summary) == {"pruned": 2, "eval": 2}
    # another scoring slice: new scores, a new layerif allocation; uniform is untouched
    raw = yaml.safe_load((ROOT / "experiments" / "smoke.yaml").read_text())
    slices = raw["scoring"]["slices"] + [{"train": "boolq:validation[268:276]",
                                          "val": "boolq:validation[276:280]"}]
    summary = run_pruning(load_config(small_config(tmp_path, scoring={
        **raw["scoring"], "slices": slices})), out, progress=False)
    assert kinds(summary) == {"scores": 1, "allocation": 1, "pruned": 1, "eval": 1}


def test_a_killed_run_resumes_and_a_damaged_cell_is_recomputed(tmp_path, monkeypatch):
    import layerif.evaluation as evaluation

    config = load_config(small_config(tmp_path))
    real, calls = evaluation.evaluate_model, {"n": 0}

    def dies_second_time(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(evaluation, "evaluate_model", dies_second_time)
    with pytest.raises(KeyboardInterrupt):
        run_pruning(config, tmp_path / "run", progress=False)
    monkeypatch.setattr(evaluation, "evaluate_model", real)
    assert len(list((tmp_path / "run").glob("cells/eval/*/cell.json"))) == 1
    summary = run_pruning(config, tmp_path / "run", progress=False)
    assert kinds(summary) == {"eval": 1}  # the pruned model of the killed one was stored
    # damage one evaluation: it is detected, reported and recomputed (with its pruned model)
    damaged = next((tmp_path / "run").glob("cells/eval/*/eval.json"))
    damaged.write_text(damaged.read_text().replace('"acc"', '"acc_x"', 1))
    summary = run_pruning(config, tmp_path / "run", progress=False)
    assert len(summary.corrupt) == 1 and kinds(summary) == {"pruned": 1, "eval": 1}


def test_progress_lines_count_the_cells_left(tmp_path):
    from layerif.experiments.cells import CellStore

    lines: list[str] = []
    store = CellStore(tmp_path, progress=lines.append)
    store.plan({"a": 2, "b": 1})
    store.run("a", {"i": 0}, lambda folder: {})
    assert lines[-1].endswith("left for up to 2 more cells (+ b not timed yet)"), lines
    store.run("a", {"i": 0}, lambda folder: {})  # stored: visited, not computed, no line
    assert len(lines) == 1 and store.todo == {"a": 0, "b": 1}
    store.run("b", {"i": 0}, lambda folder: {})
    assert lines[-1].endswith(" s")  # nothing left to visit: no estimate


def test_the_time_left_counts_each_stage_at_its_own_recorded_mean(tmp_path):
    """A search's allocation is counted at the searches' time, not at the mean of every
    allocation (which a few closed-form ones drag to seconds), and a resumed run estimates
    from its stored cells' recorded seconds before it has computed anything."""
    import json

    from layerif.experiments.cells import CellStore, cell_key

    store = CellStore(tmp_path)
    for i, (stage, seconds) in enumerate([("allocation atp", 1200.0), ("allocation owl", 6.0),
                                          ("allocation owl", 6.0)]):
        store.run("allocation", {"i": i}, lambda folder: {}, stage=stage)
        path = store.folder("allocation", cell_key("allocation", {"i": i})) / "cell.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "seconds": seconds}))
    resumed = CellStore(tmp_path)  # a fresh process over the same cells
    resumed.plan({"allocation atp": 3, "allocation owl": 3})
    for i, stage in enumerate(["allocation atp", "allocation owl", "allocation owl"]):
        resumed.run("allocation", {"i": i}, lambda folder: {}, stage=stage)
    # two ATP searches at 20 min and one OWL at 6 s are left: ~40 min (one mean says ~20)
    assert resumed.time_left() == "   ~40 min left for up to 3 more cells"


def test_perplexity_rows_carry_the_t_test_over_seeds():
    """With several seeds, a perplexity row adds the paired t-test of the seeds'
    log-perplexities against the best baseline (scipy's ttest_rel on the logs)."""
    import numpy as np
    from scipy.stats import ttest_rel

    from layerif.experiments.tables import Cell, table

    windows = np.linspace(2.0, 3.0, 12)
    seeds = {"base": [10.0, 12.0, 11.0], "new": [13.0, 14.5, 15.0]}
    cells = [Cell("uniform", True, np.zeros(0), [], {"t": windows}, {"t": seeds["base"]}),
             Cell("layerif", False, np.zeros(0), [], {"t": windows + 0.1},
                  {"t": seeds["new"]})]
    row = next(line for line in table(cells, "x").splitlines() if line.startswith("| layerif"))
    expected = ttest_rel(np.log(seeds["new"]), np.log(seeds["base"])).pvalue
    assert f"t-test p = {expected:.3f}" in row and "+0.1000 [+0.1000, +0.1000]" in row
    assert "per seed" not in table(cells, "x")  # seeds unknown: no column to label
    for c in cells:
        c.seeds = (3, 5, 7)
    lines = table(cells, "x").splitlines()
    assert "| ppl per seed (3, 5, 7) |" in lines[2]  # each seed's value beside the mean
    assert "| 13.00, 14.50, 15.00 |" in next(line for line in lines if "| layerif" in line)
    for c in cells:
        c.seeds, c.seed_ppl["t"] = (3,), c.seed_ppl["t"][:1]
    assert "per seed" not in table(cells, "x")  # one seed: the column would repeat the mean


def test_layerif_rows_are_held_against_the_allocation_they_depart_from(tmp_path):
    """Each LayerIF row is compared with its epsilon-0 allocation, not only with the best
    baseline: uniform for its own map, ATP under --prior atp; a twin of its reference is
    named as the same model; a reference with other seeds is not paired."""
    import numpy as np
    from scipy.stats import ttest_rel

    from layerif.experiments.reference_report import against_reference_section
    from layerif.experiments.tables import Cell

    alloc_of = {"uniform": ("uniform", None), "atp": ("atp", None),
                "sensitivity": ("sensitivity", None), "layerif": ("layerif", "none"),
                "layerif-atp": ("layerif", "atp"), "layerif-tuned": ("layerif", "none")}
    for label, (method, prior) in alloc_of.items():
        folder = tmp_path / "cells" / "allocation" / label
        folder.mkdir(parents=True)
        (folder / "alloc.json").write_text(json.dumps(
            {"method": method, "parameters": {"prior": prior} if prior else {}}))
    windows = np.linspace(2.0, 3.0, 12)
    seed_ppl = {"uniform": [10.0, 12.0], "atp": [8.0, 9.0], "sensitivity": [5.0, 6.0],
                "layerif": [13.0, 14.5], "layerif-atp": [7.0, 9.5], "layerif-tuned": [10.0, 12.0]}
    offset = {"uniform": 0.0, "atp": -0.3, "sensitivity": -0.5, "layerif": 0.25,
              "layerif-atp": -0.4, "layerif-tuned": 0.0}
    cells = [Cell(label, not label.startswith("layerif"), np.zeros(0), [],
                  {"t": windows + offset[label]}, {"t": seed_ppl[label]}, (0, 1))
             for label in alloc_of]
    records = [{"method": label, "allocation": label} for label in alloc_of]
    section = against_reference_section(tmp_path, records, lambda row: row["method"],
                                        {("wanda", 0.7): cells})
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in section.splitlines()
            if line.startswith("| layerif")}
    assert set(rows) == {"layerif", "layerif-atp", "layerif-tuned"}  # no baseline row
    assert rows["layerif"][0] == "uniform" and rows["layerif-atp"][0] == "atp"
    p = ttest_rel(np.log(seed_ppl["layerif-atp"]), np.log(seed_ppl["atp"])).pvalue
    assert rows["layerif-atp"][3:] == [  # -0.4 - (-0.3) on every window; lower on seed 0
        f"{np.exp(-0.1):.3f}", f"-0.1000 [-0.1000, -0.1000], p = 0.000, t-test p = {p:.3f}",
        "1 of 2 |"]
    assert rows["layerif"][4].startswith("+0.2500") and rows["layerif"][5] == "0 of 2 |"
    assert rows["layerif-tuned"][3:] == ["1", "the same pruned model (epsilon 0)", "- |"]
    cells[0].seeds = (0, 2)  # uniform measured on other seeds: nothing to pair with
    section = against_reference_section(tmp_path, records, lambda row: row["method"],
                                        {("wanda", 0.7): cells})
    assert [line.split(" | ")[0] for line in section.splitlines()[4:]] == ["| layerif-atp"]


def test_report_tables_and_csv(first_run, capsys):
    _, _, out, _ = first_run
    assert main(["experiment", "report", str(out)]) == 0
    tables = (out / "tables.md").read_text()
    assert "wanda, 50% sparsity" in tables and "| uniform |" in tables  # (slices 0 and 1 from
    # the changed-setting test, which shares this folder)
    assert "(best baseline)" in tables and "p = " in tables
    # each LayerIF row against uniform, its epsilon 0 (labelled by slice when the
    # changed-setting test has added a second one)
    assert re.search(r"^\| layerif( \(slice \d\))? \| uniform \| wanda 50% \| "
                     r"sciq:validation\[600:620\] \| \d", tables, re.M)
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0] == "method,slice,pruner,sparsity,seed,metric,value,n"
    assert any(r.startswith("layerif") and ",acc:arc_easy," in r for r in rows)
    # the time per stage counts every stored cell of each kind once
    for kind in ("scores", "allocation", "eval"):
        n = len(list(out.glob(f"cells/{kind}/*/cell.json")))
        assert f"| {kind} | {n} | " in tables, kind
    assert write_report(out)  # again: the same files, atomically replaced


def test_report_leaves_out_an_edited_cell_and_says_so(first_run, tmp_path, capsys):
    """`experiment report` checks each cell as `experiment run` does: an eval.json edited by
    hand (acc 0.25 -> 0.27) is named, left out of results.csv and tables.md, never printed."""
    _, _, out, _ = first_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    manifest = json.loads((run / "manifest.json").read_text())
    row = next(r for r in manifest["rows"] if r["method"] == "uniform")
    path = run / "cells" / "eval" / row["eval"] / "eval.json"
    result = json.loads(path.read_text())
    task = next(iter(result["tasks"].values()))
    task["acc"] = round(task["acc"] + 0.02, 6)  # what a hand edit does
    path.write_text(json.dumps(result))
    capsys.readouterr()
    assert main(["experiment", "report", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"cells/eval/{row['eval']} is damaged (eval.json does not match its recorded hash)" \
        in err
    csv_rows = (run / "results.csv").read_text().splitlines()
    slice_ = "" if row["slice"] is None else row["slice"]
    edited = f"uniform,{slice_},{row['pruner']},{row['sparsity']},{row['seed']},"
    assert not any(r.startswith(edited) for r in csv_rows)
    assert any(r.startswith("layerif") for r in csv_rows)  # the other rows stay
    tables = (run / "tables.md").read_text()
    assert "left out: damaged cells" in tables and row["eval"] in tables
    # the intact folder's report has no such note
    assert main(["experiment", "report", str(out)]) == 0
    assert "left out" not in (out / "tables.md").read_text()


@pytest.mark.parametrize(("change", "message"), [
    ({"methods": [{"method": "nope"}]}, "methods[0]: unknown sparsity method 'nope'"),
    ({"methods": [{"method": "dlp", "alpha": 0.9}]}, "methods[0]: DLP's alpha must be in"),
    ({"pruners": [{"name": "wanda", "damping": 1}]}, "pruners[0]: pruner wanda takes no option"),
    ({"sparsities": [1.5]}, "sparsities: give targets in (0, 1)"),
    ({"scoring": {"max_length": 64}}, "scoring.slices: layerif methods need at least one"),
    ({"colour": "red"}, "top level: unknown key colour"),
    ({"model": {"random": "llama", "colour": "red"}}, "model: unknown key colour"),
    ({"sparsities": [0.995]}, "sparsities: 0.995 is above method layerif's largest target"),
    ({"sparsities": ["x"]}, "sparsities: give a list of numbers"),
    ({"seeds": [0.5]}, "seeds: give a list of whole numbers"),
    ({"methods": [{"method": "layerif", "epsilon": 2}]},
     "methods[0]: epsilon must be a number in [-1, 1]"),
    ({"evaluation": {"tasks": ["arc_easy"], "slice": "0:8", "limit": 8}},
     "evaluation: give slice (which rows) or limit (the first N), not both"),
    ({"methods": [{"method": "sensitivity"}], "sparsities": [0.8],
      "sensitivity": {"levels": [0.5, 0.7], "held_windows": 2}},
     "sparsities: 0.8 is above 0.7, the largest sensitivity level"),
])
def test_config_errors_name_the_key(tmp_path, change, message, capsys):
    path = small_config(tmp_path, **change)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert main(["experiment", "run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_overlapping_evaluation_data_is_refused_before_any_work(tmp_path):
    config = load_config(small_config(tmp_path, evaluation={
        "tasks": ["boolq"], "slice": "256:260", "ppl": [], "batch_size": 8}))
    with pytest.raises(Exception, match="shares content with the scoring train set"):
        run_pruning(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "cells" / "scores").exists()


@pytest.mark.slow
def test_smoke_config_end_to_end(tmp_path, capsys):
    """The README's commands on experiments/smoke.yaml (CI runs this one)."""
    out = tmp_path / "s"
    assert main(["experiment", "run", str(ROOT / "experiments" / "smoke.yaml"), "--out",
                 str(out), "--quiet"]) == 0
    assert main(["experiment", "report", str(out)]) == 0
    assert main(["experiment", "run", str(ROOT / "experiments" / "smoke.yaml"), "--out",
                 str(out), "--quiet"]) == 0
    assert "computed nothing new (all cells stored)" in capsys.readouterr().out
    tables = (out / "tables.md").read_text()
    for label in ("dense", "uniform", "dlp", "lsa", "sensitivity", "atp", "layerif-helpful"):
        assert f"| {label} |" in tables, label
    # the measured sensitivity: every layer score held against it, the additive model checked
    section = tables[tables.index("## Layer scores against the measured sensitivity"):]
    for score in ("depth (ATP's progression)", "layerif helpful (slice 0, n=8)",
                  "dlp (unimportance)", "lsa (errors)"):
        assert f"| {score} | " in section, score
    assert section.count("| 0.50 | ") == 7  # every method's additivity row at 50%
    # each allocation's own ratios against the truth: uniform's are equal, so it has none
    assert "| uniform | 0.50 |" in section and "- (equal ratios) |" in section.split(
        "| uniform | 0.50 |")[1].split("\n")[0]
    assert (out / "plots" / "layer-scores-vs-sensitivity.png").exists()
    # each additivity cell measured the pruned model the grid had just made: the same as the
    # whole model pruned again from the dense one (fp32 sums: 1e-6)
    from layerif.experiments.pruning import _calibration_windows
    from layerif.models import load_model
    from layerif.sensitivity import load, measured_increase
    from layerif.sensitivity.run import held_windows

    config = load_config(ROOT / "experiments" / "smoke.yaml")
    manifest = json.loads((out / "manifest.json").read_text())
    measured, record = load(out / "cells" / "sensitivity" / manifest["sensitivity"] /
                            "sensitivity")
    dense, tokenizer = load_model(str(next(out.glob("cells/model/*"))), device="cpu")
    held = held_windows(tokenizer, record["held"]["source"], record["held"]["windows"],
                        record["held"]["seqlen"])
    windows = _calibration_windows(str(next(out.glob("cells/model/*"))), {
        "source": "sciq:validation[0:600]", "nsamples": 4, "seqlen": 64}, config.seeds[0])
    for check in manifest["additivity"]:
        stored = json.loads((out / "cells" / "additivity" / check["key"] /
                             "additivity.json").read_text())
        again = measured_increase(dense, stored["ratios"], "wanda", windows, held,
                                  measured.dense_window_nll)
        assert again == pytest.approx(stored["measured"], rel=1e-6, abs=1e-6), check["method"]
    # atp-flat's ratios are uniform's: its additivity is uniform's measurement, not a new one
    flat = next(c for c in manifest["additivity"] if c["method"] == "atp-flat")
    assert json.loads((out / "cells" / "additivity" / flat["key"] / "additivity.json")
                      .read_text())["same_model_as"]


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--virtual-time-budget=5000"]


def test_report_html_renders_in_a_browser(first_run, tmp_path):
    """Every table and every plot of report.html, as headless Chromium sees the page."""
    import re
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it where "
                    "apt can); the report's browser check needs it")
    _, _, out, _ = first_run
    write_report(out)
    tables = (out / "tables.md").read_text().count("\n**")
    pngs = sorted((out / "plots").glob("*.png"))
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--dump-dom", (out / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert dom.count("<table>") == tables >= 1
    widths = re.findall(r'data-decoded-width="(\d+)"', dom)
    assert len(widths) == len(pngs) >= 3 and all(int(w) > 100 for w in widths), widths
    page = (out / "report.html").read_text()  # self-contained: nothing loaded from elsewhere
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"',
                                                                              page))
    assert "<link" not in page


@pytest.mark.parametrize("method", [
    {"method": "atp", "grid": "0,0.5,1", "nsamples": 2, "held": 2},
    {"method": "layerif", "aggregate": "helpful", "tune": True, "grid": "-0.5,0,0.5",
     "nsamples": 2, "held": 2}], ids=["atp", "layerif-tune"])
def test_searches_never_read_evaluation_data(method, tmp_path):
    """Two runs that differ only in their evaluation data, one of them poisoned (gibberish
    held text, other items), choose the same ATP beta / LayerIF epsilon from the same held
    perplexities: the searches read calibration windows only."""
    from layerif.allocation.sparsity_methods import setting_search as search

    poison = tmp_path / "poison.txt"
    poison.write_text("zzzq xqj vvkw " * 400)
    chosen = []
    for i, evaluation in enumerate([
            {"tasks": ["arc_easy"], "slice": "0:8", "ppl": [], "batch_size": 8},
            {"tasks": ["arc_challenge"], "slice": "0:8", "ppl": [str(poison)],
             "ppl_seqlen": 64, "batch_size": 8}]):
        search._TRIALS.clear()  # each run's trials computed, not looked up from the other's
        config = load_config(small_config(tmp_path, evaluation=evaluation, methods=[method]))
        out = tmp_path / f"run{i}"
        run_pruning(config, out, progress=False)
        alloc = json.loads(next(out.glob("cells/allocation/*/alloc.json")).read_text())
        chosen.append({k: v for k, v in alloc["parameters"].items() if k != "scores"})
        # each trial is kept beside the cells (an interrupted search resumes at its next one)
        assert len(list(out.glob("cells/search-trials/*.json"))) == 3
    assert chosen[0] == chosen[1]
    search = chosen[0].get("search", chosen[0])
    assert len(set(search["held_perplexity"])) == 3  # the grid points differ: a real choice
    # the report shows the choice and every grid point's held perplexity, in grid order
    write_report(out)
    name = "beta" if method["method"] == "atp" else "eps"
    value = chosen[0]["beta" if name == "beta" else "epsilon"]
    points = ", ".join(f"{p:.4g}: {h:.1f}" for p, h in zip(
        search["grid"], search["held_perplexity"], strict=True))
    assert (f"| {method['method']} | 0 | {name} {value:.4g} | {name} {points} |"
            in (out / "tables.md").read_text().splitlines())


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_committed_configs_are_valid_and_disjoint(path):
    """Every committed config loads, and its scoring, calibration and evaluation data are
    disjoint by content (what `run` checks before any work)."""
    from layerif.experiments import check_data

    check_data(load_config(path))


@pytest.mark.parametrize("cells", sorted((ROOT / "experiments" / "results").glob("*/cells")),
                         ids=lambda p: p.parent.name)
def test_committed_cells_rebuild_their_tables(cells, tmp_path, monkeypatch):
    """The cells kept beside a committed report are intact, and the config's run over them
    computes nothing (a missing or changed cell fails here, not after hours of work); where
    the grid is complete, the report rebuilt from them equals the committed tables, and where
    it is not, a stored-only run's report equals the committed partial tables."""
    import shutil

    from layerif.experiments import CellStore, run_experiment

    store = CellStore(cells.parent)
    # (a running grid's resume folders, .KEY.tmp.resume, and a search's working folder,
    # search-work: its checkpoints, are not cells)
    for folder in sorted(p for p in cells.glob("*/*") if p.is_dir() and p.name[0] != "."
                         and p.parent.name != "search-work"):
        assert store.load(folder.parent.name, folder.name) is not None, folder
    tables = cells.parent / "tables.md"
    if not tables.exists():  # a grid still running, without a report: its cells only
        return
    shutil.copytree(cells, tmp_path / "cells")
    config = load_config(ROOT / "experiments" / f"{cells.parent.name}.yaml")
    if tables.read_text().split("\n")[2].startswith("partial grid:"):  # an unfinished grid's
        # report (run-required.sh --save-cells): the same from a stored-only run of its cells
        summary = run_experiment(config, tmp_path, progress=False, stored_only=True)
        assert summary.executed == [] and summary.partial
        write_report(tmp_path)
        assert (tmp_path / "tables.md").read_text() == tables.read_text()
        return
    stored = CellStore.run

    def must_be_stored(self, kind, settings, compute, label="", hashed=(), stage=None):
        assert self.load(kind, cell_key(kind, settings)) is not None, f"{kind} {label} missing"
        return stored(self, kind, settings, compute, label, hashed, stage)

    monkeypatch.setattr(CellStore, "run", must_be_stored)
    assert run_experiment(config, tmp_path, progress=False).executed == []
    write_report(tmp_path)
    assert (tmp_path / "tables.md").read_text() == tables.read_text()


def _tables_without_times(out: Path) -> str:
    write_report(out)
    return (out / "tables.md").read_text().split("**time per stage")[0]


def test_a_grid_takes_another_grids_cells_where_the_keys_match(tmp_path, capsys):
    """A grid that differs from a stored one only in its pruner takes that grid's random
    model, scores and allocations (an ATP search among them) from --reuse-cells instead of
    computing them, prunes and evaluates its own models, and ends with the same tables as a
    run that computed everything; a damaged cell there is computed here, never taken."""
    methods = [{"method": "uniform"}, {"method": "atp", "grid": "0,1", "nsamples": 2,
                                      "held": 2},
               {"method": "layerif", "aggregate": "helpful", "label": "layerif"}]
    wanda = run_pruning(load_config(small_config(tmp_path, methods=methods)),
                        tmp_path / "wanda", progress=False)
    assert kinds(wanda)["allocation"] == 3
    damaged = next((tmp_path / "wanda").glob("cells/allocation/*/alloc.json"))
    damaged.write_text(damaged.read_text().replace("0.", "0.9", 1))
    magnitude = load_config(small_config(tmp_path, methods=methods, pruners=["magnitude"]))
    fresh = run_pruning(magnitude, tmp_path / "fresh", progress=False)
    assert main(["experiment", "run", str(magnitude.path), "--out", str(tmp_path / "taken"),
                 "--quiet", "--reuse-cells", str(tmp_path / "wanda")]) == 0
    assert "took 4 stored cells from --reuse-cells" in capsys.readouterr().out
    cells = {p.parent.name: json.loads(p.read_text()) for p in
             (tmp_path / "taken").glob("cells/*/*/cell.json")}
    taken = sorted(c["kind"] for c in cells.values() if c.get("reused_from"))
    assert taken == ["allocation", "allocation", "model", "scores"]  # not the damaged one
    assert all(c["reused_from"] == str(tmp_path / "wanda" / "cells")
               for c in cells.values() if c.get("reused_from"))
    assert not any(c["kind"] in ("pruned", "eval") and c.get("reused_from")
                   for c in cells.values())
    assert _tables_without_times(tmp_path / "taken") == _tables_without_times(
        tmp_path / "fresh")
    taken_rows = json.loads((tmp_path / "taken" / "manifest.json").read_text())["rows"]
    assert [r["eval"] for r in taken_rows] == [r["eval"] for r in fresh.rows]  # same keys
    times = (tmp_path / "taken" / "tables.md").read_text().split("**time per stage")[1]
    assert "| allocation | 1 |" in times and "2 allocation" in times and "1 scores" in times


def test_reuse_cells_of_a_missing_folder_is_refused_before_any_work(tmp_path, capsys):
    config = small_config(tmp_path)
    assert main(["experiment", "run", str(config), "--out", str(tmp_path / "o"),
                 "--reuse-cells", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "--reuse-cells" in err and "no such folder" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_cell_that_fails_leaves_no_temporary_folder(tmp_path):
    """A compute that raises (a bad value found late, Ctrl-C) leaves nothing half-made: the
    next run finds no `.KEY.tmp` folder, and no cell."""
    from layerif.experiments.cells import CellStore

    def half_then_fail(folder):
        (folder / "eval.json").write_text("{half")
        raise KeyboardInterrupt

    store = CellStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        store.run("eval", {"a": 1}, half_then_fail, hashed=("eval.json",))
    assert list((tmp_path / "cells" / "eval").iterdir()) == []
    assert store.run("eval", {"a": 1}, lambda folder: {"ok": True})[1] == {"ok": True}


def test_a_stored_only_run_reports_the_whole_seeds_and_computes_nothing(tmp_path, capsys):
    """`experiment run --stored-only` on an unfinished grid: nothing computed or changed on disk
    but manifest.json; the tables show the seeds with every method stored and say what they
    leave out; they equal the tables of a complete grid of those seeds; while no seed is whole,
    the first seed's stored rows are shown and the missing ones named."""
    config = small_config(tmp_path, seeds=[0, 1])
    out = tmp_path / "run"
    summary = run_pruning(load_config(config), out, progress=False)
    write_report(out)
    complete = (out / "tables.md").read_text()
    # a stored-only run of a complete grid: its whole report, not flagged partial
    assert run_pruning(load_config(config), out, progress=False, stored_only=True).partial is None
    write_report(out)
    assert (out / "tables.md").read_text() == complete and "partial grid" not in complete
    seed1 = next(r for r in summary.rows if r["method"] == "layerif" and r["seed"] == 1)
    shutil.rmtree(out / "cells" / "eval" / seed1["eval"])

    def snapshot() -> dict:
        return {p: p.read_bytes() for p in sorted(out.rglob("*"))
                if p.is_file() and p.name != "manifest.json"}

    before = snapshot()
    assert main(["experiment", "run", str(config), "--out", str(out), "--stored-only"]) == 0
    assert "3 of 4 planned evaluated models are stored" in capsys.readouterr().out
    assert snapshot() == before  # nothing computed, nothing removed
    manifest = json.loads((out / "manifest.json").read_text())
    assert {r["seed"] for r in manifest["rows"]} == {0}
    assert manifest["partial"] == {"planned": 4, "stored": 3, "seeds": [0], "whole": True,
                                   "left_out": 1, "not_run": []}
    assert main(["experiment", "report", str(out)]) == 0
    partial = (out / "tables.md").read_text()
    assert "partial grid: 3 of 4 planned evaluated models are stored; the tables show seed 0" \
        in partial and "1 stored rows of unfinished seeds are left out" in partial
    assert "partial grid" in (out / "report.html").read_text()

    whole = tmp_path / "seed0"  # the same cells, a config of seed 0 alone: nothing to compute
    shutil.copytree(out / "cells", whole / "cells")
    assert run_pruning(load_config(small_config(tmp_path)), whole, progress=False).executed == []
    write_report(whole)
    assert partial.split("\n", 4)[4] == (whole / "tables.md").read_text().split("\n", 2)[2]

    seed0 = next(r for r in summary.rows if r["method"] == "uniform" and r["seed"] == 0)
    shutil.rmtree(out / "cells" / "eval" / seed0["eval"])
    run_pruning(load_config(config), out, progress=False, stored_only=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(r["method"], r["seed"]) for r in manifest["rows"]] == [("layerif", 0)]
    assert manifest["partial"]["whole"] is False
    assert manifest["partial"]["not_run"] == ["uniform wanda 0.5 s0"]
    write_report(out)
    assert "no seed is complete yet" in (out / "tables.md").read_text()
    # a folder with nothing evaluated yet: refused, nothing written
    empty = tmp_path / "empty"
    shutil.copytree(out / "cells" / "model", empty / "cells" / "model")
    assert main(["experiment", "run", str(config), "--out", str(empty), "--stored-only"]) == 2
    assert "no evaluated model of this grid is stored yet" in capsys.readouterr().err
    assert not (empty / "manifest.json").exists()


def test_an_allocation_with_an_earlier_ones_ratios_takes_its_pruned_model(tmp_path):
    # ATP at beta 0 is uniform bit for bit: one prune and one evaluation serve both rows; a
    # steeper ATP gets its own
    config = small_config(tmp_path, methods=[
        {"method": "uniform"}, {"method": "atp", "beta": 0.0, "label": "atp-flat"},
        {"method": "atp", "beta": 0.05, "label": "atp-steep"}])
    out = tmp_path / "run"
    summary = run_pruning(load_config(config), out, progress=False)
    evals = {r["method"]: out / "cells" / "eval" / r["eval"] for r in summary.rows}
    assert len(set(evals.values())) == 3
    read = {m: json.loads((folder / "eval.json").read_text()) for m, folder in evals.items()}
    pruned_of = {m: json.loads((folder / "cell.json").read_text())["settings"]["model"]
                 for m, folder in evals.items()}
    assert read["atp-flat"].pop("same_model_as") == pruned_of["uniform"]
    assert read["atp-flat"] == read["uniform"]
    assert "same_model_as" not in read["atp-steep"]
    assert read["atp-steep"]["perplexity"] != read["uniform"]["perplexity"]
    # the twin's pruned cell names the model; only two prunes made weights
    flat = json.loads((out / "cells" / "pruned" / pruned_of["atp-flat"] / "cell.json")
                      .read_text())
    assert flat["result"]["same_model_as"] == pruned_of["uniform"]
    assert sum(key == pruned_of["atp-flat"] for kind, key in summary.executed
               if kind == "pruned") == 1
    # a rerun computes nothing; the tables carry equal rows
    assert run_pruning(load_config(config), out, progress=False).executed == []
    write_report(out)
    rows = {line.split("|")[1].strip(): line.split("|")[2:] for line in
            (out / "tables.md").read_text().splitlines() if line.startswith("| uniform")
            or line.startswith("| atp-flat")}
    assert rows and rows["uniform"][:3] == rows["atp-flat"][:3]  # accuracy, its diff, ppl


def test_stage_times_count_what_a_resumed_cells_earlier_runs_stored(tmp_path):
    """A sensitivity cell that ran 100 s after resuming blocks that took 500 s: 600 s."""
    from layerif.experiments.report import stage_times

    for key, seconds, result in [("a", 100.0, {"resumed_seconds": 500.0}), ("b", 30.0, {}),
                                 ("c", 60.0, None)]:
        kind = "sensitivity" if key == "a" else "eval"
        (tmp_path / "cells" / kind / key).mkdir(parents=True)
        (tmp_path / "cells" / kind / key / "cell.json").write_text(
            json.dumps({"kind": kind, "seconds": seconds, "result": result}))
    table = stage_times(tmp_path)
    assert "| sensitivity | 1 | 10.0 | 600.0 |" in table
    assert "| eval | 2 | 1.5 | 45.0 |" in table and "| all | 3 | 11.5 | - |" in table


def test_a_cell_records_the_machine_and_threads_it_ran_on(tmp_path):
    """The record is taken when the cell is written: the thread count of that moment."""
    import torch

    from layerif.environment import machine_record
    from layerif.experiments.cells import CellStore

    store, threads = CellStore(tmp_path), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        key, _ = store.run("eval", {"a": 1}, lambda folder: {"x": 1})
    finally:
        torch.set_num_threads(threads)
    cell = json.loads((tmp_path / "cells" / "eval" / key / "cell.json").read_text())
    assert cell["machine"] == {**machine_record(), "threads": 1}
    assert cell["machine"]["isa"] == torch.backends.cpu.get_cpu_capability()
    assert cell_key("eval", {"a": 1}) == key  # where it ran is not part of what was computed


def test_the_report_warns_when_a_grids_cells_ran_on_more_than_one_machine(tmp_path):
    from layerif.experiments.report import machines_note

    here = {"cpu": "AMD EPYC", "isa": "AVX512", "threads": 2, "torch": "2.13.0+cpu"}
    there = {**here, "isa": "AVX2"}

    def cells(*machines):
        shutil.rmtree(tmp_path / "cells", ignore_errors=True)
        for i, machine in enumerate(machines):
            (tmp_path / "cells" / "eval" / str(i)).mkdir(parents=True)
            (tmp_path / "cells" / "eval" / str(i) / "cell.json").write_text(json.dumps(
                {"kind": "eval", "result": {}, **({"machine": machine} if machine else {})}))
        return "\n".join(machines_note(tmp_path))

    assert cells(None, None) == ""  # cells made before machines were recorded: nothing to say
    assert cells(here, here) == "All 2 cells computed on AMD EPYC (AVX512), 2 threads, " \
        "torch 2.13.0+cpu.\n"
    for mixed, listed in [((here, there, here), "2 on AMD EPYC (AVX512)"),
                          ((here, None, None), "1 on AMD EPYC (AVX512), 2 threads, torch "
                           "2.13.0+cpu; 2 made before cells recorded their machine"),
                          ((here, {**here, "threads": 1}), "1 on AMD EPYC (AVX512), 1 threads")]:
        note = cells(*mixed)
        assert note.startswith("**cells from more than one machine or build"), mixed
        assert listed in note and "t-test over seeds" in note
        assert ("or from an unrecorded one" in note) == (None in mixed)


def test_a_grid_of_one_sparsity_plots_its_methods_side_by_side(tmp_path):
    """Against sparsity, one sparsity stacks every method on one vertical line; per method,
    each gets its own row."""
    from PIL import Image

    from layerif.experiments.report import _metric_figure

    one = {"uniform": [(0.7, 380.0, 350.0, 410.0)], "atp": [(0.7, 276.0, 258.0, 297.0)]}
    caption, png = _metric_figure(one, "perplexity (held)", "sparsegpt", tmp_path / "a.png")
    assert caption == "sparsegpt, 70% sparsity: perplexity (held) per method, best first " \
        "(95% intervals)" and Image.open(png).size[0] > 0
    two = {"uniform": [(0.5, 40.0, 38.0, 42.0), (0.7, 380.0, 350.0, 410.0)]}
    caption, png = _metric_figure(two, "perplexity (held)", "wanda", tmp_path / "b.png")
    assert caption == "wanda: perplexity (held) against sparsity (95% intervals)" and png.exists()


def test_a_run_over_cells_from_another_machine_says_so_before_any_work(tmp_path, caplog):
    import logging

    from layerif.environment import machine_record
    from layerif.experiments.cells import CellStore

    def stored(name, machine):
        (tmp_path / "cells" / "eval" / name).mkdir(parents=True)
        (tmp_path / "cells" / "eval" / name / "cell.json").write_text(json.dumps(
            {"kind": "eval", "result": {}, **({"machine": machine} if machine else {})}))

    stored("here", machine_record())
    stored("old", None)  # made before cells recorded it: nothing to compare
    with caplog.at_level(logging.WARNING):
        CellStore(tmp_path)
    assert not caplog.records
    stored("there", {**machine_record(), "isa": "AVX2"})
    with caplog.at_level(logging.WARNING):
        CellStore(tmp_path, stored_only=True)  # a report of what is stored: nothing computed
        assert not caplog.records
        CellStore(tmp_path)
    [record] = caplog.records
    assert "1 stored cells were computed on another machine" in record.getMessage()
    assert "(AVX2)" in record.getMessage()
