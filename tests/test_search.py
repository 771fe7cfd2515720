"""The `search` allocation: the ladder keeps the target exact, the level database equals pruning
afresh and the `sensitivity` trials, a candidate re-run from its first changed block equals a
full forward, a planted optimum is found, a killed search resumes to the same trajectory, and
bad arguments are refused before any database is built."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import PAIRS, TEXTS, build_tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from layerif.allocation import AllocationError
from layerif.allocation.api import allocate_sparsity
from layerif.data.calibration import calibration_samples
from layerif.data.provenance import content_set
from layerif.errors import LayerIFError
from layerif.models import discover_blocks
from layerif.pruning.calibration import capture_block_inputs, forward_block
from layerif.pruning.prune import InputStatistics, oriented_weight, prune_matrix
from layerif.search import Ladder, LevelDatabase, WholeModelFitness, mutate
from layerif.search.fitness import HeldText, full_forward_fitness

# --- the ladder ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(50, 5000), min_size=2, max_size=12),
       sparsity=st.floats(0.2, 0.8), step=st.sampled_from([0.01, 0.02, 0.05, 0.1]),
       seed=st.integers(0, 10_000))
def test_mutations_keep_the_global_target_exact_and_levels_on_the_ladder(sizes, sparsity,
                                                                        step, seed):
    """Blocks of different sizes: every level's ratio is a whole number of equal weight steps,
    so after any chain of swaps sum_l P_l s_l is the target to rounding, and no level leaves
    its block's range."""
    try:
        ladder = Ladder.build(sizes, sparsity, step, max(0.0, sparsity - 0.3),
                              min(0.95, sparsity + 0.25))
    except AllocationError:
        return  # (a ladder too coarse for these blocks is refused, tested below)
    P = np.asarray(sizes, dtype=np.float64)
    rng = np.random.default_rng(seed)
    levels = ladder.project(rng.uniform(0.1, 0.9, len(sizes)))
    for _ in range(40):
        levels = mutate(levels, ladder, rng)
        ladder.check(levels)
        ratios = ladder.ratios(levels)
        assert abs((P * ratios).sum() - sparsity * P.sum()) <= 1e-9 * P.sum()
        assert all(lo <= k <= hi for k, lo, hi in zip(levels, ladder.low, ladder.high,
                                                       strict=True))


