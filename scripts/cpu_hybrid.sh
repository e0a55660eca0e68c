#!/usr/bin/env bash
# The committed CPU hybrid-layer campaign (reports/cpu-hybrid-<date>/): `lcprof sweep` of a whole
# Mamba-2 layer (Nemotron-3-Nano layer 0: norm + Mamba-2, no MLP) and a whole Gated DeltaNet layer
# (Qwen3-Next-80B-A3B layer 0: norm + Gated DeltaNet + norm + MoE MLP, dense-equivalent), prefill and
# decode (one recurrent step from a state) on the torch mixer backend, fp32; then `lcprof fit`.
# Usage: scripts/cpu_hybrid.sh [OUT_DIR] [N_LIST]   (defaults reports/cpu-hybrid-$(date -u +%F), 128..1024);
# MODELS="kimi-linear-48b" for other presets (layer 0 of each).
# Rows are written as they complete; a rerun resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
# One thread: on a shared 2-core machine two OpenMP threads wait at every op's barrier for a
# descheduled partner (see scripts/cpu_whole_model.sh).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${1:-reports/cpu-hybrid-$(date -u +%F)}
NS=${2:-128..1024}
BUDGET=${BUDGET_S:-0.3}
mkdir -p "$OUT"
LC="nice python3 -m lcprof"
{ date -u +%FT%TZ; uptime; nproc --all; echo "OMP_NUM_THREADS=$OMP_NUM_THREADS"; python3 -c 'import torch; print("torch", torch.__version__)'; } > "$OUT/environment.txt"
for model in ${MODELS:-nemotron-3-nano qwen3-next-80b-a3b}; do
  for phase in prefill decode; do
    $LC sweep --model $model --layer 0 --n "$NS" --phase $phase --backends torch --dtype fp32 --device cpu \
        --budget-s "$BUDGET" --min-reps 2 --max-attempts 2 --out "$OUT/results.csv" --resume > /dev/null
  done
done
$LC fit "$OUT/results.csv" > "$OUT/fit.txt"
{ date -u +%FT%TZ; uptime; } >> "$OUT/environment.txt"
cat "$OUT/fit.txt"
