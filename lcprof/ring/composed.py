"""Ring steps composed from torch's own fused attention ops: the baseline our kernel must beat.

Someone who needs a fast striped ring without a custom kernel calls a fused attention op that
returns the log-sum-exp once per ring step and merges the steps by their LSE (as
ring-flash-attention does with FlashAttention-2). Every step of a striped or contiguous ring is
one of four masks a fused op can run, drawn for 4 local tokens (x = attended)::

    causal  (striped s <= r, contiguous s == r)     strict  (striped s > r)
         k0 k1 k2 k3                                     k0 k1 k2 k3
    q0   x  .  .  .                                 q0   .  .  .  .   <- nothing: out 0, lse -inf
    q1   x  x  .  .                                 q1   x  .  .  .
    q2   x  x  x  .                                 q2   x  x  .  .
    q3   x  x  x  x                                 q3   x  x  x  .

    full    (contiguous s < r, or not causal)      empty   (contiguous s > r): out 0, lse -inf

``strict`` is the causal mask of q[1:] against k[:-1] (query row i >= 1 sees keys j <= i - 1),
the first query row getting nothing from that step. Positions follow
:mod:`lcprof.ring.block`: query i at ``q_offset + i*q_stride``, key j at
``k_offset + j*k_stride``, causal allows ``pos_k <= pos_q``; :func:`step_mask` finds which of
the four masks that is and refuses any other pattern.

Ops (``OPS``), each returning the natural-log LSE in float32:

    flash      aten._scaled_dot_product_flash_attention (CUDA; FlashAttention-2 inside) and
               aten._scaled_dot_product_flash_attention_for_cpu (the CPU, any float dtype)
    cudnn      aten._scaled_dot_product_cudnn_attention (CUDA, fp16/bf16)
    efficient  aten._scaled_dot_product_efficient_attention (CUDA; its LSE is padded to a
               multiple of 32 rows, sliced here)

GQA: an op is first tried with fewer K/V heads than query heads on a tiny input and its result
compared with K/V expanded by ``repeat_interleave``; an op that refuses or disagrees gets K/V
expanded for every call (remembered per op, device type and dtype).

Shapes (as :func:`lcprof.ring.block.block_attention`)::

    q    (batch, n_q, heads,    head_dim)
    k, v (batch, n_k, kv_heads, head_dim)      heads % kv_heads == 0
    out  (batch, n_q, heads,    head_dim)      dtype of q
    lse  (batch, heads, n_q)                   float32 (float64 for float64 inputs), natural log;
                                               -inf where nothing is attended
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["OPS", "MASKS", "step_mask", "composed_block_attention", "op_status"]

OPS = ("flash", "cudnn", "efficient")
MASKS = ("causal", "strict", "full", "empty")


def step_mask(n_q: int, n_k: int, *, q_offset: int, q_stride: int, k_offset: int, k_stride: int,
              causal: bool = True) -> str:
    """Which fused-op mask a block's positional mask is: one of ``MASKS``.

    ``full`` when every pair is allowed (not causal, or the last key is at or before the first
    query), ``empty`` when none is (no query or no key, or the first key after the last query), ``causal`` / ``strict``
    when n_q == n_k, the strides are equal and local query i sees keys j <= i / j <= i - 1.
    Raises ValueError for any other pattern (a fused op cannot run it).
    """
    if q_stride < 1 or k_stride < 1:
        raise ValueError(f"q_stride and k_stride must be >= 1, got {q_stride} and {k_stride}")
    if n_q == 0 or n_k == 0:
        return "empty"
    if not causal:
        return "full"
    first_q, last_q = q_offset, q_offset + (n_q - 1) * q_stride
    first_k, last_k = k_offset, k_offset + (n_k - 1) * k_stride
    if last_k <= first_q:
        return "full"
    if first_k > last_q:
        return "empty"
    if n_q == n_k and q_stride == k_stride:
        # local query i sees keys j <= i + d with d = floor((q_offset - k_offset) / stride)
        d = (q_offset - k_offset) // q_stride
        if d == 0:
            return "causal"
        if d == -1:
            return "strict"
    raise ValueError(
        f"a fused attention op cannot run this block mask (n_q={n_q}, n_k={n_k}, q at {q_offset}+i*{q_stride}, "
        f"k at {k_offset}+j*{k_stride}): composed steps take striped or contiguous ring steps only"
    )


# ------------------------------------------------------------------------------------------------
# The ops, on (batch, heads, n, head_dim) views; each returns (out, lse (batch, heads, n_q) fp32)
# ------------------------------------------------------------------------------------------------


def _run_op(op: str, qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor, causal: bool,
            scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    aten = torch.ops.aten
    if op == "flash":
        if qh.is_cuda:
            res = aten._scaled_dot_product_flash_attention(qh, kh, vh, 0.0, causal, False, scale=scale)
        else:
            res = aten._scaled_dot_product_flash_attention_for_cpu(qh, kh, vh, 0.0, causal, scale=scale)
    elif op == "cudnn":
        res = aten._scaled_dot_product_cudnn_attention(qh, kh, vh, None, True, 0.0, causal, False, scale=scale)
    elif op == "efficient":
        res = aten._scaled_dot_product_efficient_attention(qh, kh, vh, None, True, 0.0, causal, scale=scale)
    else:
        raise ValueError(f"unknown fused attention op {op!r}; expected one of {', '.join(OPS)}")
    out, lse = res[0], res[1]
    batch, heads, n_q = qh.shape[0], qh.shape[1], qh.shape[2]
    # cuDNN may return (b, h, n, 1); the efficient kernel pads its rows to a multiple of 32
    lse = lse.reshape(batch, heads, -1)[:, :, :n_q].to(_lse_dtype(qh.dtype))  # (batch, heads, n_q)
    return out, lse


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _expand_kv(k: torch.Tensor, group: int) -> torch.Tensor:
    return k if group == 1 else k.repeat_interleave(group, dim=2)  # (b, n_k, heads, d)


@functools.lru_cache(maxsize=None)
def _native_gqa(op: str, device_type: str, dtype: torch.dtype) -> bool:
    """True when ``op`` takes fewer K/V heads than query heads and gets the expanded result."""
    device = torch.device(device_type)
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(1, 64, 4, 64, generator=g).to(device=device, dtype=dtype)  # (b, n, heads, d)
    k = torch.randn(1, 64, 2, 64, generator=g).to(device=device, dtype=dtype)  # (b, n, kv_heads, d)
    v = torch.randn(1, 64, 2, 64, generator=g).to(device=device, dtype=dtype)
    try:
        out, lse = _run_op(op, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), True, 0.125)
    except Exception:  # noqa: BLE001 - a refusal means: expand K/V
        return False
    ref, ref_lse = _run_op(op, q.transpose(1, 2), _expand_kv(k, 2).transpose(1, 2), _expand_kv(v, 2).transpose(1, 2),
                           True, 0.125)
    return bool(torch.allclose(out.float(), ref.float(), atol=1e-2, rtol=0)
                and torch.allclose(lse, ref_lse, atol=1e-3, rtol=0))


def op_status(op: str, device: torch.device | str, dtype: torch.dtype) -> tuple[bool, str]:
    """(available, reason) of a fused op on (device, dtype): a tiny causal call that must match
    the float64 reference (out and LSE); never raises."""
    if op not in OPS:
        return False, f"unknown fused attention op {op!r}; expected one of {', '.join(OPS)}"
    dev = torch.device(device)
    return _op_status(op, dev.type, dtype)


@functools.lru_cache(maxsize=None)
def _op_status(op: str, device_type: str, dtype: torch.dtype) -> tuple[bool, str]:
    if device_type != "cuda" and op != "flash":
        return False, f"aten's {op} attention runs on CUDA only"
    if device_type == "cuda" and not torch.cuda.is_available():
        return False, "no CUDA device"
    from lcprof.kernels.reference import block_attention_reference

    device = torch.device(device_type)
    g = torch.Generator(device="cpu").manual_seed(1)
    q, k, v = (torch.randn(1, 64, 2, 64, generator=g).to(device=device, dtype=dtype) for _ in range(3))
    try:
        out, lse = composed_block_attention(q, k, v, q_offset=0, q_stride=1, k_offset=0, k_stride=1, op=op)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        text = str(exc).strip().splitlines()
        return False, f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    ref, ref_lse = block_attention_reference(q.double(), k.double(), v.double(), causal=True)
    tol = 1e-5 if dtype in (torch.float32, torch.float64) else 3e-2
    if not torch.allclose(out.double(), ref, atol=tol, rtol=0):
        return False, f"{op}: out differs from the reference on a tiny causal call"
    if not torch.allclose(lse.double(), ref_lse, atol=1e-3, rtol=0):
        return False, f"{op}: lse differs from the reference (not a natural-log LSE?)"
    return True, f"{device_type} {str(dtype).replace('torch.', '')}: ran"


# ------------------------------------------------------------------------------------------------
# One ring step
# ------------------------------------------------------------------------------------------------


def _empty(q: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch, _, heads, head_dim = q.shape
    out = torch.zeros(batch, n_rows, heads, head_dim, dtype=q.dtype, device=q.device)
    lse = torch.full((batch, heads, n_rows), -math.inf, dtype=_lse_dtype(q.dtype), device=q.device)
    return out, lse


def _fused(op: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
           scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused call on (b, n, h, d) tensors; returns out (b, n_q, h, d), lse (b, h, n_q) fp32."""
    group = q.shape[2] // k.shape[2]
    if group > 1 and not _native_gqa(op, q.device.type, q.dtype):
        k, v = _expand_kv(k, group), _expand_kv(v, group)
    out, lse = _run_op(op, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal, scale)
    return out.transpose(1, 2), lse  # (b, n_q, h, d), (b, h, n_q)