def test_a_mutation_moves_one_to_three_levels_each_way():
    ladder = Ladder.build([1000] * 6, 0.5, 0.05, 0.2, 0.8)
    rng = np.random.default_rng(0)
    start = ladder.uniform()
    sizes = set()
    for _ in range(300):
        child = mutate(start, ladder, rng)
        diff = np.asarray(child) - np.asarray(start)
        assert diff.sum() == 0
        sizes.add(int(np.abs(diff).sum()) // 2)
    assert sizes <= {0, 1, 2, 3} and {1, 2} <= sizes


def test_projection_of_uniform_is_uniform_and_a_ladder_that_cannot_reach_is_refused():
    ladder = Ladder.build([1000] * 4, 0.6, 0.05, 0.3, 0.9)
    assert np.allclose(ladder.ratios(ladder.uniform()), 0.6)
    with pytest.raises(AllocationError, match="cannot reach the target"):
        Ladder.build([1000] * 4, 0.6, 0.05, 0.7, 0.9)


# --- the database and the fitness ----------------------------------------------------------


@pytest.fixture(scope="module")
def calib_windows(tokenizer, calib):
    return calibration_samples(tokenizer, calib, 4, 24, 0)


@pytest.fixture(scope="module")
def held(tokenizer, calib):
    ids = tokenizer(" ".join(f"{p} {c}." for p, c in PAIRS) * 3)["input_ids"]
    return HeldText(["pairs"], [4], [torch.tensor(ids[i * 24:(i + 1) * 24]) for i in range(4)])


def _fresh_block_prune(model, l, ratio, pruner, calibration):
    """Block l pruned afresh: statistics from hooks on the dense model's ordinary forward."""
    matrices = discover_blocks(model)[l].matrices
    stats = InputStatistics(need_hessian=pruner == "sparsegpt")
    handles = stats.hooks(matrices)
    with torch.no_grad():
        for w in calibration:
            model(w.view(1, -1))
    for h in handles:
        h.remove()
    return [prune_matrix(oriented_weight(m), ratio, pruner, stats, m.name) for m in matrices]


@pytest.mark.parametrize("pruner", ["wanda", "sparsegpt"])
def test_a_database_level_equals_pruning_that_block_afresh_and_the_sensitivity_trial(
        pruner, tokenizer, calib_windows, tmp_path, monkeypatch):
    """Wanda bit for bit, SparseGPT to float tolerance (its Hessian summed over windows in
    another order); and both equal the weights `layerif sensitivity` measures at that ratio."""
    from layerif.pruning.pruners import make_pruner
    from layerif.sensitivity import measure as measure_module

    model = build_tiny_model("llama", len(tokenizer), layers=3).eval()
    ladder = Ladder.build(
        [sum(m.numel for m in b.matrices) for b in discover_blocks(model)], 0.5, 0.1, 0.2,
        0.8)
    db = LevelDatabase(model, ladder, tmp_path / "db")
    db.build(make_pruner(pruner), calib_windows, {"test": 1}, progress=False)
    l, k = 1, ladder.low[1] + 2
    ratio = ladder.ratio(l, k)
    stored = db.level(l, k)
    fresh = _fresh_block_prune(model, l, ratio, pruner, calib_windows)
    for got, want in zip(stored, fresh, strict=True):
        if pruner == "wanda":
            assert torch.equal(got, want)
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert (got == 0).float().mean() == pytest.approx(ratio, abs=0.02)
    # the sensitivity measurement's trial of block l at this ratio holds exactly these weights
    seen = {}
    tail = measure_module.tail_nll

    def spy(model_, l_, hidden, windows):
        if l_ == l:
            seen["w"] = [oriented_weight(m).clone() for m in discover_blocks(model_)[l].matrices]
        return tail(model_, l_, hidden, windows)

    monkeypatch.setattr(measure_module, "tail_nll", spy)
    measure_module.measure_sensitivity(model, pruner, [ratio], calib_windows, calib_windows[:2],
                                       progress=False)
    for got, want in zip(stored, seen["w"], strict=True):
        assert torch.equal(got, want)
    # apply and restore: the model's weights come back bit for bit
    before = {n: p.clone() for n, p in model.state_dict().items()}
    db.apply(l, k)
    assert torch.equal(oriented_weight(discover_blocks(model)[l].matrices[0]), stored[0])
    db.restore()
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())


