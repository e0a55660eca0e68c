#!/usr/bin/env bash
# Hybrid layers on one lent H200 (issue 14, measured part), about 4-6 minutes; every stage has its own
# timeout and a rerun with the same OUT_DIR resumes from the rows already written:
#   0. install the carried wheels (.whl/: fla-core, flash-linear-attention -- the image has no
#      internet; torch, triton, einops and transformers are in it) and say which mixer backends run;
#   1. pytest -m gpu: each whole hybrid layer on every mixer backend that imports, against the fp64
#      token-by-token recurrence (tests/measure/test_hybrid_gpu.py);
#   2. lcprof sweep, bf16, prefill 4k..64k and decode at 4k..128k of context (one recurrent step from
#      the state; constant in n):
#      a. Qwen3-Next-80B-A3B layer 0 (Gated DeltaNet + MoE MLP), backends torch and fla;
#      b. Nemotron-3-Nano layer 0 (Mamba-2), backends torch and mamba-ssm (skipped with its reason when
#         mamba_ssm does not import: it needs a CUDA build matching the image's torch);
#      c. Jamba-1.5-mini layer 1 (Mamba-1 + MoE MLP), torch (a per-token scan in Python: 1k..8k only)
#         and mamba-ssm;
#   3. lcprof fit of each results file (linear-time layers: exponent near 1 for prefill, near 0 for
#      decode), lcprof compare against the H200 datasheet.
# Expected on an H200: the torch Gated DeltaNet at 64k ~0.3 s per call (1024 chunks, a Python loop),
# fla ~10x faster; Mamba-2 torch at 64k ~0.2 s; checks ~20 s; the whole run under 8 minutes.
#
# Usage (as one device command with a 600 s limit, carrying .whl):
#   scripts/gpu_hybrid.sh OUT_DIR
#   scripts/gpu_hybrid.sh --dry-run OUT_DIR   the same stages on the CPU: fp32, tiny n, short budgets,
#                                             no wheels needed (fla and mamba-ssm rows come out skipped)
# Wheels, fetched once where pip works (see the device README), into the ignored folder .whl/:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       fla-core==0.6.0 flash-linear-attention==0.6.0
# Overrides: LCPROF_DEVICE, LCPROF_DTYPE, LCPROF_PREFILL_NS, LCPROF_DECODE_NS, LCPROF_SCAN_NS,
# LCPROF_BUDGET_S, LCPROF_STAGE_S (seconds per sweep stage), LCPROF_GPU (compare's hardware).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:?usage: scripts/gpu_hybrid.sh [--dry-run] OUT_DIR}
if [ $DRY = 1 ]; then
  : "${LCPROF_DEVICE:=cpu}" "${LCPROF_DTYPE:=fp32}" "${LCPROF_PREFILL_NS:=128,256}" "${LCPROF_DECODE_NS:=128,256}"
  : "${LCPROF_SCAN_NS:=128}" "${LCPROF_BUDGET_S:=0.01}" "${LCPROF_STAGE_S:=300}"
fi
DEVICE=${LCPROF_DEVICE:-cuda}
DTYPE=${LCPROF_DTYPE:-bf16}
PRE_NS=${LCPROF_PREFILL_NS:-4k..64k}
DEC_NS=${LCPROF_DECODE_NS:-4k..128k}
SCAN_NS=${LCPROF_SCAN_NS:-1k..8k}
BUDGET=${LCPROF_BUDGET_S:-0.3}
STAGE=${LCPROF_STAGE_S:-90}
GPU=${LCPROF_GPU:-h200}
mkdir -p "$OUT"
LC="python3 -m lcprof"
log() { echo "[$(date -u +%T)] $*" | tee -a "$OUT/campaign.log"; }

# 0. wheels and environment
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} && log "installed $(ls .whl | tr '\n' ' ')" \
    || log "wheel install failed: fla rows will be skipped with the import error"
else
  log "no .whl/ folder: fla and mamba-ssm are probed as the image has them"
fi
{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  for mod in fla mamba_ssm triton; do
    python3 -c "import $mod; print('$mod', getattr($mod, '__version__', '?'))" 2>&1 | tail -1
  done
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"
$LC backends --device "$DEVICE" --dtype "$DTYPE" > "$OUT/backends.txt" 2>&1 || true
grep -E "^(torch|fla|mamba-ssm) " "$OUT/backends.txt" | tee -a "$OUT/campaign.log" || true

# 1. correctness on the device
if [ $DRY = 0 ]; then
  log "stage 1: pytest -m gpu (hybrid layers)"
  timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider tests/measure/test_hybrid_gpu.py > "$OUT/pytest_gpu.txt" 2>&1
  log "pytest: $(tail -1 "$OUT/pytest_gpu.txt")"
else
  log "stage 1 skipped (dry run: the GPU tests skip on the CPU)"
fi

# 2. sweeps: MODEL LAYER BACKENDS PREFILL_NS FILE
sweep() {
  local model=$1 layer=$2 backends=$3 ns=$4 file=$5
  log "stage 2: $model layer $layer [$backends] prefill $ns"
  timeout "$STAGE" $LC sweep --model "$model" --layer "$layer" --n "$ns" --phase prefill --backends "$backends" \
      --dtype "$DTYPE" --device "$DEVICE" --budget-s "$BUDGET" --out "$OUT/$file" --resume > /dev/null 2>> "$OUT/campaign.log" \
      || log "  stopped (exit $?); rows so far are kept, rerun to resume"
  log "stage 2: $model layer $layer [$backends] decode $DEC_NS"
  timeout $((STAGE / 2)) $LC sweep --model "$model" --layer "$layer" --n "$DEC_NS" --phase decode --backends "$backends" \
      --dtype "$DTYPE" --device "$DEVICE" --budget-s "$BUDGET" --out "$OUT/$file" --resume > /dev/null 2>> "$OUT/campaign.log" \
      || log "  stopped (exit $?)"
}
sweep qwen3-next-80b-a3b 0 torch,fla "$PRE_NS" gdn-qwen3-next.csv
sweep nemotron-3-nano 0 torch,mamba-ssm "$PRE_NS" mamba2-nemotron-3-nano.csv
sweep jamba-1.5-mini 1 torch,mamba-ssm "$SCAN_NS" mamba1-jamba.csv

# 3. fits and compare
FILES=$(ls "$OUT"/*.csv 2>/dev/null)
for f in $FILES; do
  $LC fit "$f" > "${f%.csv}-fit.txt" 2>&1 || true
done
if [ $DRY = 0 ]; then
  $LC compare $FILES --gpu "$GPU" > "$OUT/compare.txt" 2>&1 || true
fi
cat "$OUT"/*-fit.txt 2>/dev/null | grep -E "^(group|[a-z0-9.-]+ (torch|fla|mamba-ssm))" || true
log "done"
