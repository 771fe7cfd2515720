"""Bad input, tried as a new user would: each gets one line naming the file, line or option and
the fix, exit code 2, no traceback and nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import TEXTS

from layerif.cli import main
from layerif.data import load_file

SINGLE_TOKENS = [{"prompt": "A", "completion": " B"}, {"prompt": "C", "completion": " D"},
                 {"prompt": "E", "completion": " F"}]


def run(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad")
    (path / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    # disjoint from the training texts (score refuses validation data it was trained on)
    val = ["The moon goes round the earth about once a month.", "Rivers run downhill to the sea."]
    (path / "val.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in val))
    (path / "single.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SINGLE_TOKENS))
    (path / "single_val.jsonl").write_text(json.dumps({"prompt": "G", "completion": " H"}) + "\n")
    return path


def one_line_error(capsys, message: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0], err
    return lines[0]


def score_args(model_dir, files, out, *extra):
    return ["score", "--model", model_dir, "--train", files / "train.jsonl", "--val",
            files / "val.jsonl", "--out", out, "--quiet", "--max-length", 32, *extra]


@pytest.mark.parametrize("estimator", ["datainf", "exact"])
def test_zero_gradient_matrices_contribute_zero_and_are_named(estimator, tiny_model_dir, files,
                                                              tmp_path, tokenizer, capsys,
                                                              caplog):
    """A one-token prompt and a one-token completion: the only counted token is predicted from
    position 0, whose attention weights are 1 whatever q and k are, so q_proj and k_proj get a
    zero gradient for every example. lambda_m = 0 there; the matrix contributes exactly 0."""
    assert all(len(tokenizer(r["prompt"])["input_ids"]) == 1 for r in SINGLE_TOKENS)
    out = tmp_path / "s"
    assert run("score", "--model", tiny_model_dir("llama"), "--train", files / "single.jsonl",
               "--val", files / "single_val.jsonl", "--out", out, "--quiet", "--max-length", 64,
               "--estimator", estimator) == 0
    printed = capsys.readouterr()
    meta = json.loads((out / "scores.json").read_text())
    zero = meta["zero_gradient_matrices"]
    assert sorted(n.rsplit(".", 1)[1] for n in zero) == ["k_proj", "k_proj", "q_proj", "q_proj"]
    assert all(meta["lambdas"][n] == 0 for n in zero)
    influence = np.load(out / "influence.npy")
    assert np.isfinite(influence).all() and np.abs(influence).max() > 0
    assert "4 matrices had a zero gradient" in printed.out
    warned = [r.getMessage() for r in caplog.records if "contribute 0" in r.getMessage()]
    assert len(warned) == 1 and "4 of 14 matrices have a zero gradient" in warned[0]
    assert not (tmp_path / ".s.resume").exists()


def test_non_causal_models_are_refused(tmp_path, files, tokenizer, capsys):
    from transformers import BertConfig, BertForMaskedLM

    folder = tmp_path / "bert"
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=48)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert run(*score_args(folder, files, tmp_path / "out")) == 2
    one_line_error(capsys, "is a BertForMaskedLM (model_type 'bert'), not a decoder-only causal")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["under-a-file", "sysfs", "immutable"])
@pytest.mark.parametrize("resume", [[], ["--no-resume"]])
def test_unwritable_out_fails_before_any_work(where, resume, tiny_model_dir, files, tmp_path,
                                              capsys, monkeypatch):
    if where == "under-a-file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    elif where == "sysfs":
        if not os.path.isdir("/sys/kernel"):
            pytest.skip("no sysfs here")
        out = "/sys/layerif-test/out"
    else:
        folder = tmp_path / "locked"
        folder.mkdir()
        if shutil.which("chattr") is None or subprocess.run(
                ["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here")
        out = folder / "out"
    monkeypatch.setattr("layerif.scoring.score_layers",
                        lambda *a, **k: pytest.fail("the scoring ran before the check"))
    try:
        assert run(*score_args(tiny_model_dir("llama"), files, out), *resume) == 2
    finally:
        if where == "immutable":
            subprocess.run(["chattr", "-i", str(tmp_path / "locked")], check=True)
    one_line_error(capsys, f"cannot write {out}")


def test_damaged_gguf_files(tmp_path, files, capsys, monkeypatch):
    from layerif.models import builtin_gguf_path

    monkeypatch.setenv("LAYERIF_CACHE", str(tmp_path / "cache"))
    (tmp_path / "notgguf.gguf").write_text("this is a text file")
    assert run(*score_args(tmp_path / "notgguf.gguf", files, tmp_path / "o1")) == 2
    one_line_error(capsys, "notgguf.gguf: not a GGUF file (it starts with b'this'")
    with builtin_gguf_path("smollm2-135m").open("rb") as f:
        (tmp_path / "cut.gguf").write_bytes(f.read(1 << 20))  # the first MiB of the real one
    assert run(*score_args(tmp_path / "cut.gguf", files, tmp_path / "o2")) == 2
    one_line_error(capsys, "cut.gguf: could not read this GGUF file")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_byte_order_marks_are_not_data(tmp_path):
    bom = "\ufeff"
    (tmp_path / "a.jsonl").write_text(bom + json.dumps({"text": "hello there"}) + "\n")
    (tmp_path / "b.json").write_text(bom + json.dumps([{"text": "hello there"}]))
    (tmp_path / "c.csv").write_text(bom + "text\nhello there\n")
    for name in ("a.jsonl", "b.json", "c.csv"):
        (example,) = load_file(tmp_path / name)
        assert example.text == "hello there", name


def test_unknown_split_names_the_packaged_splits(tiny_model_dir, files, tmp_path, capsys):
    argv = score_args(tiny_model_dir("llama"), files, tmp_path / "o")
    argv[argv.index("--train") + 1] = "boolq:nosplit[0:4]"
    assert run(*argv) == 2
    one_line_error(capsys, "split 'nosplit' is not in the packaged copy of boolq (it has: "
                   "validation)")


def test_sparsity_above_the_cap(tiny_model_dir, tmp_path, capsys):
    scores = tmp_path / "s"
    scores.mkdir()
    (scores / "scores.json").write_text(json.dumps({
        "layers": [0, 1], "scores": [-1.0, -3.0], "aggregate": "helpful"}))
    assert run("allocate", "sparsity", "--method", "layerif", "--sparsity", 0.999, "--scores",
               scores, "--model", tiny_model_dir("llama"), "--out", tmp_path / "a.json") == 2
    one_line_error(capsys, "--sparsity 0.999 is above the per-layer cap 0.99")
    assert not (tmp_path / "a.json").exists()


def test_non_finite_scores_name_the_file_and_layer(tiny_model_dir, tmp_path, capsys):
    scores = tmp_path / "s"
    scores.mkdir()
    (scores / "scores.json").write_text('{"layers": [0, 1], "scores": [-1.0, NaN], '
                                        '"aggregate": "helpful"}')
    assert run("allocate", "experts", "--method", "layerif", "--total", 6, "--scores", scores,
               "--out", tmp_path / "e.json") == 2
    one_line_error(capsys, f"{scores / 'scores.json'}: aggregate 'helpful' is not finite at "
                   "layer(s) 1")


def test_interrupted_run_says_what_it_kept_and_resumes(tiny_model_dir, files, tmp_path, capsys,
                                                       monkeypatch):
    from layerif.influence.engine import GradientSource

    out = tmp_path / "x"
    real = GradientSource.weighted_sum

    def ctrl_c(self, weights, desc):
        if desc.startswith("2/3"):
            raise KeyboardInterrupt
        return real(self, weights, desc)

    with monkeypatch.context() as m:
        m.setattr(GradientSource, "weighted_sum", ctrl_c)
        assert run(*score_args(tiny_model_dir("llama"), files, out, "--mode", "streaming")) \
            == 130
    err = capsys.readouterr().err
    kept = tmp_path / ".x.resume"
    assert kept.is_dir() and not out.exists()
    assert f"finished steps are kept in {kept}" in err and f"rm -r {kept}" in err
    assert run(*score_args(tiny_model_dir("llama"), files, out, "--mode", "streaming")) == 0
    assert (f"resumed from {kept}: val_mean_gradient, dots_and_norms were already done"
            in capsys.readouterr().out)
    assert not kept.exists()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_follow_the_umask(umask, tiny_model_dir, files, tmp_path):
    old = os.umask(umask)
    try:
        assert run(*score_args(tiny_model_dir("llama"), files, tmp_path / "x")) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "x").stat().st_mode & 0o777 == 0o777 & ~umask
    for name in ("scores.json", "influence.npy"):
        assert (tmp_path / "x" / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_usage_errors_are_one_line(capsys):
    assert run("score", "--model") == 2
    one_line_error(capsys, "layerif score: argument --model: expected one argument")
    assert run("allocate", "sparsity", "--method", "nope") == 2
    one_line_error(capsys, "invalid choice: 'nope'")


def test_every_option_has_help():
    from layerif.cli import build_parser

    def walk(parser, path):
        for action in parser._actions:
            if action.choices and isinstance(action.choices, dict):  # subcommands
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")
            elif action.option_strings and action.dest != "help":
                yield f"{path} {action.option_strings[-1]}", action.help

    missing = [name for name, text in walk(build_parser(), "layerif") if not text]
    assert not missing, missing


def test_python_api_never_returns_nan(tiny_models, tokenizer):
    import layerif
    from layerif.data import Example

    examples = [Example(f"e{i}", prompt=r["prompt"], completion=r["completion"])
                for i, r in enumerate(SINGLE_TOKENS)]
    val = [Example("v0", prompt="G", completion=" H")]  # disjoint from the training examples
    result = layerif.score_layers(tiny_models("llama"), examples, val, tokenizer=tokenizer,
                                  progress=False)
    assert np.isfinite(result.influence).all() and len(result.zero_gradient_matrices) == 4
    assert sys.float_info.max > np.abs(result.scores).max()


# --- issue 27's first cases: refused at once, before any work -----------------------------


@pytest.mark.parametrize("argv, message", [
    (["--damping", "inf"], "argument --damping: inf is not a finite number"),
    (["--damping", "nan"], "argument --damping: nan is not a finite number"),
    (["--device", "tpu"], "argument --device: 'tpu' is not a device"),
    (["--device", "cuda:x"], "argument --device: 'cuda:x' is not a device"),
])
def test_score_refuses_non_finite_numbers_and_unknown_devices(argv, message, tiny_model_dir,
                                                               files, tmp_path, capsys):
    out = tmp_path / "s"
    assert run(*score_args(tiny_model_dir("llama"), files, out, *argv)) == 2
    one_line_error(capsys, message)
    assert not out.exists()


def test_cuda_without_a_cuda_device_is_refused_at_once(tiny_model_dir, files, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert run(*score_args(tiny_model_dir("llama"), files, tmp_path / "s", "--device",
                           "cuda")) == 2
    one_line_error(capsys, "no CUDA device is available here")


def test_component_floats_refuse_infinity(tiny_model_dir, tmp_path, capsys):
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"scores": [-1.0, -2.0], "layers": [0, 1]}))
    for kind, flag in (("experts", ["--total", 8]), ("ranks", ["--budget", 8])):
        out = tmp_path / f"{kind}.json"
        assert run("allocate", kind, "--method", "layerif", "--beta", "inf", "--scores", scores,
                   "--model", tiny_model_dir("llama"), *flag, "--out", out) == 2
        one_line_error(capsys, "argument --beta: inf is not a finite number")
        assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--tasks="], "--tasks '' names no task"),
    (["--limit", "0"], "argument --limit: must be >= 1, got 0"),
    (["--limit", "-5"], "argument --limit: must be >= 1, got -5"),
])
def test_eval_refuses_empty_tasks_and_limits_below_one(argv, message, tiny_model_dir, tmp_path,
                                                       capsys):
    out = tmp_path / "r.json"
    assert run("eval", "--model", tiny_model_dir("llama"), *argv, "--out", out) == 2
    one_line_error(capsys, message)
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--rank", "0"], "--rank must be >= 1, got 0"),
    (["--top-k", "5"], "--top-k must be in [1, 2]"),
])
def test_finetune_moe_refuses_impossible_adapters(argv, message, tiny_model_dir, tmp_path,
                                                  capsys):
    experts = tmp_path / "e.json"
    assert run("allocate", "experts", "--method", "uniform", "--total", 4, "--model",
               tiny_model_dir("llama"), "--out", experts) == 0
    out = tmp_path / "moe"
    assert run("finetune-moe", "--model", tiny_model_dir("llama"), "--experts", experts,
               "--train", "mrpc:validation[0:4]", "--epochs", 1, *argv, "--quiet",
               "--out", out) == 2
    one_line_error(capsys, message)
    assert not out.exists()


def test_a_truncated_safetensors_file_is_one_clear_error(tiny_model_dir, files, tmp_path,
                                                         capsys):
    folder = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir("llama"), folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    assert run(*score_args(folder, files, tmp_path / "s")) == 2
    one_line_error(capsys, "may be truncated or damaged")


def test_allocate_never_overwrites_an_unrelated_file(tiny_model_dir, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert run("allocate", "sparsity", "--method", "uniform", "--sparsity", 0.5, "--model",
               tiny_model_dir("llama"), "--out", notes) == 2
    one_line_error(capsys, "exists and is not a layerif sparsity allocation")
    assert notes.read_text() == "my notes\n"
    # a previous allocation is replaced as before
    alloc = tmp_path / "a.json"
    for sparsity in (0.5, 0.6):
        assert run("allocate", "sparsity", "--method", "uniform", "--sparsity", sparsity,
                   "--model", tiny_model_dir("llama"), "--out", alloc) == 0
    assert json.loads(alloc.read_text())["sparsity"] == 0.6


def test_allocate_ranks_writes_both_files_or_neither(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    (tmp_path / "r.lora_config.json").mkdir()  # the companion cannot be written
    assert run("allocate", "ranks", "--method", "uniform", "--budget", 8, "--model",
               tiny_model_dir("llama"), "--out", out) == 2
    one_line_error(capsys, "r.lora_config.json is a folder")
    assert not out.exists()
    (tmp_path / "r.lora_config.json").rmdir()
    assert run("allocate", "ranks", "--method", "uniform", "--budget", 8, "--model",
               tiny_model_dir("llama"), "--out", out) == 0
    assert out.exists() and (tmp_path / "r.lora_config.json").exists()


# --- outputs refused before the work (issue 45) --------------------------------------------


@pytest.mark.parametrize("existing", ["file", "foreign folder"])
def test_sensitivity_refuses_an_output_it_cannot_replace_before_any_trial(
        existing, tiny_model_dir, files, tmp_path, capsys, monkeypatch):
    """An --out that is a file, or a folder of someone else's files, is refused at once: no
    block measured, no .OUT.resume left, nothing glued to the message."""
    from layerif.sensitivity import run as sensitivity_run  # (imported before it is patched)

    def no_trials(*_a, **_k):
        raise AssertionError("measured before refusing the output")

    monkeypatch.setattr(sensitivity_run, "measure_sensitivity", no_trials)
    out = tmp_path / "sens"
    if existing == "file":
        out.write_text("my notes\n")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
    code = run("sensitivity", "--model", tiny_model_dir("llama"), "--pruner", "wanda",
               "--levels", "0.5", "--calibration", files / "train.jsonl", "--held",
               files / "val.jsonl", "--nsamples", 2, "--seqlen", 8, "--held-windows", 1,
               "--quiet", "--out", out)
    assert code == 2
    line = one_line_error(capsys, "--out")
    assert "finished steps" not in line
    assert not (tmp_path / ".sens.resume").exists()
    assert (out.read_text() if existing == "file" else (out / "notes.txt").read_text()) in (
        "my notes\n", "mine\n")


def test_eval_refuses_a_folder_as_out_before_evaluating(tiny_model_dir, tmp_path, capsys,
                                                        monkeypatch):
    from layerif import evaluation

    def no_eval(*_a, **_k):
        raise AssertionError("evaluated before refusing the output")

    monkeypatch.setattr(evaluation, "evaluate_model", no_eval)
    (tmp_path / "results").mkdir()
    assert run("eval", "--model", tiny_model_dir("llama"), "--tasks", "arc_easy", "--limit", 2,
               "--out", tmp_path / "results") == 2
    one_line_error(capsys, "--out takes a file name")


def test_allocate_refuses_an_unrelated_out_before_the_work(tiny_model_dir, tmp_path, capsys,
                                                           monkeypatch):
    from layerif.allocation import api

    def no_work(*_a, **_k):
        raise AssertionError("allocated before refusing the output")

    monkeypatch.setattr(api, "allocate_sparsity", no_work)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert run("allocate", "sparsity", "--method", "search", "--sparsity", 0.5, "--model",
               tiny_model_dir("llama"), "--out", notes) == 2
    one_line_error(capsys, "exists and is not a layerif sparsity allocation")
    assert notes.read_text() == "my notes\n"


@pytest.mark.parametrize("pruner", ["wanda", "magnitude"])
def test_an_interrupted_prune_resumes_at_its_next_block_bit_for_bit(pruner, tiny_model_dir,
                                                                    files, tmp_path, capsys,
                                                                    monkeypatch):
    """Ctrl-C in block 1: the message says what was kept; the same command resumes at block 1
    (block 0 is not pruned again) and writes the weights an uninterrupted prune writes."""
    import torch
    from safetensors.torch import load_file

    from layerif.pruning import prune as prune_module

    model = tiny_model_dir("llama")
    alloc = tmp_path / "a.json"
    assert run("allocate", "sparsity", "--method", "uniform", "--sparsity", 0.5, "--model",
               model, "--out", alloc) == 0
    common = ["prune", "--model", model, "--allocation", alloc, "--pruner", pruner,
              "--calibration", files / "train.jsonl", "--nsamples", 2, "--seqlen", 8,
              "--quiet"]
    assert run(*common, "--out", tmp_path / "whole") == 0
    real, calls = prune_module.prune_matrix, []

    def ctrl_c_in_block_1(W, ratio, pruner_, stats, name, structure=None):
        calls.append(name)
        if ".layers.1." in name:
            raise KeyboardInterrupt
        return real(W, ratio, pruner_, stats, name, structure)

    out = tmp_path / "p"
    with monkeypatch.context() as m:
        m.setattr(prune_module, "prune_matrix", ctrl_c_in_block_1)
        assert run(*common, "--out", out) == 130
    err = capsys.readouterr().err
    kept = tmp_path / ".p.resume"
    assert f"finished steps are kept in {kept}" in err and not out.exists()
    calls.clear()

    def counting(W, ratio, pruner_, stats, name, structure=None):
        calls.append(name)
        return real(W, ratio, pruner_, stats, name, structure)

    with monkeypatch.context() as m:
        m.setattr(prune_module, "prune_matrix", counting)
        assert run(*common, "--out", out) == 0
    assert calls and not any(".layers.0." in n for n in calls)  # block 0 was kept
    assert "resumed from" in capsys.readouterr().out and not kept.exists()
    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    resumed = load_file(str(out / "model.safetensors"))
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
