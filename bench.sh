#!/usr/bin/env bash
# lcprof's main job, end to end, on whatever hardware is present.
#
#   GPU: calibrate; sweep phi3-128k over the available backends from 128 to 131072 (fp32: eager,
#        sdpa-math, sdpa-efficient; bf16: sdpa-flash, sdpa-cudnn, flash-attn, striped-ring); fit;
#        compare; capacity plan; report.
#   CPU: the same at the lengths minutes allow (128..2048), extrapolated to 131072 with an interval;
#        the fit holds the attention rates calibrate measured at the model's own shape.
#
# Output: a folder OUTSIDE the checkout, named by device and model (default
# ~/lcprof-runs/<device>-<model>/): the raw results CSV (every row with its environment and the
# machine's load), the calibration profile, fit/compare text, report.md/.html with plots, the plan.
# Re-running resumes the sweep where it stopped, on any day. Environment knobs:
#   LCPROF_OUT=DIR  (output folder)   LCPROF_MAX_N=N (largest n)   LCPROF_BUDGET_S=S (time per point)
#   LCPROF_MODEL=NAME                 LCPROF_DEV=1 (also the developer benchmarks, into DIR/dev/)
set -euo pipefail
cd "$(dirname "$0")"
LCPROF="${LCPROF:-python3 -m lcprof}"
MODEL="${LCPROF_MODEL:-phi3-128k}"

has_cuda=$(python3 -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
if [ "$has_cuda" = "1" ]; then
    device=cuda
    tag=$(python3 -c 'import torch, re; n=torch.cuda.get_device_name(0).lower(); print("h200" if "h200" in n else "h100" if "h100" in n else re.sub("[^a-z0-9]+", "-", n).strip("-"))')
    MAX_N="${LCPROF_MAX_N:-131072}"
    BUDGET="${LCPROF_BUDGET_S:-1.0}"
    FP32_BACKENDS="eager,sdpa-math,sdpa-efficient"
    BF16_BACKENDS="sdpa-flash,sdpa-cudnn,flash-attn,striped-ring"
else
    device=cpu
    tag="cpu"
    MAX_N="${LCPROF_MAX_N:-2048}"
    BUDGET="${LCPROF_BUDGET_S:-0.5}"
    FP32_BACKENDS="eager,sdpa"
    BF16_BACKENDS=""
fi
OUT="${LCPROF_OUT:-$HOME/lcprof-runs/${tag}-${MODEL}}"
mkdir -p "$OUT"
echo "== output folder: $OUT (outside the checkout; re-running resumes it)"

echo "== analytic: lcprof layer --model $MODEL --n 131072 (no torch)"
start=$(python3 -c 'import time; print(time.perf_counter())')
$LCPROF layer --model "$MODEL" --n 131072
end=$(python3 -c 'import time; print(time.perf_counter())')
analytic_s=$(python3 -c "print(f'{$end - $start:.3f}')")
echo "analytic lcprof layer wall time: ${analytic_s} s (process start to exit)"
echo "analytic_layer_wall_s=${analytic_s}" > "$OUT/analytic_timing.txt"
echo
echo "== KV cache of $MODEL"
$LCPROF kv --model "$MODEL" --n 4k,16k,32k,64k,128k --dtype bf16
$LCPROF kv --model "$MODEL" --n 128k --dtype fp8

echo
echo "== measuring on $device into $OUT (n = 128..$MAX_N)"
# the attention rates are measured at the model's own heads and head dim; the fit holds them (on a CPU the
# attention is too small a share of the measured times to fit its rate, and it dominates at 131072)
shape=$(python3 -c "from lcprof.spec import load_model; s = load_model('$MODEL'); print(f'{s.n_heads},{s.head_dim}')")
if [ -s "$OUT/calibration.json" ] && python3 -c "import json, sys; sys.exit(0 if json.load(open('$OUT/calibration.json')).get('attention_flops_per_s') else 1)"; then
    echo "calibration: keeping $OUT/calibration.json (delete it to measure again)"
else
    $LCPROF calibrate --device "$device" --attention-shape "$shape" --out "$OUT/calibration.json"
fi
$LCPROF sweep --model "$MODEL" --n "128..$MAX_N" --backends "$FP32_BACKENDS" --dtype fp32 \
    --device "$device" --budget-s "$BUDGET" --out "$OUT/results.csv" --resume --calibration "$OUT/calibration.json"
if [ -n "$BF16_BACKENDS" ]; then
    $LCPROF sweep --model "$MODEL" --n "128..$MAX_N" --backends "$BF16_BACKENDS" --dtype bf16 \
        --device "$device" --budget-s "$BUDGET" --out "$OUT/results.csv" --resume --ranks 4 \
        --calibration "$OUT/calibration.json"
fi
# calibrate again after the sweeps and keep each rate's best: a shared machine's speed drifts over
# minutes, and a ceiling measured only while it was slow would be beaten by the sweep (OVER PEAK)
echo "== calibration again, keeping each rate's best of both (--keep-best)"
$LCPROF calibrate --device "$device" --attention-shape "$shape" --out "$OUT/calibration.json" --keep-best | tail -4
echo
echo "== fit (cost model, attention rates held at the calibration's; extrapolated to 131072)"
$LCPROF fit "$OUT/results.csv" --target 131072 --calibration "$OUT/calibration.json" | tee "$OUT/fit.txt"
echo
echo "== compare (roofline on this device's calibration)"
$LCPROF compare "$OUT/results.csv" --calibration "$OUT/calibration.json" | tee "$OUT/compare.txt"
echo
echo "== capacity plan for $MODEL on one H100 (128k vs 4k requests)"
$LCPROF plan --model "$MODEL" --gpu h100-sxm --gpus 1 --long 128k --short 4k --kv-dtype bf16,fp8 --chunk 8k \
    --report "$OUT/plan" | tail -25
if [ "${LCPROF_DEV:-0}" = "1" ]; then
    mkdir -p "$OUT/dev"
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python3 bench/plan_grid.py --out "$OUT/dev/plan_grid.txt" | tail -3
fi
$LCPROF report "$OUT/results.csv" --calibration "$OUT/calibration.json" --target 131072 --out "$OUT" \
    --plan "$OUT/plan/README.md"
echo
echo "report: $OUT/report.md (and report.html)"
