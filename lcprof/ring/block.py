"""Attention of one query block against one K/V block, with global positions.

Shapes::

    q    (batch, n_q, heads,    head_dim)
    k, v (batch, n_k, kv_heads, head_dim)      heads % kv_heads == 0
    out  (batch, n_q, heads,    head_dim)      dtype of q
    lse  (batch, heads, n_q)                   float32 (float64 for float64 inputs), natural log

GQA: query head h uses K/V head h // (heads // kv_heads).

Positions and mask: query i is at global position ``q_offset + i*q_stride``,
key j at ``k_offset + j*k_stride``. With ``causal=True`` the pair is allowed
iff pos_k <= pos_q (diagonal included). Example, striped ring with G = 2,
rank 1's queries (offset 1, stride 2) against rank 0's keys (offset 0,
stride 2)::

              key pos  0 2 4 6
    query pos 1        x . . .
              3        x x . .
              5        x x x .
              7        x x x x

and against its own keys (offset 1, stride 2) the usual lower triangle. A
query row with no allowed key gets out = 0 and lse = -inf, so that merging it
with other blocks is a no-op.

``block_attention`` picks the implementation: the CUDA kernel
(``lcprof.kernels.striped_attn``; its device path, sm80 or sm90, from ``$LCPROF_RING_KERNEL``), the torch fallback ``block_attention_torch``, or a step composed
from one of torch's fused attention ops (``composed-flash``, ``composed-cudnn``,
``composed-efficient``: :mod:`lcprof.ring.composed`, the baseline the kernel must beat).
"""

from __future__ import annotations

import functools
import importlib

import torch

COMPOSED_IMPLS = ("composed-flash", "composed-cudnn", "composed-efficient")
IMPLS = ("auto", "torch", "kernel", *COMPOSED_IMPLS)

# What lcprof.kernels.striped_attn supports (see its docstring); auto falls back to torch otherwise.
_KERNEL_HEAD_DIMS = (64, 96, 128)

def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_stride: int, k_stride: int) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "q, k, v must be 4-D (batch, tokens, heads, head_dim); "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch or head_dim")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"heads ({q.shape[2]}) must be a multiple of kv_heads ({k.shape[2]})")
    if q_stride < 1 or k_stride < 1:
        raise ValueError(f"q_stride and k_stride must be >= 1, got {q_stride} and {k_stride}")


def block_attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    q_offset: int,
    q_stride: int,
    k_offset: int,
    k_stride: int,
    causal: bool = True,
    softmax_scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch fallback (see module docstring). Returns (out, lse).

    One implementation serves both the kernel's tests and the ring:
    ``lcprof.kernels.reference.block_attention_reference`` (float32, float64 for float64
    inputs; chunked over query rows).
    """
    from lcprof.kernels.reference import block_attention_reference

    _check_inputs(q, k, v, q_stride, k_stride)
    return block_attention_reference(q, k, v, q_offset=q_offset, q_stride=q_stride, k_offset=k_offset,
                                     k_stride=k_stride, causal=causal, softmax_scale=softmax_scale)


@functools.lru_cache(maxsize=1)
def kernel_status() -> tuple[bool, str]:
    """(available, reason) for the CUDA kernel ``lcprof.kernels.striped_attn``; probed once."""
    try:
        mod = importlib.import_module("lcprof.kernels.striped_attn")
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return False, f"lcprof.kernels.striped_attn not importable: {type(exc).__name__}: {exc}"
    try:
        ok, reason = mod.is_available()
    except Exception as exc:  # noqa: BLE001
        return False, f"lcprof.kernels.striped_attn.is_available() failed: {type(exc).__name__}: {exc}"
    return bool(ok), str(reason)


def resolve_impl(impl: str, q: torch.Tensor) -> tuple[str, str]:
    """Which implementation ``block_attention`` will use for ``q``: ("torch"|"kernel", reason).

    ``auto`` uses the kernel for fp16/bf16 CUDA tensors with head_dim 64, 96 or
    128 when it is available, otherwise torch. ``kernel`` and ``composed-*`` raise RuntimeError
    when they cannot run on q's device and dtype.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown block attention impl {impl!r}; expected one of {', '.join(IMPLS)}")
    if impl == "torch":
        return "torch", "requested"
    if impl in COMPOSED_IMPLS:
        from lcprof.ring.composed import op_status

        ok, reason = op_status(impl.split("-", 1)[1], q.device, q.dtype)
        if not ok:
            raise RuntimeError(f"impl={impl!r} cannot run here: {reason}")
        return impl, reason
    if impl == "kernel":
        ok, reason = kernel_status()
        if not ok:
            raise RuntimeError(f"impl='kernel' requested but the striped attention kernel is unavailable: {reason}")
        if not q.is_cuda:
            raise RuntimeError(f"impl='kernel' needs CUDA tensors, got device {q.device}")
        return "kernel", reason
    if not q.is_cuda:
        return "torch", f"tensors on {q.device}"
    if q.dtype not in (torch.float16, torch.bfloat16):
        return "torch", f"dtype {q.dtype} (auto uses the kernel for fp16/bf16 only)"
    if q.shape[-1] not in _KERNEL_HEAD_DIMS:
        return "torch", f"head_dim {q.shape[-1]} (the kernel supports {_KERNEL_HEAD_DIMS})"
    ok, reason = kernel_status()
    return ("kernel", reason) if ok else ("torch", reason)


def block_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    q_offset: int,
    q_stride: int,
    k_offset: int,
    k_stride: int,
    causal: bool = True,
    softmax_scale: float | None = None,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block attention through the kernel or the torch fallback; see :func:`resolve_impl`."""
    name, _ = resolve_impl(impl, q)
    kwargs = dict(
        q_offset=q_offset,
        q_stride=q_stride,
        k_offset=k_offset,
        k_stride=k_stride,
        causal=causal,
        softmax_scale=softmax_scale,
    )
    if name == "kernel":
        mod = importlib.import_module("lcprof.kernels.striped_attn")
        return mod.striped_block_attention(q, k, v, **kwargs)
    if name in COMPOSED_IMPLS:
        from lcprof.ring.composed import composed_block_attention

        _check_inputs(q, k, v, q_stride, k_stride)
        return composed_block_attention(q, k, v, op=name.split("-", 1)[1], **kwargs)
    return block_attention_torch(q, k, v, **kwargs)


def block_fully_masked(q_offset: int, q_stride: int, n_q: int, k_offset: int, causal: bool = True) -> bool:
    """True when no query of the block may attend any key (smallest key after the last query)."""
    return causal and n_q > 0 and k_offset > q_offset + (n_q - 1) * q_stride
