"""scripts/gpu_check.sh before any GPU sees it: the dry run's steps on the CPU, a step forced over
its limit, and the wheel folder the GPU machine installs from (scripts/gpu_wheels.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402


def test_dry_run_runs_every_step_and_survives_one_over_its_limit(tmp_path):
    out = tmp_path / "out"
    # env is given 0.2 s: the interpreter cannot even import torch in that time
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(out),
                           "--limit", "env=0.2"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = {name: json.loads(gpu_check.step_path(out, name).read_text())
               for name in gpu_check.STEPS}
    assert records["env"]["status"] == "timed out at its 0.2 s limit"
    for name in ("cuda-tests", "score", "kronfluence", "prune-finetune"):
        assert records[name]["status"].startswith("ok"), (name, records[name])
        assert records[name]["dry_run"] is True and records[name]["rows"]
    runs = [r for r in records["score"]["rows"] if r["run"].startswith("score")]
    assert [r["run"].split(",")[0] for r in runs] == ["score (streaming", "score (cached"]
    assert all(r["ratio_to_fwd_bwd"] > 0 and r["plan_gib"] > 0 for r in runs)
    assert [r["strategy"] for r in records["kronfluence"]["rows"]] == ["identity", "ekfac"]
    summary = (out / "gpu_check.md").read_text()
    assert "## env: timed out" in summary and "## prune-finetune: ok" in summary
    assert "over its 0.2 s limit" in proc.stdout
    # what the device tool brings back: at most 8 files
    assert len([p for p in out.iterdir() if p.is_file()]) <= 8


def test_bad_limit_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(out),
                           "--limit", "scoring=5"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "--limit scoring=5" in proc.stderr
    assert "env cuda-tests score kronfluence prune-finetune" in proc.stderr
    assert not out.exists()


def _requires(wheel: Path) -> set[str]:
    """A wheel's unconditional requirements for Python 3.12 on Linux."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(z.read(meta).decode())
    env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}
    found = set()
    for text in message.get_all("Requires-Dist") or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(env):
            found.add(gpu_check.norm(req.name))
    return found


def test_wheel_folder_holds_what_the_image_lacks(tmp_path):
    """Built as gpu_wheels.sh builds it (PyPI needed): every distribution the checks import is
    in the GPU image or in the folder, so is everything a carried wheel requires, each wheel is
    for CPython 3.12 on x86-64 or pure Python, and the folder stays under 64 MiB."""
    dest = tmp_path / "gpu"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "wheels", "--dest", str(dest)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0 and "Could not find a version" in proc.stderr + proc.stdout:
        pytest.skip("PyPI out of reach: " + proc.stderr[-300:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = sorted((dest / "wheels").glob("*.whl"))
    carried = {gpu_check.wheel_distribution(w) for w in wheels}
    available = carried | gpu_check.IMAGE
    missing = gpu_check.imported_distributions() - available
    assert not missing, f"imported but neither carried nor in the image: {sorted(missing)}"
    for wheel in wheels:
        unmet = _requires(wheel) - available
        assert not unmet, f"{wheel.name} needs {sorted(unmet)}"
        tags = wheel.name.removesuffix(".whl").split("-")[-3:]
        assert tags[0] in ("py3", "py2.py3", "cp312", "py312") and (
            tags[2] == "any" or "x86_64" in tags[2]), wheel.name
    assert sum(w.stat().st_size for w in wheels) < gpu_check.WHEEL_LIMIT
    assert {"datasets", "lm-eval", "gguf", "kronfluence"} <= carried
    assert (dest / "hf_datasets" / "boolq").is_dir() and (dest / "tokenizer").is_dir()
