#!/usr/bin/env bash
# Compile every CUDA source under kernels/csrc standalone (no torch), for sm_80 and sm_90a, the
# way CI checks the kernel; then check the Hopper path's sm_90a machine code (no spills, HGMMA
# and UTMALDG in the SASS, no serialized wgmma: kernels/check_sm90.py). Exits non-zero on failure.
# Usage: kernels/check_compile.sh [extra nvcc flags, e.g. --resource-usage]
# The SASS check needs cuobjdump and nvdisasm (CUDA toolkit, or pip install nvidia-cuda-cuobjdump
# nvidia-cuda-nvdisasm); LCPROF_SKIP_SASS=1 skips it.
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
if [ "${LCPROF_SKIP_SASS:-0}" != "1" ]; then
  echo "== sm_90a machine code of the Hopper path"
  if ! python3 "$here/check_sm90.py" --nvcc "$(command -v "$nvcc")"; then
    echo "check_compile.sh: FAILED the sm_90a machine-code check" >&2
    status=1
  fi
fi
exit $status
