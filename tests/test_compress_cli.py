"""`layerif allocate`, `prune`, `export-recipe` on a tiny model folder, OWL's outlier ratio and
the allocation files' errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from layerif.allocation.sparsity_methods.owl import outlier_ratio, owl_sparsity
from layerif.cli import main


def run(*args):
    return main([str(a) for a in args])


def write_scores(path, model, scores, fingerprint=None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "scores.json").write_text(json.dumps({"model": str(model), "layers": list(
        range(len(scores))), "scores": scores, "aggregate": "net",
        "model_fingerprint": fingerprint or {}}))
    return path


@pytest.fixture(scope="module")
def other_weights(tokenizer):
    """The fingerprint of a model with tiny_dir's config but other weights."""
    from conftest import build_tiny_model

    from layerif.fingerprint import model_fingerprint

    return model_fingerprint(build_tiny_model("llama", len(tokenizer), seed=1), "other/model")


def test_outlier_ratio_by_hand():
    scores = torch.tensor([1.0] * 9 + [100.0])  # mean 10.9, threshold 5 x mean = 54.5
    assert outlier_ratio(scores, 5) == pytest.approx(0.1)
    assert outlier_ratio(scores, 10) == 0.0
    ratios = owl_sparsity([0.01, 0.03, 0.02], 0.5, lam=0.08)
    assert ratios.mean() == pytest.approx(0.5)
    np.testing.assert_allclose(ratios, [0.58, 0.42, 0.5])  # more outliers -> pruned less


METHOD_ARGS = {"atp": ["--atp-held", 1, "--atp-grid", "0,1"]}


@pytest.mark.parametrize("method", ["layerif", "uniform", "alphapruning", "owl", "dlp", "atp"])
def test_allocate_sparsity_methods(method, tiny_dir, calib, tmp_path):
    scores = write_scores(tmp_path / "s", tiny_dir, [-3.0, 5.0])
    out = tmp_path / "alloc.json"
    assert run("allocate", "sparsity", "--method", method, "--sparsity", 0.5, "--model",
               tiny_dir, "--scores", scores, "--calibration", calib, "--nsamples", 4,
               "--seqlen", 16, *METHOD_ARGS.get(method, []), "--out", out) == 0
    alloc = json.loads(out.read_text())
    P = np.array(alloc["params_per_layer"])
    assert alloc["method"] == method and len(alloc["ratios"]) == 2
    assert abs((np.array(alloc["ratios"]) * P).sum() / P.sum() - 0.5) < 1e-9
    if method == "layerif":  # |5| > |-3|: layer 1 is pruned more
        assert alloc["ratios"][1] > alloc["ratios"][0]


def test_prune_and_recipe(tiny_dir, calib, tmp_path):
    from transformers import AutoModelForCausalLM

    alloc = tmp_path / "alloc.json"
    run("allocate", "sparsity", "--method", "layerif", "--sparsity", 0.6, "--model", tiny_dir,
        "--scores", write_scores(tmp_path / "s", tiny_dir, [1.0, 2.0]), "--out", alloc)
    out = tmp_path / "pruned"
    assert run("prune", "--model", tiny_dir, "--allocation", alloc, "--pruner", "wanda",
               "--calibration", calib, "--nsamples", 4, "--seqlen", 16, "--quiet",
               "--out", out) == 0
    info = json.loads((out / "pruning.json").read_text())
    assert abs(info["global_achieved"] - 0.6) < 0.01 and info["calibration"]["nsamples"] == 4
    assert info["pruner"] == "wanda" and info["pruner_arguments"] == {}
    model = AutoModelForCausalLM.from_pretrained(out)
    ratios = json.loads(alloc.read_text())["ratios"]
    q0 = model.model.layers[0].self_attn.q_proj.weight
    assert abs(float((q0 == 0).float().mean()) - ratios[0]) < 1 / q0.shape[1] + 1e-9
    recipe = tmp_path / "recipe.yaml"
    assert run("export-recipe", "--allocation", alloc, "--model", tiny_dir, "--out", recipe) == 0
    mod = yaml.safe_load(recipe.read_text())["sparsity_stage"]["sparsity_modifiers"]
    spars = mod["SparseGPTModifier"]["sparsity"]  # a list in block order, as llm-compressor
    assert spars == pytest.approx(ratios, abs=1e-6)  # types it (float | list[float])
    assert mod["SparseGPTModifier"]["targets"] == [r"re:model\.layers\.\d+$"]


