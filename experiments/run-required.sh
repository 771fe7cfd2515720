#!/usr/bin/env bash
# Runs (or resumes) every required SmolLM2 config of issue 12 in turn, writes each report and
# copies its tables, CSV, plots and report.html to experiments/results/NAME (what is committed).
# Each config's cells live in runs/exp/NAME; a killed or interrupted run resumes where it
# stopped. Usage: bash experiments/run-required.sh [NAME ...]   (default: all, in this order)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export TOKENIZERS_PARALLELISM=false
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=(pruning-wanda70-perplexity pruning-wanda50-perplexity pruning-sparsegpt70-perplexity
         pruning-wanda70-zeroshot lora-moe-sciq)
fi
for name in "${names[@]}"; do
  echo "== $name ($(date -u +%H:%M:%S))"
  .venv/bin/layerif experiment run "experiments/$name.yaml" --out "runs/exp/$name"
  .venv/bin/layerif experiment report "runs/exp/$name"
  rm -rf "experiments/results/$name" && mkdir -p "experiments/results/$name"
  cp -r "runs/exp/$name"/{tables.md,results.csv,report.html,plots} "experiments/results/$name/"
done
