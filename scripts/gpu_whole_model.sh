#!/usr/bin/env bash
# Issue 16's GPU campaign, for one lent H200 (about 5 minutes expected; every stage has its own timeout, so the
# whole run stays under 9 minutes, and a rerun with the same OUT_DIR resumes where it stopped):
#   1. pytest -m gpu on the whole-model GPU tests;
#   2. per model (phi3-mini-128k, llama3.1-8b), bf16, SDPA:
#      a. lcprof's whole model, prefill at 4k..128k (TTFT),
#      b. lcprof's whole model, one decode step at a context of 4k..128k, CUDA graphs (TPOT),
#      c. layer 0 alone, lcprof's and transformers' (sdpa and flash_attention_2 where importable),
#         prefill and decode at the same n;
#   2d. a hybrid whole model (default nemotron-3-nano: 23 Mamba-2 + 23 MoE-MLP + 6 attention layers,
#      dense-equivalent MoE, ~7 GiB in bf16), prefill at 4k..32k and one decode step at 4k..128k of
#      context (each Mamba-2 layer's state, the attention layers' KV), mixers on the torch backend,
#      no CUDA graphs (the mixers' chunk loop is host code);
#   3. lcprof compare: measured TTFT/TPOT beside the planner's on the H200 datasheet (and on a
#      calibration profile, if OUT_DIR/calibration.json exists), and lcprof / transformers per n.
# Expected on an H200 (bf16, flash SDPA): llama3.1-8b prefill ~14 s per call at 128k (6.3 PFLOP), phi3
# ~10 s; with 2 warm-up calls and 3 timed ones the prefill stages take ~100 s and ~75 s; decode, layer 0
# and the checks ~20-40 s per model.
# Usage: scripts/gpu_whole_model.sh OUT_DIR   (as one device command with a 600 s limit; if a stage
# stops at its timeout, run the same command again: every sweep resumes from its rows)
# Overrides (a CPU smoke test uses them): LCPROF_DEVICE, LCPROF_DTYPE, LCPROF_NS, LCPROF_MODELS,
# LCPROF_GPU (planner's hardware), LCPROF_BUDGET_S, LCPROF_STAGE_S (seconds per long stage), LCPROF_GRAPH,
# LCPROF_HYBRID (hybrid models or config paths; "" for none), LCPROF_HYBRID_NS (their prefill lengths).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/gpu_whole_model.sh OUT_DIR}
DEVICE=${LCPROF_DEVICE:-cuda}
DTYPE=${LCPROF_DTYPE:-bf16}
NS=${LCPROF_NS:-4k..128k}
MODELS=${LCPROF_MODELS:-"phi3-mini-128k llama3.1-8b"}
GPU=${LCPROF_GPU:-h200}
BUDGET=${LCPROF_BUDGET_S:-0.5}
STAGE=${LCPROF_STAGE_S:-150}
GRAPH=${LCPROF_GRAPH---cuda-graph}
HYBRID=${LCPROF_HYBRID-nemotron-3-nano}
HYBRID_NS=${LCPROF_HYBRID_NS:-4k..32k}
mkdir -p "$OUT"
LC="python3 -m lcprof"
log() { echo "[$(date -u +%T)] $*" | tee -a "$OUT/campaign.log"; }

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda)
for mod in ("transformers", "flash_attn"):
    try:
        m = __import__(mod)
        print(mod, getattr(m, "__version__", "?"))
    except Exception as exc:
        print(mod, "not importable:", type(exc).__name__, exc)
PY
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

log "stage 1: pytest -m gpu (whole model)"
timeout 45 python3 -m pytest -q -m gpu -p no:cacheprovider tests/gpu/test_whole_model_gpu.py > "$OUT/pytest_gpu.txt" 2>&1
log "pytest: $(tail -1 "$OUT/pytest_gpu.txt")"

for M in $MODELS; do
  NAME=$(basename "$M" .json)
  log "stage 2a: $M whole model prefill $NS"
  timeout "$STAGE" $LC model-sweep --model "$M" --n "$NS" --phase prefill --backends sdpa --dtype "$DTYPE" \
      --device "$DEVICE" --budget-s "$BUDGET" --out "$OUT/$NAME-model-lcprof.csv" --resume > /dev/null 2>> "$OUT/campaign.log" \
      || log "  stopped (exit $?); rows so far are kept, rerun to resume"
  log "stage 2b: $M whole model decode $NS $GRAPH"
  timeout $((STAGE / 3)) $LC model-sweep --model "$M" --n "$NS" --phase decode --backends sdpa --dtype "$DTYPE" \
      --device "$DEVICE" --budget-s "$BUDGET" $GRAPH --out "$OUT/$NAME-model-lcprof.csv" --resume > /dev/null 2>> "$OUT/campaign.log" \
      || log "  stopped (exit $?)"
  for IMPL in lcprof transformers; do
    log "stage 2c: $M layer 0, $IMPL, prefill and decode $NS"
    timeout $((STAGE / 5)) $LC model-sweep --model "$M" --n "$NS" --phase prefill,decode --backends sdpa,flash-attn \
        --impl "$IMPL" --target layer:0 --dtype "$DTYPE" --device "$DEVICE" --budget-s "$BUDGET" \
        --out "$OUT/$NAME-layer0-$IMPL.csv" --resume > /dev/null 2>> "$OUT/campaign.log" || log "  stopped (exit $?)"
  done
done

for M in $HYBRID; do
  NAME=$(basename "$M" .json)
  [ "$NAME" = config ] && NAME=$(basename "$(dirname "$M")")
  log "stage 2d: $M hybrid whole model prefill $HYBRID_NS"
  timeout $((STAGE / 2)) $LC model-sweep --model "$M" --n "$HYBRID_NS" --phase prefill --backends sdpa --dtype "$DTYPE" \
      --device "$DEVICE" --budget-s "$BUDGET" --out "$OUT/$NAME-model-lcprof.csv" --resume > /dev/null 2>> "$OUT/campaign.log" \
      || log "  stopped (exit $?); rows so far are kept, rerun to resume"
  log "stage 2d: $M hybrid whole model decode $NS"
  timeout $((STAGE / 3)) $LC model-sweep --model "$M" --n "$NS" --phase decode --backends sdpa --dtype "$DTYPE" \
      --device "$DEVICE" --budget-s "$BUDGET" --out "$OUT/$NAME-model-lcprof.csv" --resume > /dev/null 2>> "$OUT/campaign.log" \
      || log "  stopped (exit $?)"
done

log "stage 3: compare"
FILES=$(ls "$OUT"/*-model-lcprof.csv "$OUT"/*-layer0-*.csv 2>/dev/null)
$LC compare $FILES --gpu "$GPU" > "$OUT/compare_datasheet.txt" 2>&1 || true
$LC compare $FILES --gpu "$GPU" --format csv > "$OUT/compare_datasheet.csv" 2>/dev/null || true
if [ -f "$OUT/calibration.json" ]; then
  $LC compare $FILES --gpu "$GPU" --calibration "$OUT/calibration.json" > "$OUT/compare_calibration.txt" 2>&1 || true
fi
cat "$OUT/compare_datasheet.txt"
log "done"
