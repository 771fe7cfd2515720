"""N:M sparsity: every group of M consecutive inputs of a row has N zeros, for every pruner;
per-layer patterns (dense / N:M / unstructured) chosen by the allocation, recorded and achieved;
SparseGPT's N:M reconstructs better than Wanda's on correlated inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from layerif.allocation.patterns import assign_patterns
from layerif.cli import main
from layerif.pruning.pruners import magnitude_prune, nm_mask, sparsegpt_prune, wanda_prune


def run(*args):
    return main([str(a) for a in args])


def zeros_per_group(W: torch.Tensor, m: int) -> torch.Tensor:
    return (W.reshape(W.shape[0], -1, m) == 0).sum(-1)


def correlated_inputs(d_in: int, tokens: int, seed: int = 0) -> torch.Tensor:
    """Tokens whose features share a few strong directions (as LLM activations do)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d_in, d_in, generator=g) * torch.logspace(0, -2, d_in)[:, None]
    return torch.randn(tokens, d_in, generator=g) @ mix + 0.01 * torch.randn(tokens, d_in,
                                                                              generator=g)


@pytest.mark.parametrize("structure", [(2, 4), (1, 4), (3, 4), (4, 8)])
def test_every_group_has_n_zeros_for_every_pruner(structure):
    n, m = structure
    g = torch.Generator().manual_seed(1)
    W = torch.randn(24, 64, generator=g)
    X = correlated_inputs(64, 256)
    H = 2 * X.T @ X / X.shape[0]
    for pruned in (magnitude_prune(W, 0.0, structure),
                   wanda_prune(W, 0.0, X.square().sum(0), structure),
                   sparsegpt_prune(W, 0.0, H, structure=structure)):
        assert (zeros_per_group(pruned, m) >= n).all()
        assert (pruned == 0).float().mean() == pytest.approx(n / m)


def test_nm_mask_picks_the_lowest_scores_of_each_group():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.5, 9.0, 8.0, 0.1]])
    assert nm_mask(score, (2, 4)).tolist() == [[False, True, False, True,
                                                True, False, False, True]]


def test_sparsegpt_nm_reconstructs_better_than_wanda_nm():
    g = torch.Generator().manual_seed(2)
    W = torch.randn(32, 128, generator=g)
    X = correlated_inputs(128, 1024, seed=3)
    H = 2 * X.T @ X / X.shape[0]
    error = {}
    for name, pruned in (("wanda", wanda_prune(W, 0.0, X.square().sum(0), (2, 4))),
                         ("sparsegpt", sparsegpt_prune(W, 0.0, H, structure=(2, 4)))):
        error[name] = float((X @ (W - pruned).T).square().sum() / (X @ W.T).square().sum())
    assert error["sparsegpt"] < 0.5 * error["wanda"], error


def test_a_group_straddling_the_row_is_refused():
    from layerif.errors import LayerIFError

    with pytest.raises(LayerIFError, match="groups of 8"):
        wanda_prune(torch.randn(4, 12), 0.0, torch.ones(12), (4, 8))


def test_patterns_keep_the_global_target_as_closely_as_they_allow():
    ratios, params = [0.3, 0.45, 0.55, 0.7, 0.6, 0.4], [1] * 6
    patterns, s = assign_patterns(ratios, params, 0.5, ["dense", "1:4", "2:4", "3:4"])
    assert patterns == ["1:4", "2:4", "2:4", "3:4", "2:4", "2:4"] and s.mean() == 0.5
    # 2:4 and 3:4 only: 0.5 x 6 layers is reachable only as all 2:4
    patterns, s = assign_patterns(ratios, params, 0.55, ["2:4", "3:4"])
    assert s.mean() == pytest.approx(0.5 + 0.25 / 6)  # the closest the levels allow to 0.55
    # with unstructured allowed the target holds exactly, one layer taking the remainder
    patterns, s = assign_patterns(ratios, params, 0.55, ["2:4", "3:4", "unstructured"])
    assert s.mean() == pytest.approx(0.55) and patterns.count("unstructured") == 1
    # unequal layer sizes: the levels are weighted by the parameters
    patterns, s = assign_patterns([0.5, 0.5], [3, 1], 0.5625, ["2:4", "3:4"])
    assert (np.dot(s, [3, 1]) / 4) == pytest.approx(0.5625) and patterns == ["2:4", "3:4"]


