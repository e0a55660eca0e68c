#!/usr/bin/env bash
# The committed CPU whole-model campaign (reports/cpu-whole-model/): calibrate this CPU, time the whole
# small-llama model (prefill and decode, n = 128..2048) through lcprof and transformers, and lcprof's
# layer 0 against transformers' at the same n; then compare with the planner's TTFT/TPOT.
# Usage: scripts/cpu_whole_model.sh [OUT_DIR]   (default reports/cpu-whole-model)
set -euo pipefail
cd "$(dirname "$0")/.."
# One thread: on a shared 2-core machine (load 10+ from other work) two OpenMP threads wait at every
# op's barrier for a descheduled partner, a fixed cost of milliseconds per op that swamps a small
# model; one thread measures the work. The calibration below runs the same way.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${1:-reports/cpu-whole-model}
CFG=reports/cpu-whole-model/small-llama.json
mkdir -p "$OUT"
LC="python3 -m lcprof"
{ date -u +%FT%TZ; uptime; nproc; echo "OMP_NUM_THREADS=$OMP_NUM_THREADS"; python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'; } > "$OUT/environment.txt"
[ -f "$OUT/calibration.json" ] || $LC calibrate --device cpu --dtype fp32 --out "$OUT/calibration.json" > "$OUT/calibration.txt"
$LC model-sweep --model $CFG --n 128..2048 --phase prefill,decode --backends sdpa --dtype fp32 --device cpu \
    --budget-s 1 --out "$OUT/model-lcprof.csv" --resume > /dev/null
$LC model-sweep --model $CFG --n 128..2048 --phase prefill,decode --backends sdpa --dtype fp32 --device cpu \
    --impl transformers --budget-s 1 --out "$OUT/model-transformers.csv" --resume > /dev/null
for impl in lcprof transformers; do
  $LC model-sweep --model $CFG --n 128..2048 --phase prefill,decode --backends sdpa --dtype fp32 --device cpu \
      --impl $impl --target layer:0 --budget-s 1 --out "$OUT/layer0-$impl.csv" --resume > /dev/null
done
$LC compare "$OUT/model-lcprof.csv" "$OUT/model-transformers.csv" "$OUT/layer0-lcprof.csv" \
    "$OUT/layer0-transformers.csv" --calibration "$OUT/calibration.json" > "$OUT/compare.txt"
{ date -u +%FT%TZ; uptime; } >> "$OUT/environment.txt"
cat "$OUT/compare.txt"
