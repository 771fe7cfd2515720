"""The `layerif` command on a tiny model folder: outputs, and clear errors with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import PAIRS, TEXTS

from layerif.cli import main


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir("gpt2")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    (path / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    (path / "val.csv").write_text(
        "prompt,completion\n" + "".join(f'"{p}","{c}"\n' for p, c in PAIRS[:3])
    )
    return path


def run(*args):
    return main([str(a) for a in args])


def test_score_writes_both_files(tmp_path, model_dir, data, capsys):
    out = tmp_path / "x"
    rc = run("score", "--model", model_dir, "--train", data / "train.jsonl", "--val",
             data / "val.csv", "--out", out, "--quiet", "--max-length", 32, "--params", "mlp")
    assert rc == 0
    meta = json.loads((out / "scores.json").read_text())
    influence = np.load(out / "influence.npy")
    assert influence.shape == (len(TEXTS), 2) and meta["layers"] == [0, 1]
    assert meta["params"] == "mlp" and meta["train"].endswith("train.jsonl")
    assert np.allclose(meta["aggregates"]["net"], influence.sum(0))
    assert meta["aggregate"] == "helpful" and "IF > 0" in meta["sign_convention"]
    assert np.allclose(meta["scores"], influence.clip(max=0).sum(0))  # the default: helpful
    stability = meta["stability"]
    assert stability["resamples"] == 200 and len(stability["low"]) == 2
    printed = capsys.readouterr().out
    assert "wrote" in printed
    share = (influence > 0).mean()
    assert f"{share:.1%} of per-layer influences are positive" in printed
    assert f"median Spearman {stability['median_spearman']:.2f} over 200 resamples" in printed
    # the helpful aggregate is flat exactly when no layer has a negative influence
    assert ("`allocate` refuses it" in printed) == (np.ptp(influence.clip(max=0).sum(0)) == 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train", "{data}/missing.jsonl"], "missing.jsonl: no such file"),
        (["--train", "nosuchtask:validation[0:4]"], "unknown task 'nosuchtask'"),
        (["--model", "./nowhere"], "neither a model folder nor a .gguf file"),
        (["--estimator", "exact", "--max-exact-dim", "10"], "exceed max_exact_dim=10"),
        (["--train", "{data}/bad.jsonl"], "bad.jsonl:2: not valid JSON"),
        (["--aggregate", "positive"], "'positive' was renamed: use 'harmful'"),
        (["--aggregate", "all"], "'all' was renamed: use 'net'"),
    ],
)
def test_bad_input_is_reported_and_nothing_is_written(tmp_path, model_dir, data, capsys, args,
                                                      message):
    (data / "bad.jsonl").write_text('{"text": "fine text"}\n{"text": \n')
    base = {"--model": str(model_dir), "--train": str(data / "train.jsonl"),
            "--val": str(data / "val.csv")}
    extra = [a.format(data=data) for a in args]
    for i in range(0, len(extra), 2):
        base[extra[i]] = extra[i + 1]
    out = tmp_path / "out"
    argv = ["score", "--out", out, "--quiet", "--max-length", 32]
    for k, v in base.items():
        argv += [k, v]
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists()


def test_tasks_lists_the_registry(capsys):
    assert run("tasks") == 0
    out = capsys.readouterr().out
    for task in ("boolq", "arc_easy", "sciq", "winogrande"):
        assert task in out