@pytest.mark.parametrize("kind", ["kl", "nll"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_rerun_from_the_first_changed_block_equals_a_full_forward(kind, arch, tokenizer,
                                                                  calib_windows, held,
                                                                  tmp_path):
    from layerif.pruning.pruners import make_pruner

    model = build_tiny_model(arch, len(tokenizer), layers=4).eval()
    params = [sum(m.numel for m in b.matrices) for b in discover_blocks(model)]
    ladder = Ladder.build(params, 0.5, 0.05, 0.2, 0.8)
    db = LevelDatabase(model, ladder, tmp_path / "db")
    db.build(make_pruner("wanda"), calib_windows, {"test": 1}, progress=False)
    fitness = WholeModelFitness(model, db, held, kind)
    rng = np.random.default_rng(0)
    parent = ladder.uniform()
    fitness.adopt(parent)
    for _ in range(4):
        child = mutate(parent, ladder, rng)
        first = fitness.first_change(child)
        via_cache = fitness.evaluate(child, [0, 2, 3])
        full = full_forward_fitness(model, [held.windows[i] for i in (0, 2, 3)], kind,
                                    [fitness.targets[i] for i in (0, 2, 3)]
                                    if kind == "kl" else None)
        assert via_cache == pytest.approx(np.mean(full), rel=1e-6, abs=1e-9), first
        fitness.adopt(child)
        parent = child
        # the adopted parent's cached fitness, too
        fitness.set_levels(parent)
        full = full_forward_fitness(model, held.windows, kind, fitness.targets)
        np.testing.assert_allclose(fitness.parent_fitness, full, rtol=1e-6, atol=1e-9)
    assert fitness.block_tokens < fitness.tokens  # some candidates skipped early blocks
    db.restore()


# --- the search -------------------------------------------------------------------------


def _text_file(tmp_path, name, texts):
    path = tmp_path / name
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(path)


@pytest.fixture
def texts(tmp_path):
    """Calibration, fitness and validation texts, disjoint by content."""
    calibration = _text_file(tmp_path, "calib.jsonl", TEXTS * 4)
    fitness = _text_file(tmp_path, "fit.jsonl", [f"{p} {c}. " * 8 for p, c in PAIRS])
    validation = _text_file(tmp_path, "val.jsonl", [
        f"Number {i} follows {i - 1} and comes before {i + 1} in the list. " * 3
        for i in range(12)])
    return calibration, fitness, validation


def _search(model, tokenizer, calibration, tmp_path, **options):
    samples = calibration_samples(tokenizer, calibration, 4, 32, 0)
    defaults = dict(seqlen=32, windows=6, tokens="64,128", survivors="2,1", offspring=6,
                    generations=4, validation_windows=3, validate_every=2, step=0.05,
                    workspace=str(tmp_path / "ws"))
    return allocate_sparsity("search", 0.5, model=model, model_name="tiny",
                             calibration=samples, tokenizer=tokenizer,
                             calibration_set=content_set(calibration, "calibration").to_dict(),
                             **{**defaults, **options})


def test_a_planted_optimum_is_found_from_uniform(tokenizer, texts, tmp_path):
    """Every block but block 2 writes to the residual stream through output weights scaled by
    0.02, so pruning them barely moves the output and block 2's pruning is what the KL sees:
    the optimum prunes block 2 least. From uniform the search takes it to the ladder's lowest
    level, the other blocks carrying the difference; the target stays exact."""
    calibration, fitness_text, validation = texts
    model = build_tiny_model("llama", len(tokenizer), layers=4).eval()
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            if i != 2:
                layer.self_attn.o_proj.weight.mul_(0.02)
                layer.mlp.down_proj.weight.mul_(0.02)
    alloc = _search(model, tokenizer, calibration, tmp_path, text=fitness_text,
                    validation="none", generations=12, max_deviation=0)
    ratios = np.asarray(alloc.ratios)
    assert alloc.global_sparsity == pytest.approx(0.5, abs=1e-12)
    assert ratios[2] == pytest.approx(0.2) and ratios[2] == ratios.min(), ratios  # (0.5 - 0.3)
    assert ratios[3] > 0.5  # (a block without planted damage carries it)
    final = alloc.parameters["final"]
    assert final["fitness"] < final["start_fitness"]
    assert final["gain_interval"][0] > 0  # better on the held windows, resampled
    fits = [t["fitness"] for t in alloc.parameters["trajectory"]]
    assert all(b <= a for a, b in zip(fits, fits[1:], strict=False))  # elitist: never worse


def test_a_killed_search_resumes_to_the_same_trajectory(tokenizer, texts, tmp_path,
                                                        monkeypatch):
    from layerif.search import evolution

    calibration, fitness_text, validation = texts
    model = build_tiny_model("llama", len(tokenizer), layers=3).eval()
    options = dict(text=fitness_text, validation=validation, generations=5)
    whole = _search(model, tokenizer, calibration, tmp_path / "whole", **options)
    saved = evolution._save
    calls = []

    def killed_after_two(*args):
        saved(*args)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(evolution, "_save", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        _search(model, tokenizer, calibration, tmp_path / "killed", **options)
    monkeypatch.setattr(evolution, "_save", saved)
    resumed = _search(model, tokenizer, calibration, tmp_path / "killed", **options)

    def strip(trajectory):
        return [{k: v for k, v in t.items() if k != "seconds"} for t in trajectory]

    assert strip(resumed.parameters["trajectory"]) == strip(whole.parameters["trajectory"])
    assert resumed.ratios == whole.ratios
    assert resumed.parameters["final"] == whole.parameters["final"]
    assert len(whole.parameters["trajectory"]) == 6  # the start and five generations
    # the model was given back dense
    again = _search(model, tokenizer, calibration, tmp_path / "whole", **options)
    assert again.ratios == whole.ratios
    # a larger budget goes on from the checkpoint, exactly as a longer run from scratch
    longer = _search(model, tokenizer, calibration, tmp_path / "whole",
                     **{**options, "generations": 7})
    fresh = _search(model, tokenizer, calibration, tmp_path / "fresh",
                    **{**options, "generations": 7})
    assert strip(longer.parameters["trajectory"]) == strip(fresh.parameters["trajectory"])
    assert strip(longer.parameters["trajectory"])[:6] == strip(whole.parameters["trajectory"])
    assert longer.ratios == fresh.ratios and len(fresh.parameters["trajectory"]) == 8


@pytest.mark.parametrize("options, message", [
    ({"generations": 0}, "--search-generations"),
    ({"start": "nonsense"}, "not a sparsity method"),
    ({"min_ratio": 0.6}, "cannot reach the target"),
    ({"tokens": "64,100000"}, "--search-tokens"),
    ({"survivors": "2,2"}, "end in 1"),
    ({"text": "CALIBRATION"}, "shares content"),
    ({"windows": 400, "tokens": "64,128"}, "fewer than the 400 --search-windows"),
])
def test_bad_arguments_are_refused_before_any_database_is_built(options, message, tokenizer,
                                                               texts, tmp_path, monkeypatch):
    from layerif.search import database

    calibration, fitness_text, validation = texts
    options = {k: (calibration if v == "CALIBRATION" else v) for k, v in options.items()}

    def no_build(*_a, **_k):
        raise AssertionError("the database was built before the refusal")

    monkeypatch.setattr(database.LevelDatabase, "build", no_build)
    model = build_tiny_model("llama", len(tokenizer), layers=2).eval()
    with pytest.raises(LayerIFError, match=message):
        _search(model, tokenizer, calibration, tmp_path,
                **{"text": fitness_text, "validation": validation, **options})
    assert not (tmp_path / "ws" / "databases").exists()


def test_the_command_writes_the_allocation_its_trajectory_plot_and_refuses_in_one_line(
        tiny_model_dir, texts, tmp_path, capsys):
    from layerif.cli import main

    calibration, fitness_text, validation = texts
    out = tmp_path / "s.json"
    common = ["allocate", "sparsity", "--method", "search", "--sparsity", "0.5", "--model",
              str(tiny_model_dir("llama")), "--calibration", calibration, "--nsamples", "4",
              "--seqlen", "32", "--search-seqlen", "32", "--search-windows", "6",
              "--search-tokens", "64,128", "--search-survivors", "2,1", "--search-offspring",
              "4", "--search-generations", "2", "--search-text", fitness_text,
              "--search-validation", validation, "--search-validation-windows", "3",
              "--search-step", "0.05", "--search-workspace", str(tmp_path / "ws")]
    assert main([*common, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    made = json.loads(out.read_text())
    assert made["method"] == "search" and made["global_sparsity"] == pytest.approx(0.5)
    assert {s["role"] for s in made["provenance"]} >= {"held (search fitness)",
                                                      "held (search validation)",
                                                      "calibration"}
    assert "search from uniform" in printed and out.with_suffix(".search.png").stat().st_size
    assert main([*common, "--search-start", "nonsense", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "--search-start" in err and not (tmp_path / "x.json").exists()


def test_the_search_leaves_the_model_as_it_was(tokenizer, texts, tmp_path):
    calibration, fitness_text, _ = texts
    model = build_tiny_model("qwen2", len(tokenizer), layers=2).eval()
    before = copy.deepcopy(model.state_dict())
    _search(model, tokenizer, calibration, tmp_path, text=fitness_text, validation="none",
            generations=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_block_inputs_cached_by_capture_match_the_model(tokenizer, held):
    """The cache's first entry (block 0's input) and one forward_block step agree with the
    model's own hidden states (the premise of re-running from a cached block)."""
    model = build_tiny_model("llama", len(tokenizer), layers=2).eval()
    captured = capture_block_inputs(model, [w.view(1, -1) for w in held.windows[:1]])
    out = model(held.windows[0].view(1, -1), output_hidden_states=True)
    torch.testing.assert_close(captured.hidden[0], out.hidden_states[0])
    block0 = model.get_submodule(discover_blocks(model)[0].path)
    h1 = forward_block(block0, captured, 0, captured.hidden, torch.device("cpu"))[0]
    torch.testing.assert_close(h1, out.hidden_states[1])


# --- in the experiment runner ---------------------------------------------------------------


SEARCH = {"method": "search", "generations": 2, "offspring": 3, "survivors": "2,1",
          "tokens": "128,256", "windows": 4, "seqlen": 64, "validation_windows": 2,
          "step": 0.05, "text": "sciq:validation[800:900]",
          "validation": "piqa:validation[0:300]"}


def _grid(tmp_path, methods):
    from test_experiment import small_config

    return small_config(tmp_path, methods=methods)


def test_a_grid_search_starts_from_the_grids_own_allocations(tmp_path):
    """`start: [uniform, atp]` takes the grid's uniform and ATP allocations of the same seed
    (their keys enter the search cell's), computes neither again, keeps its database and
    checkpoint beside the cells, and a rerun computes nothing."""
    from test_experiment import kinds

    from layerif.experiments import load_config, run_pruning

    config = _grid(tmp_path, [{"method": "uniform"},
                              {"method": "atp", "beta": 0.02, "label": "atp"},
                              {**SEARCH, "start": ["uniform", "atp"], "label": "search-best"}])
    out = tmp_path / "run"
    summary = run_pruning(load_config(config), out, progress=False)
    assert kinds(summary)["allocation"] == 3
    cells = out / "cells" / "allocation"
    by_method = {}
    for cell in cells.iterdir():
        record = json.loads((cell / "cell.json").read_text())
        by_method[record["settings"]["method"]] = (cell.name, record["settings"])
    search_key, settings = by_method["search"]
    assert settings["starts"] == {"uniform": by_method["uniform"][0], "atp": by_method["atp"][0]}
    alloc = json.loads((cells / search_key / "alloc.json").read_text())
    assert alloc["global_sparsity"] == pytest.approx(0.5, abs=1e-12)
    starts = alloc["parameters"]["starts"]
    assert [s["name"].split("/")[-2] for s in starts] == [by_method["uniform"][0],
                                                          by_method["atp"][0]]
    assert alloc["parameters"]["start"] == min(starts, key=lambda s: s["fitness"])["name"]
    assert list((out / "cells" / "search-work" / "databases").iterdir())
    assert list((out / "cells" / "search-work" / "runs").glob("*/state.json"))
    assert run_pruning(load_config(config), out, progress=False).executed == []


def test_a_grid_search_start_that_names_nothing_is_refused_naming_the_key(tmp_path):
    from layerif.experiments import load_config
    from layerif.experiments.config import ConfigError

    config = _grid(tmp_path, [{"method": "uniform"},
                              {**SEARCH, "start": ["uniform", "atp-steep"]}])
    with pytest.raises(ConfigError, match=r"methods\[1\].*atp-steep"):
        load_config(config)


def test_a_grid_search_whose_text_overlaps_the_evaluation_is_refused_before_any_work(tmp_path):
    from layerif.experiments import load_config, run_pruning

    config = _grid(tmp_path, [{"method": "uniform"},
                              {**SEARCH, "text": "arc_easy:validation[0:40]"}])
    with pytest.raises(LayerIFError, match="shares content"):
        run_pruning(load_config(config), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "cells").exists()


def test_a_second_text_added_later_evaluates_only_the_rows_it_names_and_the_report_shows_it(
        tmp_path):
    """`transfer` added to a grid that ran without it: the rows it names are pruned again and
    evaluated on the second text (their main evaluations kept), the dense model too; a rerun
    computes nothing; the report has the second text's table and the search section, with
    the search's gain on the evaluation texts beside its gain on the fitness text."""
    import yaml
    from test_experiment import kinds

    from layerif.experiments import load_config, run_pruning, write_report

    methods = [{"method": "uniform"}, {**SEARCH, "label": "search-uniform"}]
    config = _grid(tmp_path, methods)
    raw = yaml.safe_load(config.read_text())
    raw["dense"] = True
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    first = run_pruning(load_config(config), out, progress=False)
    evals = kinds(first)["eval"]
    raw["transfer"] = {"ppl": ["rte:validation[0:60]"], "ppl_seqlen": 64,
                       "methods": ["uniform", "search-uniform"]}
    config.write_text(yaml.safe_dump(raw))
    second = run_pruning(load_config(config), out, progress=False)
    assert kinds(second) == {"pruned": 2, "eval": 3}  # two rows re-pruned; + dense
    assert evals == 3 and all(r.get("transfer") for r in second.rows)
    assert run_pruning(load_config(config), out, progress=False).executed == []
    write_report(out)
    tables = (out / "tables.md").read_text()
    assert "second text: wanda, 50% sparsity" in tables and "rte:validation[0:60]" in tables
    assert "**the whole-model search**" in tables
    line = next(x for x in tables.splitlines() if x.startswith("| search-uniform | 0 |"))
    assert "| uniform |" in line  # its start: the grid's own uniform row
    cells = line.split("|")
    assert cells[8].strip().startswith(("+", "-")) and cells[9].strip().startswith(("+", "-"))
    assert (out / "plots" / "search-wanda-seed0.png").stat().st_size > 0
    raw["transfer"]["methods"] = ["nope"]
    config.write_text(yaml.safe_dump(raw))
    from layerif.experiments.config import ConfigError

    with pytest.raises(ConfigError, match="transfer.methods: nope"):
        load_config(config)


def test_a_search_from_a_file_inherits_what_shaped_that_start(tokenizer, texts, tmp_path):
    """A start allocation's recorded content sets (its scores' rows, say) travel on to the
    search's allocation, so a later evaluation on them is refused there too."""
    calibration, fitness_text, _ = texts
    model = build_tiny_model("llama", len(tokenizer), layers=2).eval()
    P = [sum(m.numel for m in b.matrices) for b in discover_blocks(model)]
    marked = content_set(_text_file(tmp_path, "scored.jsonl", ["A scored example row."]),
                         "scoring train").to_dict()
    start = tmp_path / "start.json"
    start.write_text(json.dumps({"method": "atp", "layers": [0, 1], "ratios": [0.4, 0.6],
                                 "params_per_layer": P, "provenance": [marked]}))
    alloc = _search(model, tokenizer, calibration, tmp_path, text=fitness_text,
                    validation="none", generations=1, start=str(start))
    assert marked in alloc.provenance
    assert alloc.parameters["start"] == str(start)
