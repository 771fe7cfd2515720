"""One run per output: a second run on the same output is refused at once (naming the running
one) or waits with --wait and then gives a solitary run's result; a dead run's lock is taken
over, said so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import PAIRS, TEXTS

from layerif.locks import lock_path

ROOT = Path(__file__).resolve().parents[1]

# Holds the lock of argv[1] until stdin closes (or, with argv[2] == "die", exits without
# releasing it cleanly, as kill -9 would leave it).
HOLDER = """
import os, sys
from layerif.locks import output_lock
with output_lock(sys.argv[1], "layerif score --out " + sys.argv[1]):
    print("held", flush=True)
    if sys.argv[2] == "die":
        os._exit(0)
    sys.stdin.read()
"""


def env(tmp_path: Path) -> dict:
    return {**os.environ, "LAYERIF_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def layerif_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "layerif", *map(str, args)]


def hold(out: Path, tmp_path: Path, how: str = "hold") -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), how], env=env(tmp_path),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()} if folder.exists() else {}


@pytest.fixture(scope="module")
def score_inputs(tmp_path_factory, tiny_model_dir):
    data = tmp_path_factory.mktemp("data")
    (data / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    (data / "val.jsonl").write_text("".join(
        json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in PAIRS[:3]))
    return tiny_model_dir("gpt2"), data


def score_args(inputs, out: Path) -> list:
    model, data = inputs
    return ["score", "--model", model, "--train", data / "train.jsonl", "--val",
            data / "val.jsonl", "--max-length", 48, "--quiet", "--out", out]


def test_a_second_score_on_a_held_output_is_refused_at_once(tmp_path, score_inputs):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "keep.txt").write_text("an earlier result")
    before = tree(out)
    holder = hold(out, tmp_path)
    try:
        second = subprocess.run(layerif_cmd(*score_args(score_inputs, out)), env=env(tmp_path),
                                capture_output=True, text=True, timeout=300)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert second.returncode == 2, second.stderr
    assert "Traceback" not in second.stderr
    line = second.stderr.strip().splitlines()[-1]
    assert f"pid {holder.pid}" in line and "--wait" in line and str(out) in line, line
    assert tree(out) == before  # nothing written, nothing removed


def test_two_concurrent_scores_with_wait_give_a_solitary_runs_result(tmp_path, score_inputs):
    solitary = tmp_path / "solitary"
    assert subprocess.run(layerif_cmd(*score_args(score_inputs, solitary)), env=env(tmp_path),
                          capture_output=True, timeout=300).returncode == 0
    out = tmp_path / "shared"
    runs = [subprocess.Popen(layerif_cmd(*score_args(score_inputs, out), "--wait"),
                             env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    results = [(r.wait(timeout=600), r.stderr.read()) for r in runs]
    assert [code for code, _ in results] == [0, 0], results
    assert any("waiting for" in err for _, err in results), results  # one waited for the other
    assert all("Traceback" not in err for _, err in results)
    np.testing.assert_array_equal(np.load(out / "influence.npy"),
                                  np.load(solitary / "influence.npy"))
    shared, alone = (json.loads((d / "scores.json").read_text()) for d in (out, solitary))
    assert shared["scores"] == alone["scores"]


def test_the_lock_of_a_run_that_died_is_taken_over_and_said(tmp_path, score_inputs):
    out = tmp_path / "out"
    holder = hold(out, tmp_path, "die")
    holder.wait(timeout=30)
    assert lock_path(out).parent.name == "locks"
    run = subprocess.run(layerif_cmd(*score_args(score_inputs, out)),
                         env=env(tmp_path), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"took over the lock on {out} from a run that is gone (pid {holder.pid}" in run.stderr
    assert (out / "scores.json").exists()


def smoke_config(tmp_path: Path) -> Path:
    """experiments/smoke.yaml cut to one method, one seed, a few evaluation rows."""
    raw = yaml.safe_load((ROOT / "experiments" / "smoke.yaml").read_text())
    raw.update(methods=[{"method": "uniform"}], seeds=[0], dense=False)
    raw.pop("sensitivity")
    raw["evaluation"] = {"ppl": raw["evaluation"]["ppl"]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_two_experiment_runs_on_one_folder(tmp_path):
    """A held folder refuses a second `experiment run` at once; two started together with
    --wait both end well, and the folder's results equal a solitary run's."""
    config = smoke_config(tmp_path)
    held = tmp_path / "held"
    holder = hold(held, tmp_path)
    try:
        refused = subprocess.run(layerif_cmd("experiment", "run", config, "--out", held),
                                 env=env(tmp_path), capture_output=True, text=True, timeout=300)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert refused.returncode == 2 and f"pid {holder.pid}" in refused.stderr, refused.stderr
    assert not held.exists()

    def results(out: Path) -> str:
        assert subprocess.run(layerif_cmd("experiment", "report", out), env=env(tmp_path),
                              capture_output=True, timeout=300).returncode == 0
        return (out / "results.csv").read_text()

    solitary = tmp_path / "solitary"
    assert subprocess.run(layerif_cmd("experiment", "run", config, "--out", solitary, "--quiet"),
                          env=env(tmp_path), capture_output=True, timeout=600).returncode == 0
    shared = tmp_path / "shared"
    runs = []
    for _ in range(2):
        runs.append(subprocess.Popen(
            layerif_cmd("experiment", "run", config, "--out", shared, "--quiet", "--wait"),
            env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        time.sleep(0.5)
    ends = [(r.wait(timeout=600), r.stderr.read()) for r in runs]
    assert [code for code, _ in ends] == [0, 0], ends
    assert all("Traceback" not in err for _, err in ends)
    assert results(shared) == results(solitary)
