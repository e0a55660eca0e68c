#!/usr/bin/env bash
# Regenerate the committed capacity-plan reports (reports/plan-*). CPU only, no torch, about a minute.
# Usage: scripts/plan_reports.sh   (from the repository root; uses the lcprof on PYTHONPATH)
set -euo pipefail
cd "$(dirname "$0")/.."
plan() { python3 -m lcprof plan "$@"; }

plan --model llama3.1-70b --gpu h100-sxm --gpus 8 --tp 8 --kv-dtype bf16,fp8 --long 128k --short 4k --ttft 2s \
     --tpot 50ms --report reports/plan-llama3.1-70b > /dev/null
plan --model deepseek-v2-lite --gpu h100-sxm --gpus 1 --kv-dtype bf16,fp8 --long 32k \
     --mix 2k:0.8,8k:0.15,32k:0.05 --ttft 2s --tpot 50ms --report reports/plan-deepseek-v2-lite > /dev/null
plan --model deepseek-v3 --gpu h200 --gpus 8 --tp 1 --dp 8 --ep 8 --weights fp8 --kv-dtype bf16,fp8 --long 128k \
     --short 4k --ttft 2s --tpot 50ms --report reports/plan-deepseek-v3-h200-dp8 > /dev/null
plan --model deepseek-v3 --gpu h200 --gpus 8 --tp 8 --weights fp8 --kv-dtype bf16,fp8 --long 128k --short 4k \
     --ttft 2s --tpot 50ms --report reports/plan-deepseek-v3-h200-tp8 > /dev/null
plan --model mistral-7b --gpu h100-sxm --gpus 1 --kv-dtype bf16,fp8 --chunk 4k --long 32k --short 4k --ttft 1s \
     --tpot 30ms --report reports/plan-mistral-7b > /dev/null
# a hybrid: 12 attention + 36 Gated DeltaNet layers, state paged as vLLM's hybrid allocator pages it
plan --model qwen3-next-80b-a3b --gpu h200 --gpus 2 --tp 2 --kv-dtype bf16,fp8 --long 128k --short 4k --ttft 2s \
     --tpot 50ms --report reports/plan-qwen3-next-80b-a3b-h200 > /dev/null

# one model, three accountings (reports/plan-engines/README.md)
for e in vllm sglang none; do
  plan --model llama3.1-8b --gpu h200 --long 128k --short 4k --ttft 2s --engine "$e" --format json \
       > "reports/plan-engines/llama3.1-8b-h200-$e.json"
done
plan --model llama3.1-8b --gpu h200 --long 128k --short 4k --no-chunk --format json \
     > reports/plan-engines/llama3.1-8b-h200-vllm--no-chunk.json
