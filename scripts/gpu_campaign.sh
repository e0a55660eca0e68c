#!/usr/bin/env bash
# The GPU campaign, in stages that fit one device call each (see reports/README.md).
#   stage 1: environment, `pytest -m gpu`, calibration, a short smoke sweep of every backend
#   stage 2: bench.sh end to end (sweeps to 131072, fit, compare, report) and the kernel benchmark
#   stage 3: attention calibrated at 8k..128k (the 131072 cuDNN point the 16k rate missed), compare
#            of stage 2's sweep on it, and decode timed with CUDA graphs (host overhead removed)
# Usage on the GPU machine: OUT=/some/dir bash scripts/gpu_campaign.sh 1|2|3
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:?stage 1 or 2}"
OUT="${OUT:-/tmp/lcprof-campaign}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export LCPROF_KERNEL_CACHE="${LCPROF_KERNEL_CACHE:-/tmp/lcprof-kernels}"
DATE="$(date +%Y-%m-%d)"
GPU_TAG=$(python3 -c 'import torch; n=torch.cuda.get_device_name(0).lower(); print("h200" if "h200" in n else "h100" if "h100" in n else n.replace(" ", "-"))')
CAMPAIGN="reports/${GPU_TAG}-${DATE}"
mkdir -p "$CAMPAIGN"
{
  echo "date: $(date -u +%FT%TZ)"; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv
  python3 -c 'import torch, platform; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "python", platform.python_version())'
  nvcc --version | tail -2
} > "$CAMPAIGN/environment.txt" 2>&1
t0=$(date +%s)
if [ "$stage" = 1 ]; then
  python3 -c 'import kernels.striped_attn as k; print("kernel:", k.is_available())' 2>&1 | tail -3
  timeout 330 python3 -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$CAMPAIGN/pytest_gpu.log" | tail -25
  echo "stage1 pytest done at +$(( $(date +%s) - t0 ))s"
  timeout 90 python3 -m lcprof calibrate --device cuda --out "$CAMPAIGN/calibration.json" 2>&1 | tail -15
  timeout 120 python3 -m lcprof sweep --model phi3-128k --n 128..2048 --backends eager,sdpa-math,sdpa-efficient,sdpa-flash,sdpa-cudnn,flash-attn,striped-ring \
      --dtype bf16 --device cuda --budget-s 0.2 --ranks 4 --out "$CAMPAIGN/smoke.csv" 2>&1 | tail -20
elif [ "$stage" = 2 ]; then
  LCPROF_OUT="$CAMPAIGN" LCPROF_BUDGET_S="${LCPROF_BUDGET_S:-0.5}" timeout 400 bash bench.sh 2>&1 | tee "$CAMPAIGN/bench.log" | tail -60
  echo "bench done at +$(( $(date +%s) - t0 ))s"
  timeout 150 python3 bench/kernel_bench.py --out "$CAMPAIGN/kernel_bench.csv" 2>&1 | tee "$CAMPAIGN/kernel_bench.log" | tail -40
else
  timeout 240 python3 -m lcprof calibrate --device cuda --attention-n 8k,16k,32k,64k,128k \
      --out "$CAMPAIGN/calibration_by_n.json" 2>&1 | tail -30
  [ -f "$CAMPAIGN/results.csv" ] && python3 -m lcprof compare "$CAMPAIGN/results.csv" \
      --calibration "$CAMPAIGN/calibration_by_n.json" 2>&1 | tee "$CAMPAIGN/compare_by_n.txt" | head -60
  timeout 200 python3 -m lcprof sweep --model phi3-128k --phase decode --n 1k..128k --backends sdpa,sdpa-flash \
      --dtype bf16 --device cuda --budget-s 0.2 --cuda-graph --out "$CAMPAIGN/decode_cuda_graph.csv" 2>&1 | tail -20
  timeout 60 python3 -m pytest -m gpu -q -p no:cacheprovider tests/measure/test_measure_gpu.py -k cuda_graph 2>&1 \
      | tee "$CAMPAIGN/pytest_cuda_graph.log" | tail -5
fi
echo "stage $stage done in $(( $(date +%s) - t0 ))s"
tar czf "$OUT/campaign-stage$stage.tar.gz" "$CAMPAIGN"
ls -la "$OUT"
