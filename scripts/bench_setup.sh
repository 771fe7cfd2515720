#!/usr/bin/env bash
# The peers bench/bench_peers.py times, into ./.venv next to layerif: kronfluence 1.0.1 with
# --no-deps (its own pins would pull torchvision and an older torch) and the three small
# packages it imports (scripts/setup.sh --peers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --peers "$@"
