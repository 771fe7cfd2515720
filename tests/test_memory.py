"""Memory plans (memory.py): the estimate printed before `score`, `prune` and `finetune-moe`
against the peak resident memory the same command measured, on a tiny model and on SmolLM2;
--dry-run writes nothing; a run that cannot fit is refused before its data is read; `auto`
streams when the cache would not fit (the free memory simulated by $LAYERIF_MEMORY_GB)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from layerif.memory import GIB, MEMORY_ENV
from layerif.scoring import score_layers

# The plan is an upper estimate from shapes alone; it must stay within this factor of the
# measured whole-process peak either way (too low lets a run die mid-way, too high refuses
# runs that fit or streams needlessly).
FACTOR = 1.5

# Runs one CLI command in a fresh process and reports that program's own peak RSS: VmHWM,
# the high-water mark of the memory map exec created (ru_maxrss would also count the pytest
# process's RSS at the fork, which Linux carries across exec).
MEASURE = """
import re, sys
from pathlib import Path
from layerif.cli import main
code = main(sys.argv[1:])
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)
print(f"PEAK_RSS_KB={hwm}", file=sys.stderr)
sys.exit(code)
"""


def run_cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    return subprocess.run([sys.executable, "-c", MEASURE, *map(str, argv)], env=env,
                          capture_output=True, text=True, timeout=900)


def planned_and_measured(proc: subprocess.CompletedProcess) -> tuple[float, float]:
    """(the plan's estimated peak, the measured peak), in GiB."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned = float(re.search(r"peak \(estimated\)\s+([\d.]+) GiB", proc.stderr).group(1))
    measured = int(re.search(r"PEAK_RSS_KB=(\d+)", proc.stderr).group(1)) * 1024 / GIB
    return planned, measured


def assert_within_factor(proc) -> None:
    planned, measured = planned_and_measured(proc)
    assert measured / FACTOR <= planned <= measured * FACTOR, (planned, measured)


@pytest.fixture(scope="module")
def experts(tmp_path_factory, tiny_dir):
    """Uniform expert allocations, 2 per layer, for the tiny Llama and SmolLM2."""
    folder = tmp_path_factory.mktemp("experts")
    out = {}
    for name, model, layers in (("tiny", tiny_dir, 2), ("smollm2", "smollm2-135m", 30)):
        out[name] = folder / f"{name}.json"
        proc = run_cli("allocate", "experts", "--method", "uniform", "--total", 2 * layers,
                       "--model", model, "--out", out[name])
        assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("mode", ["streaming", "cached"])
def test_score_plan_within_factor_of_peak_on_tiny_model(tiny_dir, tmp_path, mode):
    proc = run_cli("score", "--model", tiny_dir, "--train", "boolq:validation[0:16]",
                   "--val", "boolq:validation[16:20]", "--max-length", "64", "--mode", mode,
                   "--device", "cpu", "--out", tmp_path / "s")
    assert_within_factor(proc)


@pytest.mark.parametrize("mode", ["streaming", "cached"])
def test_score_plan_within_factor_of_peak_on_smollm2(tmp_path, mode):
    proc = run_cli("score", "--model", "smollm2-135m", "--train", "boolq:validation[0:8]",
                   "--val", "boolq:validation[8:12]", "--max-length", "96", "--batch-size", "4",
                   "--mode", mode, "--device", "cpu", "--bootstrap", "10",
                   "--out", tmp_path / "s")
    assert_within_factor(proc)


@pytest.mark.parametrize("pruner", ["wanda", pytest.param("sparsegpt", marks=pytest.mark.slow)])
def test_prune_plan_within_factor_of_peak_on_smollm2(tmp_path, pruner):
    alloc = tmp_path / "alloc.json"
    assert run_cli("allocate", "sparsity", "--method", "uniform", "--sparsity", "0.5",
                   "--model", "smollm2-135m", "--out", alloc).returncode == 0
    proc = run_cli("prune", "--model", "smollm2-135m", "--allocation", alloc, "--pruner", pruner,
                   "--nsamples", "8", "--seqlen", "128", "--device", "cpu",
                   "--out", tmp_path / "p")
    assert_within_factor(proc)


def test_finetune_moe_plan_within_factor_of_peak_on_smollm2(tmp_path, experts):
    proc = run_cli("finetune-moe", "--model", "smollm2-135m", "--experts", experts["smollm2"],
                   "--train", "mrpc:validation[0:8]", "--epochs", "1", "--max-length", "128",
                   "--device", "cpu", "--out", tmp_path / "moe")
    assert_within_factor(proc)


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_dir, tmp_path, experts, calib):
    runs = {
        "score": ("score", "--model", tiny_dir, "--train", "boolq:validation[0:16]",
                  "--val", "boolq:validation[16:20]"),
        "prune": ("prune", "--model", tiny_dir, "--allocation", _uniform(tiny_dir, tmp_path),
                  "--pruner", "sparsegpt", "--calibration", calib, "--nsamples", "4",
                  "--seqlen", "16"),
        "finetune-moe": ("finetune-moe", "--model", tiny_dir, "--experts", experts["tiny"],
                         "--train", "mrpc:validation[0:8]"),
    }
    for name, argv in runs.items():
        before = sorted(p.name for p in tmp_path.iterdir())
        proc = run_cli(*argv, "--device", "cpu", "--dry-run", "--out", tmp_path / "out")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"memory plan of {name.split('-')[0]}" in proc.stdout
        assert "peak (estimated)" in proc.stdout and "dry run: nothing" in proc.stdout
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def _uniform(model, folder) -> str:
    path = folder / "uniform.json"
    if not path.exists():
        assert run_cli("allocate", "sparsity", "--method", "uniform", "--sparsity", "0.5",
                       "--model", model, "--out", path).returncode == 0
    return str(path)


