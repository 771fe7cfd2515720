"""The bad inputs and races of issue 27, one row each: the command, what it is given, the exit
code and the words its one error line must hold; no traceback; the folder it works in compared
file by file before and after (nothing half-written, nothing removed).

Each case's `make(ctx)` writes what the case needs into ctx.tmp (before the snapshot) and returns
the argv; ctx holds a tiny Llama folder, a second one with other weights, a 3-block one and the
text files of the scoring tests."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import PAIRS, TEXTS, build_tiny_model

from layerif.cli import main
from layerif.locks import output_lock

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Context:
    tmp: Path
    model: Path  # tiny Llama, 2 blocks
    other: Path  # the same shape, other weights
    deeper: Path  # 3 blocks
    data: Path  # train.jsonl, val.jsonl

    def score_argv(self, *extra, out: str = "s") -> list:
        return ["score", "--model", self.model, "--train", self.data / "train.jsonl", "--val",
                self.data / "val.jsonl", "--max-length", 32, "--quiet", "--out",
                self.tmp / out, *extra]

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        return path

    def alloc(self, model: Path | None = None, name: str = "a.json") -> Path:
        out = self.tmp / name
        assert main(["allocate", "sparsity", "--method", "uniform", "--sparsity", "0.5",
                     "--model", str(model or self.model), "--out", str(out)]) == 0
        return out

    def experts(self) -> Path:
        out = self.tmp / "e.json"
        assert main(["allocate", "experts", "--method", "uniform", "--total", "4", "--model",
                     str(self.model), "--out", str(out)]) == 0
        return out

    def config(self, smoke: str = "smoke.yaml", **changes) -> Path:
        raw = yaml.safe_load((ROOT / "experiments" / smoke).read_text())
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        return self.write("config.yaml", yaml.safe_dump(raw))


@dataclass
class Case:
    id: str
    make: Callable[[Context], list]
    words: str
    code: int = 2
    hold: str | None = None  # an output (relative to ctx.tmp) another run holds meanwhile


def _scores_with_a_string(ctx: Context) -> list:
    ctx.write("scores.json", json.dumps({"scores": ["abc", -1.0], "layers": [0, 1]}))
    return ["allocate", "sparsity", "--method", "layerif", "--scores", ctx.tmp / "scores.json",
            "--sparsity", 0.5, "--model", ctx.model, "--out", ctx.tmp / "a.json"]


def _truncated(ctx: Context) -> Path:
    folder = ctx.tmp / "damaged"
    shutil.copytree(ctx.model, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    return folder


def _scores_file(ctx: Context) -> Path:
    return ctx.write("scores.json", json.dumps({"scores": [-1.0, -2.0], "layers": [0, 1]}))


CASES = [
    # non-finite numbers never reach JSON
    Case("score --damping inf", lambda c: c.score_argv("--damping", "inf"),
         "argument --damping: inf is not a finite number"),
    Case("allocate experts --beta inf", lambda c: [
        "allocate", "experts", "--method", "layerif", "--beta", "inf", "--scores",
        _scores_file(c), "--model", c.model, "--total", 8, "--out", c.tmp / "e.json"],
        "argument --beta: inf is not a finite number"),
    Case("allocate ranks --beta inf", lambda c: [
        "allocate", "ranks", "--method", "layerif", "--beta", "inf", "--scores", _scores_file(c),
        "--model", c.model, "--budget", 8, "--out", c.tmp / "r.json"],
        "argument --beta: inf is not a finite number"),
    # options that crashed instead of refusing
    Case("score --device tpu", lambda c: c.score_argv("--device", "tpu"),
         "argument --device: 'tpu' is not a device; use cpu, cuda or cuda:N"),
    Case("prune --device cuda:x", lambda c: [
        "prune", "--model", c.model, "--allocation", c.alloc(), "--pruner", "wanda",
        "--device", "cuda:x", "--out", c.tmp / "p"], "argument --device: 'cuda:x' is not"),
    Case("eval --tasks ''", lambda c: ["eval", "--model", c.model, "--tasks=", "--out",
                                       c.tmp / "r.json"], "--tasks '' names no task"),
    Case("eval --limit 0", lambda c: ["eval", "--model", c.model, "--limit", 0, "--out",
                                      c.tmp / "r.json"], "argument --limit: must be >= 1, got 0"),
    Case("eval --limit -5", lambda c: ["eval", "--model", c.model, "--limit", -5, "--out",
                                       c.tmp / "r.json"], "argument --limit: must be >= 1"),
    Case("finetune-moe --rank 0", lambda c: [
        "finetune-moe", "--model", c.model, "--experts", c.experts(), "--train",
        "mrpc:validation[0:4]", "--rank", 0, "--quiet", "--out", c.tmp / "moe"],
        "--rank must be >= 1, got 0"),
    Case("finetune-moe --top-k 5 with 2 experts a layer", lambda c: [
        "finetune-moe", "--model", c.model, "--experts", c.experts(), "--train",
        "mrpc:validation[0:4]", "--top-k", 5, "--quiet", "--out", c.tmp / "moe"],
        "--top-k must be in [1, 2]"),
    # damaged model files
    Case("score on a truncated model.safetensors", lambda c: [
        "score", "--model", _truncated(c), "--train", c.data / "train.jsonl", "--val",
        c.data / "val.jsonl", "--quiet", "--out", c.tmp / "s"], "may be truncated or damaged"),
    Case("eval on a truncated model.safetensors", lambda c: [
        "eval", "--model", _truncated(c), "--tasks", "arc_easy", "--limit", 2, "--out",
        c.tmp / "r.json"], "may be truncated or damaged"),
    # two runs on one output
    Case("score on an output another run writes", lambda c: c.score_argv(out="held"),
         "is being written by another run (pid", hold="held"),
    Case("experiment run on a folder another run writes", lambda c: [
        "experiment", "run", c.config(), "--out", c.tmp / "held"],
        "is being written by another run (pid", hold="held"),
    # partial writes
    Case("allocate ranks whose companion cannot be written", lambda c: (
        (c.tmp / "r.lora_config.json").mkdir(), [
            "allocate", "ranks", "--method", "uniform", "--budget", 8, "--model", c.model,
            "--out", c.tmp / "r.json"])[1], "r.lora_config.json is a folder"),
    Case("allocate --out over an unrelated file", lambda c: (
        c.write("notes.txt", "my notes\n"), [
            "allocate", "sparsity", "--method", "uniform", "--sparsity", 0.5, "--model",
            c.model, "--out", c.tmp / "notes.txt"])[1],
        "exists and is not a layerif sparsity allocation"),
    # experiment configs, checked before the first cell, in the file's words
    Case("config: epsilon 2 on layerif", lambda c: [
        "experiment", "run", c.config(methods=[{"method": "layerif", "epsilon": 2}]), "--out",
        c.tmp / "run"], "config.yaml: methods[0]: epsilon must be a number in [-1, 1]"),
    Case("config: total 2 in a LoRA-MoE grid", lambda c: [
        "experiment", "run", c.config("smoke-moe.yaml", total=2), "--out", c.tmp / "run"],
        "config.yaml: total: 2 experts are fewer than the model's 4 layers"),
    Case("config: sparsities [0.995]", lambda c: [
        "experiment", "run", c.config(sparsities=[0.995]), "--out", c.tmp / "run"],
        "config.yaml: sparsities: 0.995 is above method dlp's largest target 0.99"),
    Case("config: an unknown key under model", lambda c: [
        "experiment", "run", c.config(model={"colour": "red"}), "--out", c.tmp / "run"],
        "config.yaml: model: unknown key colour"),
    Case("config: evaluation slice and limit", lambda c: [
        "experiment", "run", c.config(evaluation={"limit": 4}), "--out", c.tmp / "run"],
        "config.yaml: evaluation: give slice (which rows) or limit (the first N), not both"),
    Case("config: a binary file", lambda c: [
        "experiment", "run", c.write("config.yaml", bytes(range(256))), "--out", c.tmp / "run"],
        "config.yaml: not UTF-8 text (invalid start byte at byte 128)"),
    Case("config: a YAML syntax error", lambda c: [
        "experiment", "run", c.write("config.yaml", "name: x\nmethods: [uniform\npruners: [a]\n"),
        "--out", c.tmp / "run"], "config.yaml: line 3, column 8: not valid YAML"),
    # an export for the wrong model
    Case("export-recipe for other weights", lambda c: [
        "export-recipe", "--allocation", c.alloc(), "--model", c.other, "--out",
        c.tmp / "recipe.yaml"], "a.json was made for"),
    Case("export-recipe for another layer count", lambda c: [
        "export-recipe", "--allocation", c.alloc(), "--model", c.deeper, "--out",
        c.tmp / "recipe.yaml"], "a.json has 2 layer ratios but"),
    # smaller ones
    Case("train and val the same data", lambda c: [
        "score", "--model", c.model, "--train", c.data / "train.jsonl", "--val",
        c.data / "train.jsonl", "--quiet", "--out", c.tmp / "s"],
        "the scoring val set"),
    Case("an unwritable --write-calibration", lambda c: [
        "export-recipe", "--allocation", c.alloc(), "--write-calibration",
        c.write("file", "x") / "cal.jsonl", "--out", c.tmp / "recipe.yaml"],
        "choose a --write-calibration in a folder you can write to"),
    Case("experiment report CONFIG.yaml", lambda c: [
        "experiment", "report", c.config()], "config.yaml is a file; give the folder a run wrote"),
    Case("UTF-16 training data", lambda c: [
        "score", "--model", c.model, "--train",
        c.write("train16.jsonl", (c.data / "train.jsonl").read_text().encode("utf-16")),
        "--val", c.data / "val.jsonl", "--quiet", "--out", c.tmp / "s"],
        "train16.jsonl: is UTF-16 text; convert it to UTF-8 (iconv -f UTF-16 -t UTF-8"),
    Case("a string score", _scores_with_a_string, "the score of layer 0 is 'abc', not a number"),
    Case("one training example: the bootstrap says nothing", lambda c: [
        "score", "--model", c.model, "--train",
        c.write("one.jsonl", json.dumps({"text": TEXTS[0]}) + "\n"), "--val",
        c.data / "val.jsonl", "--max-length", 32, "--aggregate", "net", "--quiet", "--out",
        c.tmp / "s"], "layer ranking untested: 1 training example(s) are too few", code=0),
    Case("--sparsity 0.99 allocates without a raw warning", lambda c: [
        "allocate", "sparsity", "--method", "layerif", "--scores", _scores_file(c),
        "--sparsity", 0.99, "--model", c.model, "--out", c.tmp / "a99.json"], "", code=0),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_model_dir, tokenizer):
    root = tmp_path_factory.mktemp("suite")
    data = root / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    (data / "val.jsonl").write_text("".join(
        json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in PAIRS[:3]))
    folders = {}
    for name, seed, layers in (("other", 1, 2), ("deeper", 0, 3)):
        folders[name] = root / name
        build_tiny_model("llama", len(tokenizer), layers, seed).save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    return tiny_model_dir("llama"), folders["other"], folders["deeper"], data


def tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, shared, tmp_path, capsys, recwarn):
    model, other, deeper, data = shared
    work = tmp_path / "work"
    work.mkdir()
    ctx = Context(work, model, other, deeper, data)
    argv = [str(a) for a in case.make(ctx)]
    capsys.readouterr()
    before = tree(work)
    holding = (output_lock(work / case.hold, "layerif (the other run)") if case.hold
               else contextlib.nullcontext())
    with holding:
        code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    assert "RuntimeWarning" not in err and not [
        w for w in recwarn if issubclass(w.category, RuntimeWarning)], err
    assert code == case.code, err
    if case.code == 2:
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and case.words in lines[0], err
        assert tree(work) == before  # nothing written, nothing removed
    else:
        assert case.words in out + err


def test_resume_checkpoints_follow_the_umask_like_outputs(tmp_path):
    import os

    import torch

    from layerif.influence.checkpoint import StepCache

    old = os.umask(0o022)
    try:
        steps = StepCache(tmp_path / "resume", {"run": 1})
        steps("dots", lambda: torch.ones(2))
    finally:
        os.umask(old)
    assert (tmp_path / "resume" / "dots.pt").stat().st_mode & 0o777 == 0o644


def test_epoch_lines_are_printed_as_each_epoch_ends(tmp_path, shared, tokenizer):
    """The callback runs between epochs (a redirected log shows each line then): the second
    epoch's first step finds the first epoch already reported."""
    from layerif.data import Example
    from layerif.lora import finetune_lora
    from layerif.models import load_model
    from layerif.training import FinetuneArguments

    model, _ = load_model(str(shared[0]), device="cpu")
    reported: list[int] = []
    seen_at_steps: list[list[int]] = []
    examples = [Example(f"t{i}", text=t) for i, t in enumerate(TEXTS)]
    args = FinetuneArguments(epochs=2, batch_size=4, max_length=32)
    import layerif.training as training

    real = training.batch_losses

    def spy(*a, **k):
        seen_at_steps.append(list(reported))
        return real(*a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "batch_losses", spy)
        finetune_lora(model, tokenizer, {"r": 2, "target_modules": ["q_proj"]}, examples,
                      tmp_path / "lora", args, progress=False,
                      on_epoch=lambda e: reported.append(e["epoch"]))
    assert reported == [1, 2]
    assert seen_at_steps[0] == [] and seen_at_steps[-1] == [1]  # epoch 1 said before epoch 2


def test_quiet_prints_no_bar_and_no_library_notice(shared, tmp_path):
    import os
    import subprocess
    import sys

    model, _, _, data = shared
    env = {**os.environ, "LAYERIF_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "layerif", "score", "--model", str(model), "--train",
         str(data / "train.jsonl"), "--val", str(data / "val.jsonl"), "--max-length", "32",
         "--quiet", "--out", str(tmp_path / "s")], env=env, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "it/s" not in proc.stderr and "%|" not in proc.stderr, proc.stderr  # tqdm's marks
    assert "FutureWarning" not in proc.stderr
