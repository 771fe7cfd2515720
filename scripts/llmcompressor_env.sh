#!/usr/bin/env bash
# llm-compressor's own environment in ./.venv-llmcompressor (it pins its own transformers range,
# which layerif's does not share), with torch pinned as in setup.sh. Built once and cached: a
# second run only checks the marker the first run leaves when everything installed.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=.venv-llmcompressor
[ -f "$ENV/.complete" ] && exit 0
rm -rf "$ENV"
"${PYTHON:-python3}" -m venv "$ENV"
pip() { "$ENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install "torch==2.13.0"   # first and pinned: an unpinned torch pulls a multi-GB CUDA build
pip install "llmcompressor==0.14.0.1" "torch==2.13.0"
"$ENV/bin/python" -c "import llmcompressor" && touch "$ENV/.complete"
