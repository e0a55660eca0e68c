"""Python wrapper of the striped ring attention CUDA kernel (forward).

The extension is built on first use with ``torch.utils.cpp_extension.load``
from the CUDA sources in the checkout's ``kernels/csrc/`` (``$LCPROF_KERNEL_SRC`` elsewhere) into a
cache directory:
``$LCPROF_KERNEL_CACHE`` or ``~/.cache/lcprof/kernels``, one sub-directory per
torch/CUDA version. Importing this module imports nothing heavy; torch is
imported inside the functions.

Two device paths, one contract:

    sm80   mma.sync + cp.async (FlashAttention-2 style); any GPU of compute capability >= 8.0
    sm90   TMA + wgmma, warp-specialized (FlashAttention-3 style); compute capability 9.0 only

The sm90 path is opt-in until it has passed the GPU test suite on an H100/H200: the path comes
from the ``path`` argument, else ``$LCPROF_RING_KERNEL`` (``sm80``, ``sm90`` or ``auto`` = sm90
on a 9.0 device, sm80 elsewhere), else ``sm80``. ``$LCPROF_SM90_VARIANT`` (1 serial, 2 overlapped,
3 overlapped + ping-pong) replaces the sm90 path's default pipeline (3) for ``variant=0``.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

__all__ = ["striped_block_attention", "is_available", "load", "build_directory", "resolve_path", "PATHS", "SOURCES",
           "ENV_PATH", "DEFAULT_PATH"]

#: the CUDA sources: the repository's kernels/csrc (this file is lcprof/kernels/striped_attn.py), or
#: $LCPROF_KERNEL_SRC for an install that is not a checkout
_CSRC = Path(os.environ.get("LCPROF_KERNEL_SRC") or Path(__file__).resolve().parents[2] / "kernels" / "csrc")
SOURCES = (
    _CSRC / "striped_attn_binding.cpp",
    _CSRC / "striped_attn_kernel.cu",  # sm80 path
    _CSRC / "striped_attn_sm90.cu",  # sm90 host side; one file per head dim, built in parallel
    _CSRC / "striped_attn_sm90_d64.cu",
    _CSRC / "striped_attn_sm90_d96.cu",
    _CSRC / "striped_attn_sm90_d128.cu",
)
PATHS = ("sm80", "sm90")
ENV_PATH = "LCPROF_RING_KERNEL"
DEFAULT_PATH = "sm80"  # becomes "auto" once the sm90 path has passed `pytest -m gpu` on Hopper
_EXT_NAME = "lcprof_striped_attn"
EXTRA_CUDA_CFLAGS = (
    "-O3",
    "--use_fast_math",
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_80,code=sm_80",
    "-std=c++17",
)

_lock = threading.Lock()
_ext = None  # the loaded module
_build_error: str | None = None  # first line of the build failure, cached


def build_directory() -> Path:
    """Where the extension is built: one folder per torch and CUDA version."""
    import torch

    root = os.environ.get("LCPROF_KERNEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lcprof", "kernels")
    tag = f"torch{torch.__version__}-cuda{torch.version.cuda or 'none'}".replace("+", "_")
    return Path(root) / tag


def load():
    """Build (first call) and return the extension module; raises on failure."""
    global _ext, _build_error
    with _lock:
        if _ext is not None:
            return _ext
        if _build_error is not None:
            raise RuntimeError(f"striped attention kernel build failed earlier: {_build_error}")
        from torch.utils.cpp_extension import load as load_extension

        build_dir = build_directory()
        build_dir.mkdir(parents=True, exist_ok=True)
        try:
            _ext = load_extension(
                name=_EXT_NAME,
                sources=[str(s) for s in SOURCES],
                extra_cflags=["-O3", "-std=c++17"],
                extra_cuda_cflags=list(EXTRA_CUDA_CFLAGS),
                extra_include_paths=[str(_CSRC)],
                build_directory=str(build_dir),
                verbose=os.environ.get("LCPROF_KERNEL_VERBOSE", "") not in ("", "0"),
            )
        except Exception as exc:  # noqa: BLE001 - any build failure is reported the same way
            _build_error = _first_line(exc)
            raise
        return _ext


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            return f"{type(exc).__name__}: {line}"
    return type(exc).__name__


def _nvcc_path() -> str | None:
    try:
        from torch.utils.cpp_extension import CUDA_HOME
    except Exception:  # noqa: BLE001
        CUDA_HOME = None
    if CUDA_HOME:
        candidate = Path(CUDA_HOME) / "bin" / "nvcc"
        if candidate.exists():
            return str(candidate)
    return shutil.which("nvcc")


def is_available() -> tuple[bool, str]:
    """``(True, "")`` when the kernel can run here, else ``(False, reason)``.

    Reasons: torch missing, no CUDA device, nvcc or ninja missing, a GPU older
    than sm_80, or the build failed (with the error's first line). Builds the
    extension on first call.
    """
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA device (torch.cuda.is_available() is False)"
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return False, f"needs compute capability >= 8.0, device has {major}.{minor}"
    missing = [src.name for src in SOURCES if not src.is_file()]
    if _ext is None and missing:
        return False, (f"the kernel's CUDA sources are not at {_CSRC} ({missing[0]} missing): build from a "
                       "checkout of lcprof (pip install -e .) or set LCPROF_KERNEL_SRC to its kernels/csrc")
    if _ext is None and _build_error is None:
        if _nvcc_path() is None:
            return False, "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
        if shutil.which("ninja") is None:
            try:
                from torch.utils.cpp_extension import is_ninja_available

                ninja_ok = is_ninja_available()
            except Exception:  # noqa: BLE001
                ninja_ok = False
            if not ninja_ok:
                return False, "ninja not found (pip install ninja)"
    try:
        load()
    except Exception as exc:  # noqa: BLE001
        return False, f"build failed: {_build_error or _first_line(exc)}"
    return True, ""


def resolve_path(path: str | None = None, device=None) -> str:
    """``sm80`` or ``sm90``: ``path``, else ``$LCPROF_RING_KERNEL``, else ``DEFAULT_PATH``.

    ``auto`` means sm90 on a compute capability 9.0 device (``device``, default the current
    one), sm80 elsewhere. Raises ValueError for any other value, naming where it came from.
    """
    source = "path"
    if path is None:
        path, source = os.environ.get(ENV_PATH, "") or DEFAULT_PATH, f"${ENV_PATH}"
    path = str(path).strip().lower()
    if path == "auto":
        import torch

        if not torch.cuda.is_available():
            return "sm80"
        return "sm90" if torch.cuda.get_device_capability(device) == (9, 0) else "sm80"
    if path not in PATHS:
        raise ValueError(f"unknown striped kernel path {path!r} (from {source}); expected one of "
                         f"{', '.join(PATHS)} or auto")
    return path


def striped_block_attention(
    q,
    k,
    v,
    *,
    q_offset: int = 0,
    q_stride: int = 1,
    k_offset: int = 0,
    k_stride: int = 1,
    causal: bool = True,
    softmax_scale: float | None = None,
    path: str | None = None,
    variant: int = 0,
):
    """Attention of a query block against one K/V block of a ring step.

    Shapes (contiguous, CUDA, float16 or bfloat16; head_dim 64, 96 or 128)::

        q    (batch, n_q, heads,    head_dim)
        k, v (batch, n_k, kv_heads, head_dim)     heads % kv_heads == 0
        ->
        out  (batch, n_q, heads,    head_dim)     dtype of q
        lse  (batch, heads, n_q)                  float32, natural log

    Query row i sits at global position ``q_offset + i*q_stride``, key row j at
    ``k_offset + j*k_stride``. With ``causal=True`` query i attends key j iff
    ``pos_k(j) <= pos_q(i)`` (inclusive: a token sees itself); with
    ``causal=False`` every pair is allowed. Query head h reads kv head
    ``h // (heads // kv_heads)``. ``softmax_scale`` defaults to
    ``1/sqrt(head_dim)``.

    Striped ring, G ranks, rank r holds tokens r, r+G, r+2G, ...; the block
    from rank s: ``q_offset=r, q_stride=G, k_offset=s, k_stride=G``.
    G=4, r=1 (queries at 1, 5, 9, 13)::

        s=0 (keys 0,4,8,12)      s=2 (keys 2,6,10,14)
             j: 0 1 2 3               j: 0 1 2 3
        i=0     x . . .          i=0     . . . .    <- no allowed key:
        i=1     x x . .          i=1     x . . .       out = 0, lse = -inf
        i=2     x x x .          i=2     x x . .
        i=3     x x x x          i=3     x x x .

    Contiguous ring, L tokens per rank: ``q_offset=r*L, k_offset=s*L``,
    strides 1: the diagonal step (s == r) is plain causal attention, s < r is
    unmasked, s > r is fully masked (every row empty).

    With n_q != n_k and offsets 0, strides 1 the mask is aligned top-left
    (row i sees keys 0..i); pass ``q_offset = n_k - n_q`` for the bottom-right
    alignment of a KV cache.

    ``lse`` is ``log(sum_j exp(scale * q_i . k_j))`` over the allowed keys, so
    ring steps can be merged: ``lse = logaddexp(lse_a, lse_b)``,
    ``out = exp(lse_a - lse) * out_a + exp(lse_b - lse) * out_b``.

    ``path`` picks the device code (see the module docstring; default from
    ``$LCPROF_RING_KERNEL``, else sm80); ``variant`` a tile configuration or
    pipeline of that path (0 = its default; for tuning and tests).
    """
    ext = load()
    fwd = ext.fwd_sm90 if resolve_path(path, q.device) == "sm90" else ext.fwd
    return fwd(
        q,
        k,
        v,
        int(q_offset),
        int(q_stride),
        int(k_offset),
        int(k_stride),
        bool(causal),
        None if softmax_scale is None else float(softmax_scale),
        int(variant),
    )
