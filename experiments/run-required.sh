#!/usr/bin/env bash
# Runs (or resumes) every required config (issues 12, 24, 45 and 46) in turn, writes each report and
# copies its tables, CSV, plots and report.html to experiments/results/NAME (what is committed).
# Each config's cells live in runs/exp/NAME; a killed or interrupted run resumes where it
# stopped. The cells' records and per-item results (not pruned weights or adapters, deleted
# once evaluated) are kept in experiments/results/NAME/cells, so that a report can be rebuilt
# from a checkout and a run resumes on another machine: they seed runs/exp/NAME/cells here.
# A grid takes from the other grids' cells (live or committed) every cell with the same key
# (`experiment run --reuse-cells`): a SparseGPT grid the scores and allocations of the Wanda
# grid of its model, whose searches prune with Wanda in both (an issue-24 grid from the
# issue-24 grids only: see below).
# Usage: bash experiments/run-required.sh [NAME ...]     (default: all, in this order)
#        bash experiments/run-required.sh --save-cells NAME ...   (keep a running grid's cells
#        and write the tables of its finished seeds: `experiment run --stored-only`, then report)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export TOKENIZERS_PARALLELISM=false

save_cells() {  # runs/exp/NAME/cells -> experiments/results/NAME/cells, without weights
  local src="runs/exp/$1/cells" dst="experiments/results/$1/cells"
  [ -d "$src" ] || return 0
  rm -rf "$dst.tmp" && mkdir -p "$dst.tmp"
  # (search-work/databases: each search's level database, GBs, rebuilt where missing; its
  # checkpoints, search-work/runs, are kept: a search resumes across sessions)
  tar -C "$src" --exclude='./*/*/model' --exclude='./*/*/adapter' --exclude='./*/.*.tmp' \
      --exclude='./*/*/checkpoint*' --exclude='./*/.*.training' --exclude='./search-work/databases' -cf - . \
      | tar -C "$dst.tmp" -xf -
  rm -rf "$dst" && mv "$dst.tmp" "$dst"
}

partial_report() {  # the tables of an unfinished grid's saved cells, beside them (whole seeds)
  local tmp="runs/partial/$1" dst="experiments/results/$1"
  if grep -q '^kind: lora-moe' "experiments/$1.yaml"; then  # reported once finished
    echo "$1: cells saved (a LoRA-MoE grid's tables come when it has finished)"
    return 0
  fi
  rm -rf "$tmp" && mkdir -p "$tmp" && cp -r "$dst/cells" "$tmp/cells"
  if ! .venv/bin/layerif experiment run "experiments/$1.yaml" --out "$tmp" --stored-only --quiet
  then  # (refused: no evaluated model yet) the cells, a measurement's finished blocks included,
    echo "$1: cells saved; no tables yet"  # are kept for the next session all the same
    return 0
  fi
  .venv/bin/layerif experiment report "$tmp"
  rm -rf "$dst/plots"
  for part in tables.md results.csv report.html plots choice.json; do
    if [ -e "$tmp/$part" ]; then cp -r "$tmp/$part" "$dst/"; fi
  done
}

if [ "${1:-}" = "--save-cells" ]; then
  shift
  for name in "$@"; do save_cells "$name" && partial_report "$name"; done
  exit 0
fi
all=(pruning-wanda70-perplexity pruning-wanda50-perplexity pruning-sparsegpt70-perplexity
     pruning-wanda70-zeroshot lora-moe-sciq lora-moe-sweep-sst2
     sensitivity-smollm2-wanda70 sensitivity-smollm2-sparsegpt70
     sensitivity-qwen05-wanda70 sensitivity-qwen05-sparsegpt70
     search-smollm2-wanda70 search-smollm2-sparsegpt70 search-qwen05-wanda70
     search-qwen05-sparsegpt70)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${all[@]}")
for name in "${names[@]}"; do
  echo "== $name ($(date -u +%H:%M:%S))"
  if [ -d "experiments/results/$name/cells" ]; then  # resume from the committed cells
    mkdir -p "runs/exp/$name/cells"
    cp -rn "experiments/results/$name/cells/." "runs/exp/$name/cells/"
  fi
  reuse=()
  for other in "${all[@]}"; do
    # an issue-24 grid (and an issue-45 grid built on them) takes only the issue-24 and issue-45
    # grids' cells: a SparseGPT prune repeats bit for bit on one machine only, and the issue-12
    # grids' were made on another (the figures: docs/experiments.md, "Why not the issue-12
    # grids' cells")
    [ "$other" != "$name" ] || continue
    case "${name%%-*}" in sensitivity|search)
      case "${other%%-*}" in sensitivity|search) ;; *) continue ;; esac ;;
    esac
    for cells in "runs/exp/$other/cells" "experiments/results/$other/cells"; do
      if [ -d "$cells" ]; then reuse+=(--reuse-cells "$cells"); fi
    done
  done
  .venv/bin/layerif experiment run "experiments/$name.yaml" --out "runs/exp/$name" "${reuse[@]}"
  .venv/bin/layerif experiment report "runs/exp/$name"
  rm -rf "experiments/results/$name" && mkdir -p "experiments/results/$name"
  for part in tables.md results.csv report.html plots choice.json; do  # (a sweep: its choice)
    if [ -e "runs/exp/$name/$part" ]; then cp -r "runs/exp/$name/$part" "experiments/results/$name/"; fi
  done
  save_cells "$name"
done