def test_experts_command(tiny_dir, tmp_path):
    out = tmp_path / "experts.json"
    assert run("allocate", "experts", "--method", "layerif", "--total", 7, "--scores",
               write_scores(tmp_path / "s", tiny_dir, [-2.0, 4.0]), "--out", out) == 0
    assert json.loads(out.read_text())["experts"] == [6, 1]
    assert run("allocate", "experts", "--method", "mola", "--pattern", "1,3", "--total", 4,
               "--model", tiny_dir, "--out", out) == 0
    assert json.loads(out.read_text())["experts"] == [1, 3]
    assert run("allocate", "experts", "--method", "mola", "--pattern", "2,5",  # fixes T = 7
               "--model", tiny_dir, "--out", out) == 0
    assert json.loads(out.read_text())["experts"] == [2, 5]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["allocate", "sparsity", "--method", "uniform", "--sparsity", "1.2"],
         r"sparsity must be in [0, 1)"),
        (["allocate", "sparsity", "--method", "layerif", "--sparsity", "0.5",
          "--scores", "{other}"], "was made for other/model (fingerprint"),
        (["allocate", "experts", "--method", "layerif", "--total", "8",
          "--scores", "{other}"], "not for {tiny} (fingerprint"),
        (["allocate", "experts", "--method", "layerif", "--total", "8",
          "--scores", "{three}"], "has 3 layer scores but the model has 2 blocks"),
        (["allocate", "sparsity", "--method", "layerif", "--sparsity", "0.5",
          "--scores", "{three}"], "has 3 layer scores but the model has 2 blocks"),
        (["allocate", "experts", "--method", "uniform", "--total", "1"],
         "fewer than the 2 layers"),
        (["allocate", "experts", "--method", "layerif", "--total", "4", "--beta", "0",
          "--scores", "{two}"], "beta must be > 0"),
        (["allocate", "experts", "--method", "uniform"], r"needs the total number of experts"),
        (["allocate", "experts", "--method", "mola", "--pattern", "2,5", "--total", "6"],
         "pattern 2,5 gives 7 experts over 2 layers, not the total 6"),
        (["prune", "--allocation", "{bad_alloc}", "--pruner", "magnitude"],
         "has 3 layer ratios but"),
        (["allocate", "sparsity", "--method", "uniform", "--sparsity", "0.5", "--owl-m", "3"],
         "--owl-m applies to method owl, not uniform"),
        (["allocate", "sparsity", "--method", "dlp", "--sparsity", "0.5", "--dlp-alpha", "0.6",
          "--calibration", "no/such/file.txt"], "DLP's alpha must be in [0, 0.5], got 0.6"),
        (["allocate", "experts", "--method", "uniform", "--total", "4", "--beta", "3"],
         "--beta applies to method layerif and alphalora, not uniform"),
        (["prune", "--allocation", "{bad_alloc}", "--pruner", "wanda", "--sparsegpt-damping",
          "0.1"], "--sparsegpt-damping applies to pruner sparsegpt, not wanda"),
        (["allocate", "sparsity", "--method", "atp", "--sparsity", "0.5", "--nsamples", "4",
          "--seqlen", "16", "--calibration", "{calib}"], "needs more than that; got 4"),
    ],
)
def test_allocation_errors(argv, message, tiny_dir, calib, tmp_path, capsys, other_weights):
    paths = {
        "calib": calib,
        "other": write_scores(tmp_path / "o", "other/model", [1.0, 2.0], other_weights),
        "three": write_scores(tmp_path / "t", tiny_dir, [1.0, 2.0, 3.0]),
        "two": write_scores(tmp_path / "w", tiny_dir, [1.0, 2.0]),
        "bad_alloc": tmp_path / "bad.json",
    }
    (tmp_path / "bad.json").write_text(json.dumps({
        "method": "uniform", "parameters": {}, "model": "x", "layers": [0, 1, 2],
        "ratios": [0.5] * 3, "params_per_layer": [1] * 3, "sparsity": 0.5,
        "global_sparsity": 0.5}))
    argv = [a.format(**paths) for a in argv]
    out = tmp_path / "out"
    assert run(*argv, "--model", tiny_dir, "--out", out) == 2
    err = capsys.readouterr().err
    message = message.format(tiny=tiny_dir)
    assert "error: " in err and message in err and "Traceback" not in err
    assert not out.exists()


