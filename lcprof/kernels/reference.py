"""Plain-torch reference of the striped ring attention block kernel.

Same semantics as :func:`lcprof.kernels.striped_attn.striped_block_attention`, on any
device and any float dtype. It is the oracle of the kernel tests and the
per-step attention of the ring code on the CPU.
"""

from __future__ import annotations

import math

__all__ = ["block_attention_reference", "allowed_mask"]

# Score elements materialised at once (per chunk of query rows): 2**24 fp32
# scores are 64 MiB, a few times that with the softmax temporaries.
_CHUNK_SCORES = 1 << 24


def allowed_mask(n_q, n_k, *, q_offset=0, q_stride=1, k_offset=0, k_stride=1, causal=True, device=None, rows=None):
    """Boolean (n_q, n_k) mask, True where query i may attend key j.

    ``pos_q(i) = q_offset + i * q_stride``, ``pos_k(j) = k_offset + j * k_stride``;
    causal allows ``pos_k(j) <= pos_q(i)``, non-causal allows every pair.
    ``rows`` (a range or 1-D tensor of query indices) restricts the rows.
    """
    import torch

    i = torch.arange(n_q, device=device) if rows is None else torch.as_tensor(rows, device=device)
    if not causal:
        return torch.ones(i.numel(), n_k, dtype=torch.bool, device=device)
    pos_q = q_offset + i.to(torch.int64) * q_stride  # (rows,)
    pos_k = k_offset + torch.arange(n_k, device=device, dtype=torch.int64) * k_stride  # (n_k,)
    return pos_k[None, :] <= pos_q[:, None]  # (rows, n_k)


def block_attention_reference(
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
):
    """Block attention with a positional causal mask, in plain torch.

    Shapes::

        q    (batch, n_q, heads,    head_dim)
        k, v (batch, n_k, kv_heads, head_dim)      heads % kv_heads == 0
        out  (batch, n_q, heads,    head_dim)      dtype of q
        lse  (batch, heads, n_q)                   float32 (float64 for float64 inputs)

    Query row i sits at position ``q_offset + i*q_stride``, key row j at
    ``k_offset + j*k_stride``; with ``causal`` query i attends key j iff
    ``pos_k(j) <= pos_q(i)``. Query head h reads kv head
    ``h // (heads // kv_heads)``. ``lse`` is the natural log of the softmax
    denominator ``sum_j exp(scale * q.k_j)`` over allowed keys. A row with no
    allowed key gets ``out = 0`` and ``lse = -inf``.

    Computes in float32, or in float64 when q is float64; chunks over query
    rows so that at most ~2**24 scores live at once.
    """
    import torch

    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be 4-D (batch, n, heads, head_dim)")
    batch, n_q, heads, head_dim = q.shape
    _, n_k, kv_heads, _ = k.shape
    if k.shape[0] != batch or v.shape != k.shape or k.shape[3] != head_dim:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
    if q_stride < 1 or k_stride < 1:
        raise ValueError("q_stride and k_stride must be >= 1")
    group = heads // kv_heads
    scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else float(softmax_scale)
    cdtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    device = q.device

    out = torch.zeros(batch, kv_heads, group, n_q, head_dim, dtype=cdtype, device=device)
    lse = torch.full((batch, kv_heads, group, n_q), -math.inf, dtype=cdtype, device=device)
    if n_q == 0 or n_k == 0 or batch == 0:
        return _finish(out, lse, q.dtype, batch, n_q, heads, head_dim)

    # (batch, kv_heads, group, n_q, head_dim): query head h = kvh * group + g
    qg = q.to(cdtype).permute(0, 2, 1, 3).reshape(batch, kv_heads, group, n_q, head_dim)
    kt = k.to(cdtype).permute(0, 2, 3, 1).unsqueeze(2)  # (batch, kv_heads, 1, head_dim, n_k)
    vv = v.to(cdtype).permute(0, 2, 1, 3).unsqueeze(2)  # (batch, kv_heads, 1, n_k, head_dim)

    rows_per_chunk = max(1, _CHUNK_SCORES // max(1, batch * heads * n_k))
    for i0 in range(0, n_q, rows_per_chunk):
        i1 = min(n_q, i0 + rows_per_chunk)
        s = torch.matmul(qg[..., i0:i1, :], kt) * scale  # (batch, kv_heads, group, rows, n_k)
        if causal:
            mask = allowed_mask(
                n_q, n_k, q_offset=q_offset, q_stride=q_stride, k_offset=k_offset, k_stride=k_stride,
                causal=True, device=device, rows=range(i0, i1),
            )  # (rows, n_k)
            s = s.masked_fill(~mask, -math.inf)
        m = s.amax(dim=-1, keepdim=True)  # (..., rows, 1); -inf for an empty row
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        p = torch.exp(s - m)
        denom = p.sum(dim=-1, keepdim=True)  # (..., rows, 1)
        nonempty = denom > 0
        o = torch.matmul(p, vv) / torch.where(nonempty, denom, torch.ones_like(denom))
        out[..., i0:i1, :] = o
        lse[..., i0:i1] = torch.where(nonempty, m + torch.log(denom), torch.full_like(denom, -math.inf)).squeeze(-1)
    return _finish(out, lse, q.dtype, batch, n_q, heads, head_dim)


def _finish(out, lse, dtype, batch, n_q, heads, head_dim):
    # (batch, kv_heads, group, n_q, head_dim) -> (batch, n_q, heads, head_dim)
    out = out.reshape(batch, heads, n_q, head_dim).permute(0, 2, 1, 3).contiguous().to(dtype)
    lse = lse.reshape(batch, heads, n_q)  # (batch, heads, n_q)
    return out, lse
