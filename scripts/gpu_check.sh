#!/usr/bin/env bash
# Every GPU measurement of layerif in one command, for a short lease on a bare GPU machine
# (bench/gpu_check.py says what each step measures):
#
#   bash scripts/gpu_wheels.sh                  # here, once: .gpu/ (wheels, data, tokenizer)
#   bash scripts/gpu_check.sh                   # there, from the repository root, .gpu carried
#   bash scripts/gpu_check.sh --dry-run         # anywhere: the same steps on the CPU, tiny sizes
#
# Options: --out DIR (default $OUT, else runs/gpu-check); --limit STEP=SECONDS (repeatable)
# overrides a step's budget. Each step runs under `timeout` with its own budget and writes
# DIR/NN-STEP.json as soon as it ends (DIR/gpu_check.md is the table of all steps so far, and
# DIR/gpu_check.log the output); a step over its limit is recorded as such and the later steps
# still run. The exit code is 0 when every step ran, whatever it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
out="${OUT:-runs/gpu-check}"
declare -A limit=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --out) out="$2"; shift ;;
    --limit) limit["${2%%=*}"]="${2#*=}"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
py=python3
flags=()
if [ "$dry" = 1 ]; then
  [ -x .venv/bin/python ] && py=.venv/bin/python
  flags=(--dry-run)
fi
budgets=$("$py" bench/gpu_check.py budgets) || exit 2
for step in "${!limit[@]}"; do
  if ! grep -q "^$step " <<<"$budgets" || ! [[ "${limit[$step]}" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "gpu_check.sh: --limit $step=${limit[$step]}: use STEP=SECONDS with STEP one of" \
      $(cut -d' ' -f1 <<<"$budgets") >&2
    exit 2
  fi
done
mkdir -p "$out"
log="$out/gpu_check.log"
: > "$log"
if [ "$dry" = 0 ]; then
  if [ ! -d .gpu/wheels ]; then
    echo "gpu_check.sh: .gpu/wheels is missing: run scripts/gpu_wheels.sh here and carry .gpu" >&2
    exit 2
  fi
  start=$(date +%s)
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/gpu-site .gpu/wheels/*.whl >>"$log" 2>&1 \
    || { echo "gpu_check.sh: installing .gpu/wheels failed (see $log)" >&2; exit 2; }
  echo "installed .gpu/wheels in $(( $(date +%s) - start )) s" | tee -a "$log"
  export PYTHONPATH="$PWD:/tmp/gpu-site${PYTHONPATH:+:$PYTHONPATH}"
  export LAYERIF_PACKAGED_DATA="$PWD/.gpu/hf_datasets" LAYERIF_GPU_TOKENIZER="$PWD/.gpu/tokenizer"
fi
while read -r step seconds; do
  seconds="${limit[$step]:-$seconds}"
  echo "== $step (limit ${seconds} s)" | tee -a "$log"
  timeout --kill-after=10 "$seconds" "$py" bench/gpu_check.py step "$step" --out "$out" \
    "${flags[@]}" >>"$log" 2>&1
  rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    "$py" bench/gpu_check.py timed-out "$step" "$seconds" --out "$out"
    echo "   $step: over its ${seconds} s limit, stopped" | tee -a "$log"
  else
    echo "   $step: exit $rc" | tee -a "$log"
  fi
done <<<"$budgets"
cat "$out/gpu_check.md"
