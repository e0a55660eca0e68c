import importlib.util

import pytest
import torch

from lcprof.ring import block as block_mod
from lcprof.ring.block import block_attention, block_attention_torch, resolve_impl
from lcprof.ring.merge import merge_attention, merge_many


def brute_block(q, k, v, q_offset, q_stride, k_offset, k_stride, causal=True):
    """Loop-based float64 block attention: (out, lse) per the block semantics."""
    b, n_q, h, d = q.shape
    n_k, h_kv = k.shape[1], k.shape[2]
    g = h // h_kv
    out = torch.zeros(b, n_q, h, d, dtype=torch.float64)
    lse = torch.full((b, h, n_q), float("-inf"), dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            for i in range(n_q):
                keys = [j for j in range(n_k) if not causal or k_offset + j * k_stride <= q_offset + i * q_stride]
                if not keys:
                    continue
                s = torch.stack([q[bi, i, hi].double() @ k[bi, j, hi // g].double() for j in keys]) * d**-0.5
                lse[bi, hi, i] = torch.logsumexp(s, 0)
                p = torch.softmax(s, 0)
                out[bi, i, hi] = sum(p[c] * v[bi, j, hi // g].double() for c, j in enumerate(keys))
    return out, lse


@pytest.mark.parametrize(
    "q_offset,q_stride,k_offset,k_stride",
    [(0, 1, 0, 1), (1, 2, 0, 2), (0, 2, 1, 2), (3, 4, 2, 4), (10, 1, 0, 1), (0, 1, 5, 1), (2, 3, 0, 1)],
)
def test_block_attention_torch_matches_brute_force(q_offset, q_stride, k_offset, k_stride):
    torch.manual_seed(1)
    q = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    k = torch.randn(2, 6, 2, 3, dtype=torch.float64)  # GQA: 4 heads on 2 kv heads
    v = torch.randn(2, 6, 2, 3, dtype=torch.float64)
    kw = dict(q_offset=q_offset, q_stride=q_stride, k_offset=k_offset, k_stride=k_stride)
    out, lse = block_attention_torch(q, k, v, **kw)
    ref_out, ref_lse = brute_block(q, k, v, **kw)
    assert lse.shape == (2, 4, 5) and out.shape == q.shape
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse))
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse[finite], ref_lse[finite], rtol=1e-12, atol=1e-12)


def test_empty_rows_and_lse_dtype():
    q = torch.randn(1, 3, 2, 4)
    k = torch.randn(1, 3, 2, 4)
    out, lse = block_attention_torch(q, k, k, q_offset=0, q_stride=1, k_offset=1, k_stride=1)
    assert lse.dtype == torch.float32
    assert torch.isneginf(lse[:, :, 0]).all() and torch.isfinite(lse[:, :, 1:]).all()
    assert torch.equal(out[:, 0], torch.zeros_like(out[:, 0]))
    assert not torch.isnan(out).any()
    out16, lse16 = block_attention_torch(q.bfloat16(), k.bfloat16(), k.bfloat16(), q_offset=0, q_stride=1, k_offset=0, k_stride=1)
    assert out16.dtype == torch.bfloat16 and lse16.dtype == torch.float32


def test_query_chunking_is_exact(monkeypatch):
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 37, 2, 4, dtype=torch.float64) for _ in range(3))
    kw = dict(q_offset=0, q_stride=1, k_offset=0, k_stride=1)
    ref = block_attention_torch(q, k, v, **kw)
    import lcprof.kernels.reference as reference  # the torch fallback's implementation

    monkeypatch.setattr(reference, "_CHUNK_SCORES", 2 * 37 * 5)  # chunks of 5 queries
    got = block_attention_torch(q, k, v, **kw)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-15)
    torch.testing.assert_close(got[1], ref[1], rtol=0, atol=1e-15)


def test_impl_dispatch(monkeypatch):
    q = torch.randn(1, 4, 2, 8)
    assert resolve_impl("auto", q)[0] == "torch"
    assert resolve_impl("torch", q) == ("torch", "requested")
    with pytest.raises(ValueError, match="expected one of auto, torch, kernel"):
        resolve_impl("triton", q)
    monkeypatch.setattr(block_mod, "kernel_status", lambda: (False, "no CUDA here"))
    with pytest.raises(RuntimeError, match="unavailable: no CUDA here"):
        block_attention(q, q, q, q_offset=0, q_stride=1, k_offset=0, k_stride=1, impl="kernel")


