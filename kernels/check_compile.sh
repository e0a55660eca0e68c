#!/usr/bin/env bash
# Compile every CUDA source under kernels/csrc standalone (no torch), for
# sm_80 and sm_90a, the way CI checks the kernel. Exits non-zero on failure.
# Usage: kernels/check_compile.sh [extra nvcc flags, e.g. --resource-usage]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
nvcc="${NVCC:-nvcc}"
if ! command -v "$nvcc" >/dev/null 2>&1; then
  echo "check_compile.sh: nvcc not found (set NVCC or put nvcc on PATH)" >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
shopt -s nullglob
sources=("$here"/csrc/*.cu)
if [ ${#sources[@]} -eq 0 ]; then
  echo "check_compile.sh: no .cu files under $here/csrc" >&2
  exit 1
fi
status=0
for src in "${sources[@]}"; do
  name="$(basename "$src" .cu)"
  echo "== $name.cu"
  if ! "$nvcc" -std=c++17 -c "$src" \
      -gencode=arch=compute_80,code=sm_80 \
      -gencode=arch=compute_90a,code=sm_90a \
      -o "$tmp/$name.o" "$@"; then
    echo "check_compile.sh: FAILED $src" >&2
    status=1
  fi
done
exit $status
