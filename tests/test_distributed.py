"""Data-parallel scoring on gloo (influence/distributed.py): two processes equal one for every
estimator and both modes, with an uneven split; a rank killed mid-run resumes; the launcher's
command line (torchrun -m layerif score) writes what `layerif score` writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from layerif.scoring import score_layers

WORKER = Path(__file__).with_name("dp_worker.py")
# 19 training examples in batches of 4: 5 batches, 3 on rank 0 and 2 on rank 1, the last short
TRAIN, VAL = "boolq:validation[0:19]", "boolq:validation[19:27]"
CASES = [{"name": f"{estimator}-{mode}", "train": TRAIN, "val": VAL, "estimator": estimator,
          "mode": mode}
         for estimator, mode in [("datainf", "cached"), ("datainf", "streaming"),
                                 ("tracin", "auto"), ("exact", "auto")]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(model: Path, out: Path, cases: list[dict], world: int = 2, extra: tuple = (),
           outputs: list | None = None, cuda: bool = False) -> list[int]:
    """Start `world` ranks of tests/dp_worker.py as torchrun would (on the CPU with gloo, or
    with `cuda` one GPU each with nccl); their exit codes (and their output appended to
    `outputs`)."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1", **({} if cuda else {"CUDA_VISIBLE_DEVICES": ""})}
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), str(model), str(out), json.dumps(cases), *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    codes = []
    for p in procs:
        output, _ = p.communicate(timeout=600)
        codes.append(p.returncode)
        if outputs is not None:
            outputs.append(output)
        if p.returncode not in (0, 3):
            print(output[-3000:])
    return codes


def single(model: Path, case: dict, device: str = "cpu") -> np.ndarray:
    return score_layers(str(model), case["train"], case["val"], estimator=case["estimator"],
                        mode=case["mode"], max_length=48, batch_size=4, progress=False,
                        bootstrap=10, device=device).influence


def assert_equal_to_fp32_sums(two: np.ndarray, one: np.ndarray, tol: float = 1e-6) -> None:
    """Per layer, to 1e-6 of its largest influence: rows are computed by the same batches; only
    the fp32 sums over batches (mean gradient, u_m) are added in another order, an error of a
    few fp32 ulps of the terms whose difference an influence is. An element near zero is such
    a cancelling difference, so the bound is on the layer's scale, not the element's."""
    scale = np.abs(one).max(axis=0)
    assert (scale > 0).all()
    assert (np.abs(two - one).max(axis=0) <= tol * scale).all(), np.abs(two - one).max(axis=0)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return tiny_model_dir("llama")


def test_two_processes_equal_one_for_every_estimator_and_mode(model, tmp_path):
    assert launch(model, tmp_path, CASES) == [0, 0]
    for case in CASES:
        two = np.load(tmp_path / case["name"] / "influence.npy")
        one = single(model, case)
        assert two.shape == one.shape == (19, 2)
        assert_equal_to_fp32_sums(two, one)


def test_a_killed_rank_resumes_with_the_others(model, tmp_path):
    case = CASES[1]  # datainf streaming: four steps
    codes = launch(model, tmp_path, [case], extra=("--die-after", "dots_and_norms"))
    assert codes[1] == 3 and codes[0] != 0  # rank 1 died; rank 0 could not go on without it
    kept = sorted(p.name for p in (tmp_path / f"{case['name']}.resume").glob("rank-1/*.pt"))
    assert kept == ["dots_and_norms.pt", "val_mean_gradient.pt"]
    assert launch(model, tmp_path, [case]) == [0, 0]
    resumed = json.loads((tmp_path / case["name"] / "resumed.json").read_text())
    assert resumed == ["val_mean_gradient", "dots_and_norms"]
    assert_equal_to_fp32_sums(np.load(tmp_path / case["name"] / "influence.npy"),
                              single(model, case))


def test_torchrun_command_line_writes_what_score_writes(model, tmp_path):
    common = ["--model", str(model), "--train", TRAIN, "--val", VAL, "--max-length", "48",
              "--batch-size", "4", "--quiet", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port",
                          str(free_port()), "-m", "layerif", "score", *common,
                          "--out", str(tmp_path / "two")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("wrote ") == 1  # rank 0 alone reports and writes
    one = subprocess.run([sys.executable, "-m", "layerif", "score", *common, "--out",
                          str(tmp_path / "one")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    a = json.loads((tmp_path / "one" / "scores.json").read_text())
    b = json.loads((tmp_path / "two" / "scores.json").read_text())
    assert b["n_train"] == a["n_train"] == 19 and b["layers"] == a["layers"]
    assert_equal_to_fp32_sums(np.load(tmp_path / "two" / "influence.npy"),
                              np.load(tmp_path / "one" / "influence.npy"))
    assert not list(tmp_path.glob(".two.resume*"))  # the finished run keeps no checkpoint


def test_more_processes_than_batches_is_refused(model, tmp_path):
    case = {**CASES[0], "train": "boolq:validation[0:4]", "name": "small"}
    outputs: list[str] = []
    codes = launch(model, tmp_path, [case], outputs=outputs)
    assert codes == [1, 1]
    for output in outputs:  # 1 batch of 4 for 2 processes, refused before any pass
        assert "--train: 1 batches for 2 processes" in output
        assert "--nproc_per_node" in output


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (one process "
                    "on CUDA against the CPU is tests/test_cuda.py::test_score_on_cuda)")
def test_two_gpus_on_nccl_equal_one_gpu(model, tmp_path):
    assert launch(model, tmp_path, CASES[:2], cuda=True) == [0, 0]
    for case in CASES[:2]:
        # cuBLAS may split fp32 reductions differently per batch shape: 1e-5 of the layer scale
        assert_equal_to_fp32_sums(np.load(tmp_path / case["name"] / "influence.npy"),
                                  single(model, case, device="cuda"), tol=1e-5)