def test_aggregate_choice(tmp_path, tiny_dir):
    from layerif.allocation.api import load_scores
    from layerif.errors import LayerIFError

    folder = write_scores(tmp_path / "s", tiny_dir, [0.0, 0.0])
    meta = json.loads((folder / "scores.json").read_text())
    # A file from before the rename: its old keys are read under the new names.
    meta["aggregates"] = {"all": [-3.0, 1.0], "positive": [0.0, 0.0]}
    (folder / "scores.json").write_text(json.dumps(meta))
    assert load_scores(folder, "harmful")["scores"] == [0.0, 0.0]
    assert load_scores(folder, "net")["scores"] == [-3.0, 1.0]
    with pytest.raises(LayerIFError, match="'all' was renamed: use 'net'"):
        load_scores(folder, "all")
    with pytest.raises(LayerIFError, match="no aggregate 'top25'"):
        load_scores(folder, "top25")


def test_finetune_and_evaluate_an_adapter(tiny_dir, tmp_path, capsys):
    experts, adapter, results = tmp_path / "e.json", tmp_path / "moe", tmp_path / "r.json"
    assert run("allocate", "experts", "--method", "mola", "--pattern", "1,3", "--total", 4,
               "--model", tiny_dir, "--out", experts) == 0
    assert run("finetune-moe", "--model", tiny_dir, "--experts", experts, "--train",
               "mrpc:validation[0:8]", "--epochs", 1, "--max-length", 160, "--quiet",
               "--out", adapter) == 0
    training = json.loads((adapter / "training.json").read_text())
    assert training["train"] == "mrpc:validation[0:8]" and training["format"] == "instruct"
    assert run("eval", "--model", tiny_dir, "--adapter", adapter, "--tasks", "mrpc",
               "--slice", "8:12", "--generate", "--ppl", "none", "--quiet",
               "--out", results) == 0
    mrpc = json.loads(results.read_text())["tasks"]["mrpc"]
    # lm-eval's mrpc task defines acc and f1 (no acc_norm)
    assert mrpc["n"] == 4 and {"acc", "f1", "gen_acc", "gen_unanswered"} <= set(mrpc)
    assert len(mrpc["generations"]) == 4
    assert run("eval", "--model", tiny_dir, "--adapter", adapter, "--tasks", "mrpc",
               "--slice", "4:12", "--ppl", "none", "--out", tmp_path / "x.json") == 2
    assert "shares content with the fine-tuning set mrpc:validation[0:8]" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("kind", [["sparsity", "--sparsity", "0.5"], ["experts", "--total", "6"]])
def test_flat_profiles_are_refused_naming_another_aggregate(kind, tmp_path, tiny_dir, capsys):
    folder = write_scores(tmp_path / "s", tiny_dir, [0.0, 0.0])
    meta = json.loads((folder / "scores.json").read_text())
    meta.update(aggregate="harmful", aggregates={"harmful": [0.0, 0.0], "helpful": [-3.0, -1.0]})
    (folder / "scores.json").write_text(json.dumps(meta))
    out = tmp_path / "alloc.json"
    argv = ["allocate", kind[0], "--method", "layerif", *kind[1:], "--scores", folder,
            "--model", tiny_dir, "--out", out]
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert "aggregate 'harmful' is 0 for every layer" in err and "--aggregate helpful" in err
    assert not out.exists()
    assert run(*argv, "--aggregate", "helpful") == 0  # the non-flat one allocates
    assert len(set(json.loads(out.read_text())[
        "ratios" if kind[0] == "sparsity" else "experts"])) == 2