def write_scores(folder, model_dir, scores):
    folder.mkdir()
    (folder / "scores.json").write_text(json.dumps({
        "model": str(model_dir), "layers": list(range(len(scores))), "scores": scores,
        "aggregate": "net", "model_fingerprint": {}}))
    return folder


@pytest.mark.parametrize("pruner", ["wanda", "sparsegpt"])
def test_a_mixed_allocation_records_and_achieves_each_layer_pattern(pruner, tiny_dir, calib,
                                                                    tmp_path):
    from transformers import AutoModelForCausalLM

    scores = write_scores(tmp_path / "s", tiny_dir, [-1.0, -9.0])
    alloc = tmp_path / "alloc.json"
    assert run("allocate", "sparsity", "--method", "layerif", "--sparsity", 0.5, "--epsilon",
               0.5, "--no-smooth", "--scores", scores, "--model", tiny_dir, "--patterns",
               "dense,1:4,2:4,3:4", "--out", alloc) == 0
    recorded = json.loads(alloc.read_text())
    assert recorded["patterns"] == ["1:4", "3:4"]  # |S| larger in layer 1: pruned more
    assert recorded["global_sparsity"] == pytest.approx(0.5)
    out = tmp_path / "pruned"
    assert run("prune", "--model", tiny_dir, "--allocation", alloc, "--pruner", pruner,
               "--calibration", calib, "--nsamples", 4, "--seqlen", 16, "--quiet",
               "--out", out) == 0
    info = json.loads((out / "pruning.json").read_text())
    assert info["patterns"] == ["1:4", "3:4"] and info["global_achieved"] == pytest.approx(0.5)
    model = AutoModelForCausalLM.from_pretrained(out)
    for layer, n in ((0, 1), (1, 3)):
        for name, module in model.model.layers[layer].named_modules():
            if isinstance(module, torch.nn.Linear):
                assert (zeros_per_group(module.weight, 4) == n).all(), (layer, name)


def test_mask_structure_needs_a_matching_uniform_allocation(tiny_dir, calib, tmp_path, capsys):
    alloc = tmp_path / "alloc.json"
    assert run("allocate", "sparsity", "--method", "uniform", "--sparsity", 0.5, "--model",
               tiny_dir, "--out", alloc) == 0
    out = tmp_path / "pruned"
    assert run("prune", "--model", tiny_dir, "--allocation", alloc, "--pruner", "wanda",
               "--mask-structure", "--calibration", calib, "--nsamples", 4, "--seqlen", 16,
               "--quiet", "--out", out) == 0
    assert json.loads((out / "pruning.json").read_text())["patterns"] == ["2:4", "2:4"]
    assert run("prune", "--model", tiny_dir, "--allocation", alloc, "--pruner", "wanda",
               "--mask-structure", "3:4", "--out", tmp_path / "other") == 2
    err = capsys.readouterr().err
    assert "prunes every layer to 0.75" in err and "--patterns" in err
    assert not (tmp_path / "other").exists()


def test_patterns_that_erase_the_allocation_are_flagged(tiny_dir, tmp_path, capsys):
    scores = write_scores(tmp_path / "s", tiny_dir, [-1.0, -9.0])
    alloc = tmp_path / "alloc.json"
    assert run("allocate", "sparsity", "--method", "layerif", "--sparsity", 0.5, "--no-smooth",
               "--scores", scores, "--model", tiny_dir, "--patterns", "dense,2:4",
               "--out", alloc) == 0  # ratios 0.4 and 0.6: both nearest 2:4
    assert json.loads(alloc.read_text())["patterns"] == ["2:4", "2:4"]
    assert "the allocation is lost; use finer patterns" in capsys.readouterr().err
