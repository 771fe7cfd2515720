#!/usr/bin/env bash
# The peers bench/bench_peers.py times, into ./.venv next to layerif: kronfluence 1.0.1 with
# --no-deps (its own pins would pull torchvision and an older torch) and the three small
# packages it imports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pip --disable-pip-version-check -q install --no-deps \
  "kronfluence==1.0.1" "einops>=0.8" "einconv>=0.1" "opt_einsum>=3.3"