def composed_block_attention(
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
    op: str = "flash",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ring step through the fused op ``op``; same contract as ``block_attention``.

    Returns (out (batch, n_q, heads, head_dim) in q's dtype, lse (batch, heads, n_q) float32, or
    float64 for float64 inputs).
    """
    if op not in OPS:
        raise ValueError(f"unknown fused attention op {op!r}; expected one of {', '.join(OPS)}")
    n_q, n_k = q.shape[1], k.shape[1]
    kind = step_mask(n_q, n_k, q_offset=q_offset, q_stride=q_stride, k_offset=k_offset, k_stride=k_stride,
                     causal=causal)
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    if kind == "empty":
        return _empty(q, n_q)
    if kind in ("full", "causal"):
        out, lse = _fused(op, q, k, v, kind == "causal", scale)
        return out.to(q.dtype), lse
    # strict: q[1:] causal against k[:-1]; query row 0 sees nothing
    if n_q == 1:
        return _empty(q, 1)
    out_tail, lse_tail = _fused(op, q[:, 1:], k[:, :-1], v[:, :-1], True, scale)  # (b, n_q-1, h, d)
    out0, lse0 = _empty(q, 1)
    return torch.cat([out0, out_tail.to(q.dtype)], dim=1), torch.cat([lse0, lse_tail], dim=2)
