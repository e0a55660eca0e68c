#!/usr/bin/env bash
# The GPU campaign (issue 18), one stage per device call. A session is lent about 15 minutes of device
# time in all (10 per call, machine start included), so run the stages in this order and stop when
# the time is spent; each stage has its own timeouts and writes everything under reports/<gpu>-<date>/
# (and a tarball into $OUT, the device tool's output folder):
#   calib  (~5 min)  pytest -m gpu (measurement, ring, whole-model tests); attention calibrated at
#                    8k..128k at phi3's shape, the committed H100 sweep refitted holding those rates
#                    (issue 15); phi3-128k prefill sweep of SDPA-flash and cuDNN at 8k..128k; compare on
#                    that calibration (issue 18's must-show: within 10% for n >= 8192); decode timed with
#                    CUDA graphs, and its GPU tests
#   model  (~6 min)  scripts/gpu_whole_model.sh: phi3-mini-128k and llama3.1-8b TTFT/TPOT 4k..128k vs the
#                    planner, lcprof's layer vs transformers', a hybrid whole model (issue 16)
#   hybrid (~4 min)  scripts/gpu_hybrid.sh: Mamba-2 and Gated DeltaNet layers, torch and fla (issue 14)
#   kernel (~8 min)  scripts/kernel_gpu.sh: build, canary, pytest -m gpu of the kernel, the sm80 and
#                    sm90a paths and the composed baseline, the benchmark (issue 17)
#   bench  (~8 min)  bench.sh end to end at full length (sweeps to 131072, fit, compare, plan, report)
# FlashAttention-4 (issue 18 stage 5) needs its wheels (~100 MB, sent in parts under 64 MiB); none are
# prepared here: this machine cannot download them.
# Usage on the GPU machine, from the repository root: OUT=/some/dir bash scripts/gpu_campaign.sh STAGE
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:?stage: calib, model, hybrid, kernel or bench}"
OUT="${OUT:-/tmp/lcprof-campaign}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export LCPROF_KERNEL_CACHE="${LCPROF_KERNEL_CACHE:-/tmp/lcprof-kernels}"
DATE="$(date +%Y-%m-%d)"
GPU_TAG=$(python3 -c 'import torch; n=torch.cuda.get_device_name(0).lower(); print("h200" if "h200" in n else "h100" if "h100" in n else n.replace(" ", "-"))')
CAMPAIGN="reports/${GPU_TAG}-${DATE}"
mkdir -p "$CAMPAIGN"
{
  echo "date: $(date -u +%FT%TZ)  stage: $stage  commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv
  python3 -c 'import torch, platform; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "python", platform.python_version())'
  nvcc --version | tail -2
} > "$CAMPAIGN/environment-$stage.txt" 2>&1
t0=$(date +%s)
case "$stage" in
  calib)
    timeout 150 python3 -m pytest -m gpu -q -p no:cacheprovider tests/measure tests/ring tests/gpu 2>&1 \
        | tee "$CAMPAIGN/pytest_gpu.log" | tail -15
    # phi3-128k's own attention shape (32 heads of 96), so that the fit can hold the kernels' rates
    timeout 150 python3 -m lcprof calibrate --device cuda --attention-n 8k,16k,32k,64k,128k --attention-shape 32,96 \
        --out "$CAMPAIGN/calibration_by_n.json" 2>&1 | tee "$CAMPAIGN/calibrate.log" | tail -20
    # issue 15's H100 must-show, from the committed sweep: fit n <= 32768 holding these attention rates,
    # extrapolate to the measured 131072 (compare with the rows at 131072 in the same file)
    python3 -m lcprof fit reports/h100-measure/phi3-128k-h100.csv --min-n 2k --max-n 32k --target 131072 \
        --calibration "$CAMPAIGN/calibration_by_n.json" 2>&1 | tee "$CAMPAIGN/fit_held_h100_sweep.txt" | head -12
    timeout 120 python3 -m lcprof sweep --model phi3-128k --n 8k..128k --backends sdpa-flash,sdpa-cudnn --dtype bf16 \
        --device cuda --budget-s 0.3 --out "$CAMPAIGN/prefill_8k_128k.csv" --resume 2>&1 | tail -12
    python3 -m lcprof compare "$CAMPAIGN/prefill_8k_128k.csv" --calibration "$CAMPAIGN/calibration_by_n.json" \
        2>&1 | tee "$CAMPAIGN/compare_by_n.txt" | head -30
    timeout 60 python3 -m lcprof sweep --model phi3-128k --phase decode --n 4k..128k --backends sdpa-flash \
        --dtype bf16 --device cuda --budget-s 0.2 --cuda-graph --out "$CAMPAIGN/decode_cuda_graph.csv" --resume 2>&1 | tail -8
    ;;
  model)  timeout 560 bash scripts/gpu_whole_model.sh "$CAMPAIGN/whole-model" 2>&1 | tail -40 ;;
  hybrid) timeout 560 bash scripts/gpu_hybrid.sh "$CAMPAIGN/hybrid" 2>&1 | tail -40 ;;
  kernel) timeout 560 bash scripts/kernel_gpu.sh "$CAMPAIGN/kernel" 2>&1 | tail -40 ;;
  bench)  LCPROF_OUT="$CAMPAIGN/bench" timeout 560 bash bench.sh 2>&1 | tee "$CAMPAIGN/bench.log" | tail -40 ;;
  *) echo "unknown stage $stage: use calib, model, hybrid, kernel or bench" >&2; exit 2 ;;
esac
echo "stage $stage done in $(( $(date +%s) - t0 ))s"
tar czf "$OUT/campaign-$stage.tar.gz" "$CAMPAIGN"
ls -la "$OUT"
