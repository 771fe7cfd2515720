"""Every command on a GPU (skipped without CUDA): `pytest -m cuda` on a machine with one.

Each result is compared with the same command on the CPU in fp32, within the precision of the
GPU run's dtype."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TEXTS

from layerif.cli import main

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def run(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("cuda")
    calib = root / "calib.jsonl"
    calib.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS * 4))
    return root, tiny_model_dir("llama"), calib


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_score_on_cuda(dtype, setup):
    root, model, _ = setup
    common = ["score", "--model", model, "--train", "mrpc:validation[0:8]", "--val",
              "mrpc:validation[8:10]", "--max-length", 128, "--quiet"]
    assert run(*common, "--device", "cpu", "--out", root / "cpu") == 0
    assert run(*common, "--device", "cuda", "--dtype", dtype, "--out", root / dtype) == 0
    cpu = np.load(root / "cpu" / "influence.npy")
    gpu = np.load(root / dtype / "influence.npy")
    meta = json.loads((root / dtype / "scores.json").read_text())
    assert meta["device"].startswith("cuda") and meta["dtype"] == dtype
    tol = 1e-4 if dtype == "float32" else 0.05  # TF32-free fp32 GEMMs vs bf16's 2^-8
    assert np.abs(gpu - cpu).max() <= tol * np.abs(cpu).max()


@pytest.mark.parametrize("pruner", ["magnitude", "wanda", "sparsegpt"])
def test_prune_on_cuda(pruner, setup):
    root, model, calib = setup
    alloc = root / "alloc.json"
    if not alloc.exists():
        assert run("allocate", "sparsity", "--method", "uniform", "--sparsity", 0.5, "--model",
                   model, "--out", alloc) == 0
    out = root / f"pruned-{pruner}"
    assert run("prune", "--model", model, "--allocation", alloc, "--pruner", pruner,
               "--calibration", calib, "--nsamples", 4, "--seqlen", 16, "--device", "cuda",
               "--dtype", "bfloat16", "--quiet", "--out", out) == 0
    info = json.loads((out / "pruning.json").read_text())
    assert info["device"].startswith("cuda") and abs(info["global_achieved"] - 0.5) < 0.01


def test_finetune_and_eval_on_cuda(setup):
    root, model, _ = setup
    experts = root / "experts.json"
    assert run("allocate", "experts", "--method", "uniform", "--total", 4, "--model", model,
               "--out", experts) == 0
    adapter = root / "adapter"
    assert run("finetune-moe", "--model", model, "--experts", experts, "--train",
               "mrpc:validation[0:8]", "--epochs", 1, "--max-length", 160, "--device", "cuda",
               "--dtype", "bfloat16", "--quiet", "--out", adapter) == 0
    for extra in ([], ["--adapter", adapter, "--generate"]):
        out = root / f"eval{len(extra)}.json"
        assert run("eval", "--model", model, *extra, "--tasks", "mrpc", "--slice", "20:28",
                   "--ppl", "none", "--device", "cuda", "--dtype", "bfloat16", "--quiet",
                   "--out", out) == 0
        assert json.loads(out.read_text())["device"].startswith("cuda")


def test_sparsegpt_on_cuda_matches_cpu():
    from layerif.pruning import sparsegpt_prune

    g = torch.Generator().manual_seed(0)
    W = torch.randn(32, 160, generator=g)
    X = torch.randn(400, 160, generator=g)
    H = 2 * X.T @ X / len(X)
    cpu = sparsegpt_prune(W, 0.5, H)
    gpu = sparsegpt_prune(W.cuda(), 0.5, H.cuda()).cpu()
    assert torch.equal(cpu == 0, gpu == 0)
    torch.testing.assert_close(gpu, cpu, rtol=1e-6, atol=1e-6)
