"""The composed baseline on the CPU: ring steps through aten's fused flash op (its CPU kernel
returns the LSE too) against the float64 reference, and the full ring against brute force.

What is asserted: step_mask names exactly the fused-op mask that equals the positional mask
(brute force over offsets, strides and lengths, and a refusal otherwise); every (rank, source)
step of striped rings G = 1..8 and of contiguous rings matches ``block_attention_reference``
(out and LSE; empty rows exactly 0 / -inf); a whole ring through ``composed-flash`` equals full
causal attention (GQA, head dims 32..128, lengths not divisible by G, so padded); bf16 within
the tolerance rule of STYLE.md item 9 (at most 2x the error of torch's SDPA in bf16, + eps).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lcprof.kernels.reference import allowed_mask, block_attention_reference
from lcprof.ring.block import block_attention, resolve_impl
from lcprof.ring.composed import MASKS, composed_block_attention, op_status, step_mask
from lcprof.ring.simulated import ring_attention_simulated


def _local_mask(kind: str, n_q: int, n_k: int) -> torch.Tensor:
    """The fused-op mask, in local indices, written out independently of step_mask."""
    i = torch.arange(n_q)[:, None]
    j = torch.arange(n_k)[None, :]
    return {"causal": j <= i, "strict": j <= i - 1, "full": (i >= 0) & (j >= 0), "empty": (i < 0) & (j < 0)}[kind]


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_step_mask_equals_positional_mask_brute_force(n):
    refused = 0
    for q_off, k_off in itertools.product(range(-3, 12), repeat=2):
        for q_st, k_st in itertools.product((1, 2, 3, 4), repeat=2):
            pos_mask = allowed_mask(n, n, q_offset=q_off, q_stride=q_st, k_offset=k_off, k_stride=k_st)
            matches = [kind for kind in MASKS if torch.equal(_local_mask(kind, n, n), pos_mask)]
            try:
                kind = step_mask(n, n, q_offset=q_off, q_stride=q_st, k_offset=k_off, k_stride=k_st)
            except ValueError as exc:
                assert "cannot run this block mask" in str(exc)
                # a refusal is right when no fused mask equals it; with unequal strides a pattern
                # may coincide with one on a few rows, and refusing it is safe (never wrong)
                assert not matches or q_st != k_st, (q_off, q_st, k_off, k_st)
                refused += 1
                continue
            assert kind in matches, (q_off, q_st, k_off, k_st, kind, matches)
    if n > 1:
        assert refused > 0  # shifted diagonals exist in this range and must be refused


def test_step_mask_ring_steps_by_hand():
    # striped, G = 4, 6 tokens per rank: s <= r causal, s > r strict
    for r, s in itertools.product(range(4), repeat=2):
        want = "causal" if s <= r else "strict"
        assert step_mask(6, 6, q_offset=r, q_stride=4, k_offset=s, k_stride=4) == want
    # contiguous, 6 tokens per rank: diagonal causal, past full, future empty
    for r, s in itertools.product(range(4), repeat=2):
        want = "causal" if s == r else ("full" if s < r else "empty")
        assert step_mask(6, 6, q_offset=6 * r, q_stride=1, k_offset=6 * s, k_stride=1) == want
    assert step_mask(3, 7, q_offset=0, q_stride=1, k_offset=0, k_stride=1, causal=False) == "full"
    assert step_mask(0, 7, q_offset=0, q_stride=1, k_offset=0, k_stride=1) == "empty"
    with pytest.raises(ValueError, match="cannot run"):
        step_mask(6, 6, q_offset=2, q_stride=1, k_offset=0, k_stride=1)  # j <= i + 2: a shifted diagonal


def _inputs(batch, n, heads, kv_heads, head_dim, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n, heads, head_dim, generator=g).to(dtype)
    k = torch.randn(batch, n, kv_heads, head_dim, generator=g).to(dtype)
    v = torch.randn(batch, n, kv_heads, head_dim, generator=g).to(dtype)
    return q, k, v


def _assert_step(q, k, v, **pos):
    out, lse = composed_block_attention(q, k, v, op="flash", **pos)
    ref, ref_lse = block_attention_reference(q.double(), k.double(), v.double(), **pos)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == (q.shape[0], q.shape[2], q.shape[1])
    mask = allowed_mask(q.shape[1], k.shape[1], **{k_: v_ for k_, v_ in pos.items() if k_ != "causal"})
    empty = ~mask.any(dim=-1)  # (n_q,)
    assert torch.all(out[:, empty] == 0) and torch.all(lse[:, :, empty] == -math.inf)
    assert torch.isfinite(lse[:, :, ~empty]).all()
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-12 if q.dtype == torch.float64 else 2e-6)
    torch.testing.assert_close(lse.double(), ref_lse.double(), rtol=0, atol=1e-12 if q.dtype == torch.float64 else 2e-5)


@pytest.mark.parametrize("G", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("heads", [(4, 4), (6, 2), (8, 1)], ids=["mha", "gqa3", "mqa8"])
def test_every_striped_step_float64(G, heads):
    h, kvh = heads
    m = 13  # tokens per rank, not a multiple of anything
    for r, s in itertools.product(range(G), repeat=2):
        q, k, v = _inputs(2, m, h, kvh, 64, torch.float64, seed=100 * G + 10 * r + s)
        _assert_step(q, k, v, q_offset=r, q_stride=G, k_offset=s, k_stride=G, causal=True)


@pytest.mark.parametrize("head_dim", [32, 64, 96, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_contiguous_and_noncausal_steps(head_dim, dtype):
    m = 11
    for r, s in itertools.product(range(3), repeat=2):
        q, k, v = _inputs(1, m, 4, 2, head_dim, dtype, seed=r * 3 + s)
        _assert_step(q, k, v, q_offset=r * m, q_stride=1, k_offset=s * m, k_stride=1, causal=True)
    q, k, v = _inputs(1, m, 4, 2, head_dim, dtype, seed=99)
    _assert_step(q, k, v, q_offset=0, q_stride=1, k_offset=0, k_stride=1, causal=False)


def test_single_token_strict_step_is_empty():
    q, k, v = _inputs(1, 1, 2, 2, 64, torch.float32, seed=0)
    out, lse = composed_block_attention(q, k, v, q_offset=0, q_stride=2, k_offset=1, k_stride=2)
    assert torch.all(out == 0) and torch.all(lse == -math.inf)


@pytest.mark.parametrize("layout", ["striped", "contiguous"])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("n", [40, 77])
def test_ring_through_composed_flash_equals_full_attention(full_attention, layout, world, n):
    """n = 77 is divisible by none of the ring sizes but 1: the sequence is padded."""
    q, k, v = _inputs(2, n, 6, 2, 32, torch.float64, seed=n + world)
    out = ring_attention_simulated(q, k, v, world, layout, impl="composed-flash")
    ref = full_attention(q, k, v, causal=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("head_dim", [64, 96, 128])
@pytest.mark.parametrize("world", [2, 4, 8])
def test_ring_bf16_within_twice_sdpa_error(full_attention, head_dim, world):
    n, heads, kv_heads = 203, 8, 2
    q, k, v = _inputs(1, n, heads, kv_heads, head_dim, torch.bfloat16, seed=head_dim + world)
    ref = full_attention(q, k, v, causal=True)  # float64
    ring = ring_attention_simulated(q, k, v, world, "striped", impl="composed-flash")
    assert ring.dtype == torch.bfloat16
    ke, ve = k.repeat_interleave(heads // kv_heads, dim=2), v.repeat_interleave(heads // kv_heads, dim=2)
    sdpa = F.scaled_dot_product_attention(q.transpose(1, 2), ke.transpose(1, 2), ve.transpose(1, 2),
                                          is_causal=True).transpose(1, 2)  # bf16
    err_ring = (ring.double() - ref).abs().max().item()
    err_sdpa = (sdpa.double() - ref).abs().max().item()
    assert err_ring <= 2 * err_sdpa + 4e-4, (err_ring, err_sdpa)


def test_impls_resolve_and_refuse_on_cpu():
    q = torch.zeros(1, 4, 2, 64)
    assert resolve_impl("composed-flash", q)[0] == "composed-flash"
    for impl in ("composed-cudnn", "composed-efficient"):
        with pytest.raises(RuntimeError, match="runs on CUDA only"):
            resolve_impl(impl, q)
    ok, reason = op_status("flash", "cpu", torch.float32)
    assert ok, reason
    assert op_status("nope", "cpu", torch.float32)[0] is False


def test_block_attention_dispatches_to_composed():
    q, k, v = _inputs(1, 9, 4, 2, 64, torch.float64, seed=3)
    pos = dict(q_offset=0, q_stride=2, k_offset=1, k_stride=2)
    out, lse = block_attention(q, k, v, impl="composed-flash", **pos)
    ref, ref_lse = block_attention_reference(q, k, v, **pos)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    assert torch.all(lse[:, :, 0] == -math.inf)
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        block_attention(q, k[:, :, :1].expand(1, 9, 3, 64).contiguous(), v[:, :, :1].expand(1, 9, 3, 64).contiguous(),
                        impl="composed-flash", **pos)


def test_sweep_backend_on_cpu_matches_reference():
    from lcprof.measure import backends as B
    from lcprof.measure.backends import AttnMask

    b = B.get_backend("striped-ring-flash")
    ok, reason = b.probe("cpu", torch.float32)
    assert ok, reason
    ok, reason = B.get_backend("striped-ring-cudnn").probe("cpu", torch.float32)
    assert not ok and "CUDA" in reason
    q, k, v = _inputs(1, 50, 4, 2, 64, torch.float32, seed=7)
    out = b(q, k, v, AttnMask("global", 50, 50), 0.125, ranks=4)
    ref, _ = block_attention_reference(q.double(), k.double(), v.double(), softmax_scale=0.125)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-6)