def test_a_run_that_cannot_fit_is_refused_before_its_data_is_read(tiny_dir, tmp_path,
                                                                   experts):
    """The data files do not exist: reading them would be a different error. The refusal
    names the estimate and, where one exists, the option that would fit."""
    missing = tmp_path / "missing.jsonl"
    tiny = {MEMORY_ENV: "0.3"}  # below the runtime allowance alone: nothing can fit
    runs = [
        ("score", "--model", tiny_dir, "--train", missing, "--val", missing),
        ("prune", "--model", tiny_dir, "--allocation", _uniform(tiny_dir, tmp_path),
         "--pruner", "wanda", "--calibration", missing),
        ("finetune-moe", "--model", tiny_dir, "--experts", experts["tiny"], "--train", missing),
    ]
    for argv in runs:
        proc = run_cli(*argv, "--device", "cpu", "--out", tmp_path / "out", env=tiny)
        assert proc.returncode == 2, proc.stderr[-2000:]
        error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and "needs about" in error[0] and "0.30 GiB is free" in error[0]
        assert "missing.jsonl" not in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "out").exists()


def test_refusal_names_the_options_that_would_fit(tmp_path):
    # SmolLM2 cached at batch 4 x 256 tokens: the cache is too much for 6 GiB, streaming fits
    proc = run_cli("score", "--model", "smollm2-135m", "--train", "boolq:validation[0:32]",
                   "--val", "boolq:validation[32:36]", "--batch-size", "4", "--mode", "cached",
                   "--device", "cpu", "--dry-run", "--out", tmp_path / "s",
                   env={MEMORY_ENV: "6"})
    assert proc.returncode == 2
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error:"))
    assert error.startswith("error: score needs about") and "these would fit:" in error
    assert "--mode streaming" in error


def test_auto_streams_when_the_cache_would_not_fit(tiny_dir, monkeypatch):
    kwargs = dict(max_length=64, batch_size=4, progress=False, bootstrap=10, device="cpu")
    train, val = "boolq:validation[0:16]", "boolq:validation[16:20]"
    roomy = score_layers(str(tiny_dir), train, val, **kwargs)
    assert roomy.mode == "cached"
    # Between the streaming plan's total and the cached one's: only streaming fits.
    from layerif.scoring import plan_score_layers

    streaming = plan_score_layers(str(tiny_dir), train, val, mode="streaming", max_length=64,
                                  batch_size=4, device="cpu")
    cached = plan_score_layers(str(tiny_dir), train, val, mode="cached", max_length=64,
                               batch_size=4, device="cpu")
    budget = (streaming.total + cached.total) / 2 / 0.9  # the plan keeps 10% headroom
    monkeypatch.setenv(MEMORY_ENV, str(budget / GIB))
    tight = score_layers(str(tiny_dir), train, val, **kwargs)
    assert tight.mode == "streaming"
    assert (abs(tight.influence - roomy.influence) <= 1e-6 * abs(roomy.influence).max()).all()


def test_processes_on_one_node_share_its_memory(monkeypatch):
    """torchrun's ranks on one CPU node each plan for their share of the free memory (two
    ranks each planning for all of it would together need twice what is there)."""
    import layerif.memory as memory

    monkeypatch.delenv(MEMORY_ENV, raising=False)
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 8 * GIB)
    monkeypatch.setattr(memory, "_cgroup_free", lambda: 6 * GIB)  # the container's limit
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert memory.available_bytes("cpu") == 6 * GIB
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert memory.available_bytes("cpu") == 3 * GIB


def test_a_bad_memory_budget_is_one_clear_error(tiny_dir, tmp_path):
    proc = run_cli("score", "--model", tiny_dir, "--train", "boolq:validation[0:8]", "--val",
                   "boolq:validation[8:12]", "--device", "cpu", "--dry-run",
                   "--out", tmp_path / "s", env={MEMORY_ENV: "lots"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error == [f"error: ${MEMORY_ENV} must be a number of GiB, got 'lots'."]


def test_freed_heap_memory_is_given_back():
    """What the experiment runner calls after each cell: 300 MB of freed heap (kept by glibc
    under a live chunk above it) leaves the process; without it, it stays resident."""
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    probe = (
        "import os\n"
        "from layerif.memory import release_freed_memory\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf("
        "'SC_PAGE_SIZE')\n"
        "chunks = [b'x' * 100_000 for _ in range(3000)]\n"
        "guard = b'y' * 100_000  # above them on the heap: nothing below it is trimmed on free\n"
        "del chunks\n"
        "kept = rss()\n"
        "release_freed_memory()\n"
        "print(kept - rss())\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True)
    assert int(out.stdout.split()[-1]) > 200 * 2**20
