"""Seeds, dtypes and model identity on every command: the same command in two fresh processes
writes byte-identical outputs; bf16 gives fp32's results within bf16's precision; files made
for other weights are refused; leaking calibration or fine-tuning data is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TEXTS, build_tiny_model

from layerif.cli import main


def run(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_model_dir, tokenizer):
    """A tiny Llama folder, another with the same config and other weights, calibration text,
    scores (disjoint slices) and allocations for the first."""
    root = tmp_path_factory.mktemp("repro")
    model = tiny_model_dir("llama")
    other = root / "other"
    build_tiny_model("llama", len(tokenizer), seed=1).save_pretrained(other)
    tokenizer.save_pretrained(other)
    calib = root / "calib.jsonl"
    calib.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS * 4))
    assert run("score", "--model", model, "--train", "mrpc:validation[0:6]", "--val",
               "mrpc:validation[6:8]", "--format", "instruct", "--max-length", 160,
               "--quiet", "--out", root / "scores") == 0
    assert run("allocate", "experts", "--method", "layerif", "--total", 6, "--scores",
               root / "scores", "--model", model, "--out", root / "experts.json") == 0
    assert run("allocate", "sparsity", "--method", "layerif", "--sparsity", 0.5, "--scores",
               root / "scores", "--out", root / "alloc.json", "--model", model) == 0
    return {"root": root, "model": model, "other": other, "calib": calib}


def cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "layerif.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, check=True)


def test_finetune_moe_is_byte_identical_across_processes(work, tmp_path):
    args = ["finetune-moe", "--model", work["model"], "--experts", work["root"] / "experts.json",
            "--train", "mrpc:validation[0:6]", "--epochs", 1, "--max-length", 160, "--quiet",
            "--device", "cpu"]
    cli(*args, "--out", tmp_path / "a")
    cli(*args, "--out", tmp_path / "b")
    a = (tmp_path / "a" / "adapter_model.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "adapter_model.safetensors").read_bytes()
    cli(*args[:-2], "--seed", 1, "--device", "cpu", "--out", tmp_path / "c")
    assert a != (tmp_path / "c" / "adapter_model.safetensors").read_bytes()  # the seed matters


@pytest.mark.parametrize("pruner", ["wanda", "sparsegpt"])
def test_prune_twice_gives_identical_weights(pruner, work, tmp_path):
    from safetensors.torch import load_file

    for name in ("a", "b"):
        assert run("prune", "--model", work["model"], "--allocation", work["root"] / "alloc.json",
                   "--pruner", pruner, "--calibration", work["calib"], "--nsamples", 4,
                   "--seqlen", 16, "--quiet", "--device", "cpu", "--out", tmp_path / name) == 0
    a, b = (load_file(tmp_path / n / "model.safetensors") for n in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_prune_in_bf16_matches_fp32(work, tmp_path):
    from safetensors.torch import load_file

    for dtype in ("float32", "bfloat16"):
        assert run("prune", "--model", work["model"], "--allocation", work["root"] / "alloc.json",
                   "--pruner", "sparsegpt", "--calibration", work["calib"], "--nsamples", 4,
                   "--seqlen", 16, "--quiet", "--dtype", dtype, "--out", tmp_path / dtype) == 0
    fp32, bf16 = (load_file(tmp_path / d / "model.safetensors") for d in ("float32", "bfloat16"))
    info = json.loads((tmp_path / "bfloat16" / "pruning.json").read_text())
    assert info["dtype"] == "bfloat16" and abs(info["global_achieved"] - 0.5) < 0.01
    for key in (k for k in fp32 if "layers" in k and k.endswith("proj.weight")):
        same_mask = float(((fp32[key] == 0) == (bf16[key] == 0)).float().mean())
        # bf16 rounds weights and activations by 2^-8: scores near the cut may swap sides.
        assert same_mask > 0.9, key
        assert bf16[key].dtype == torch.bfloat16


def test_eval_in_bf16_matches_fp32(work, tmp_path):
    results = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.json"
        assert run("eval", "--model", work["model"], "--tasks", "arc_easy", "--slice", "0:12",
                   "--ppl", work["calib"], "--dtype", dtype, "--quiet", "--out", out) == 0
        results[dtype] = json.loads(out.read_text())
    fp32, bf16 = results["float32"], results["bfloat16"]
    assert bf16["dtype"] == "bfloat16"
    ppl32, ppl16 = (r["perplexity"][str(work["calib"])]["perplexity"] for r in (fp32, bf16))
    assert abs(np.log(ppl16) - np.log(ppl32)) < 0.02  # mean NLL within 0.02 nats
    assert abs(fp32["tasks"]["arc_easy"]["acc"] - bf16["tasks"]["arc_easy"]["acc"]) <= 2 / 12


def test_finetune_bf16_base_trains_fp32_adapters_on_its_device(work, tmp_path):
    from safetensors.torch import load_file

    histories = {}
    for dtype in ("float32", "bfloat16"):
        assert run("finetune-moe", "--model", work["model"], "--experts",
                   work["root"] / "experts.json", "--train", "mrpc:validation[0:6]", "--epochs", 2,
                   "--max-length", 160, "--quiet", "--dtype", dtype, "--out", tmp_path / dtype) == 0
        histories[dtype] = [h["loss"] for h in json.loads(
            (tmp_path / dtype / "training.json").read_text())["history"]]
        weights = load_file(tmp_path / dtype / "adapter_model.safetensors")
        assert all(w.dtype == torch.float32 for w in weights.values())
    np.testing.assert_allclose(histories["bfloat16"], histories["float32"], rtol=0.02)


def test_lora_moe_parameters_live_on_the_base_layer(tokenizer):
    from layerif.moe import LoRAMoELinear, MoEConfig, apply_lora_moe

    model = build_tiny_model("llama", len(tokenizer)).to(torch.bfloat16)
    apply_lora_moe(model, MoEConfig(experts=[1, 3], rank=2))
    layers = [m for m in model.modules() if isinstance(m, LoRAMoELinear)]
    assert len(layers) == 14
    for layer in layers:
        for p in (layer.lora_A, layer.lora_B, *([layer.router.weight] if layer.router else [])):
            assert p.device == layer.base.weight.device and p.dtype == torch.float32
    ids = torch.tensor([tokenizer(TEXTS[0])["input_ids"]])
    assert model(ids).logits.dtype == torch.bfloat16  # the update is cast back


def test_files_made_for_other_weights_are_refused(work, tmp_path, capsys):
    assert run("prune", "--model", work["other"], "--allocation", work["root"] / "alloc.json",
               "--pruner", "magnitude", "--quiet", "--out", tmp_path / "p") == 2
    err = capsys.readouterr().err
    assert "alloc.json was made for" in err and f"not for {work['other']}" in err
    assert "different weights (block 0" in err and not (tmp_path / "p").exists()
    assert run("finetune-moe", "--model", work["other"], "--experts",
               work["root"] / "experts.json", "--train", "mrpc:validation[0:6]", "--quiet",
               "--out", tmp_path / "f") == 2
    assert "experts.json was made for" in capsys.readouterr().err
    # The same weights saved elsewhere (a local copy) match: identity is the weights, not a name.
    copy = tmp_path / "copy"
    build_tiny_model("llama", _vocab(work), seed=0).save_pretrained(copy)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (copy / f).write_bytes((work["model"] / f).read_bytes())
    assert run("prune", "--model", copy, "--allocation", work["root"] / "alloc.json",
               "--pruner", "magnitude", "--quiet", "--out", tmp_path / "p2") == 0


def _vocab(work) -> int:
    return json.loads((work["model"] / "config.json").read_text())["vocab_size"]


def test_calibration_or_finetuning_data_that_leaks_is_refused(work, tmp_path, capsys):
    from layerif.data import get_task, load_rows
    from layerif.data.sources import TaskSpec

    row = load_rows(TaskSpec("mrpc"))[7]  # in the scoring val slice [6:8]
    leak = tmp_path / "leak.jsonl"
    example = get_task("mrpc").example(row, "x")
    leak.write_text(json.dumps({"text": example.prompt + example.completion}) + "\n"
                    + "".join(json.dumps({"text": t}) + "\n" for t in TEXTS * 4))
    assert run("prune", "--model", work["model"], "--allocation", work["root"] / "alloc.json",
               "--pruner", "wanda", "--calibration", leak, "--nsamples", 2, "--seqlen", 16,
               "--quiet", "--out", tmp_path / "p") == 2
    err = capsys.readouterr().err
    assert f"the calibration set {leak} shares content with the scoring val set" in err
    assert "mrpc:validation[7]" in err and not (tmp_path / "p").exists()
    # Fine-tuning on the scores' training slice is the design; on their validation slice, not.
    assert run("finetune-moe", "--model", work["model"], "--experts",
               work["root"] / "experts.json", "--train", "mrpc:validation[4:8]", "--quiet",
               "--out", tmp_path / "f") == 2
    assert "fine-tuning set mrpc:validation[4:8] shares content with the scoring val" in \
        capsys.readouterr().err
