#!/usr/bin/env bash
# Set up (scripts/setup.sh, with the Qwen models and kronfluence), then run the unit suite (the
# GPU check's dry run included), a sample of the slow end-to-end tests and llm-compressor on
# exported recipes.
# `pytest -m slow` runs all slow tests (the issue's acceptance command on SmolLM2, the demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --qwen --peers
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Debian's chromium for the experiment report's browser test (the test skips, saying so, where
# it cannot be installed)
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get install -y -q chromium >/dev/null 2>&1 \
    || { timeout 300 apt-get update -q >/dev/null 2>&1 \
         && timeout 600 apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "note: could not install chromium; the report's browser test will be skipped"
fi
.venv/bin/python -m pytest -q -m "not slow and not llmcompressor" "$@"
.venv/bin/python -m pytest -q -m slow -k "demo or smoke or qwen05_datainf" "$@"
# llm-compressor in its own environment (built once, ~5 min; skipped if PyPI is out of reach)
.venv/bin/python -m pytest -q -m llmcompressor "$@"