@pytest.mark.skipif(importlib.util.find_spec("lcprof.kernels.reference") is None, reason="kernels/reference.py not present")
def test_matches_colleague_reference():
    from lcprof.kernels.reference import block_attention_reference

    torch.manual_seed(3)
    q = torch.randn(1, 8, 4, 16)
    k = torch.randn(1, 8, 2, 16)
    v = torch.randn(1, 8, 2, 16)
    for kw in [dict(q_offset=1, q_stride=4, k_offset=2, k_stride=4), dict(q_offset=8, q_stride=1, k_offset=0, k_stride=1)]:
        out, lse = block_attention_torch(q, k, v, **kw)
        ref_out, ref_lse = block_attention_reference(q, k, v, **kw)
        torch.testing.assert_close(out, ref_out.to(out.dtype), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lse, ref_lse.to(lse.dtype), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- merge


def _split_inputs(seed=4, n=13, dtype=torch.float64):
    torch.manual_seed(seed)
    q = torch.randn(2, n, 4, 8, dtype=dtype)
    k = torch.randn(2, n, 2, 8, dtype=dtype)
    v = torch.randn(2, n, 2, 8, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize("split", [1, 5, 12])
def test_merge_halves_equals_union(split, full_attention):
    q, k, v = _split_inputs()
    a = block_attention_torch(q, k[:, :split], v[:, :split], q_offset=0, q_stride=1, k_offset=0, k_stride=1)
    b = block_attention_torch(q, k[:, split:], v[:, split:], q_offset=0, q_stride=1, k_offset=split, k_stride=1)
    out, lse = merge_attention(*a, *b)
    whole = block_attention_torch(q, k, v, q_offset=0, q_stride=1, k_offset=0, k_stride=1)
    torch.testing.assert_close(out, full_attention(q, k, v), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lse, whole[1], rtol=1e-12, atol=1e-12)


def test_merge_interleaved_key_sets(full_attention):
    """Disjoint but interleaved key sets (even / odd positions), as in the striped ring."""
    q, k, v = _split_inputs(n=12)
    parts = [
        block_attention_torch(q, k[:, r::3], v[:, r::3], q_offset=0, q_stride=1, k_offset=r, k_stride=3)
        for r in range(3)
    ]
    out, _ = merge_many(parts)
    torch.testing.assert_close(out, full_attention(q, k, v), rtol=1e-12, atol=1e-12)


def test_merge_commutative():
    q, k, v = _split_inputs(dtype=torch.float32)
    a = block_attention_torch(q, k[:, :6], v[:, :6], q_offset=0, q_stride=1, k_offset=0, k_stride=1)
    b = block_attention_torch(q, k[:, 6:], v[:, 6:], q_offset=0, q_stride=1, k_offset=6, k_stride=1)
    ab, ba = merge_attention(*a, *b), merge_attention(*b, *a)
    assert torch.equal(ab[0], ba[0]) and torch.equal(ab[1], ba[1])
    assert ab[0].dtype == torch.float32


def test_merge_neg_inf_sides():
    out = torch.randn(1, 3, 2, 4)
    lse = torch.randn(1, 2, 3)
    empty_out = torch.full_like(out, float("nan"))  # whatever an empty side holds must not leak
    empty_lse = torch.full_like(lse, float("-inf"))
    for merged in (merge_attention(out, lse, empty_out, empty_lse), merge_attention(empty_out, empty_lse, out, lse)):
        torch.testing.assert_close(merged[0], out, rtol=0, atol=0)
        torch.testing.assert_close(merged[1], lse, rtol=0, atol=0)
    both_out, both_lse = merge_attention(empty_out, empty_lse, empty_out.clone(), empty_lse.clone())
    assert torch.equal(both_out, torch.zeros_like(both_out))
    assert torch.isneginf(both_lse).all()
    # mixed: row 0 empty on side a only
    lse_a = lse.clone()
    lse_a[:, :, 0] = float("-inf")
    m_out, m_lse = merge_attention(out, lse_a, 2 * out, lse)
    assert not torch.isnan(m_out).any()
    torch.testing.assert_close(m_out[:, 0], 2 * out[:, 0])
    torch.testing.assert_close(m_lse[:, :, 0], lse[:, :, 0])


def test_merge_large_lse_is_stable():
    out_a, out_b = torch.ones(1, 1, 1, 2), 3 * torch.ones(1, 1, 1, 2)
    big = torch.full((1, 1, 1), 1e4)
    out, lse = merge_attention(out_a, big, out_b, big)  # exp(1e4) would overflow
    torch.testing.assert_close(out, 2 * torch.ones(1, 1, 1, 2))
    torch.testing.assert_close(lse, big + torch.log(torch.tensor(2.0)))
