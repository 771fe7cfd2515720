#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the unit suite and a sample of the slow end-to-end tests.
# `pytest -m slow` runs all slow tests (the issue's acceptance command on SmolLM2, the demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest -q -m "not slow" "$@"
.venv/bin/python -m pytest -q -m slow -k "demo" "$@"
