"""lcprof/kernels/reference.py against a brute-force float64 loop (CPU, runs in CI)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from lcprof.kernels import reference  # noqa: E402
from lcprof.kernels.reference import allowed_mask, block_attention_reference  # noqa: E402


def brute_force(q, k, v, *, q_offset, q_stride, k_offset, k_stride, causal, softmax_scale=None):
    """One (batch, head, query) at a time, float64, straight from the definition."""
    batch, n_q, heads, head_dim = q.shape
    n_k, kv_heads = k.shape[1], k.shape[2]
    group = heads // kv_heads
    scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
    out = torch.zeros(batch, n_q, heads, head_dim, dtype=torch.float64)
    lse = torch.full((batch, heads, n_q), -math.inf, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            hk = h // group
            for i in range(n_q):
                scores, values = [], []
                for j in range(n_k):
                    if causal and k_offset + j * k_stride > q_offset + i * q_stride:
                        continue
                    scores.append(scale * float(torch.dot(q[b, i, h].double(), k[b, j, hk].double())))
                    values.append(v[b, j, hk].double())
                if not scores:
                    continue  # empty row: out 0, lse -inf
                m = max(scores)
                w = [math.exp(s - m) for s in scores]
                z = sum(w)
                out[b, i, h] = sum(wi * vi for wi, vi in zip(w, values)) / z
                lse[b, h, i] = m + math.log(z)
    return out, lse


def _inputs(batch, n_q, n_k, heads, kv_heads, head_dim, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n_q, heads, head_dim, generator=g, dtype=torch.float64).to(dtype)
    k = torch.randn(batch, n_k, kv_heads, head_dim, generator=g, dtype=torch.float64).to(dtype)
    v = torch.randn(batch, n_k, kv_heads, head_dim, generator=g, dtype=torch.float64).to(dtype)
    return q, k, v


CASES = [
    # name, (batch, n_q, n_k, heads, kv_heads, head_dim), layout kwargs
    ("plain_causal", (1, 7, 7, 2, 2, 8), dict(q_offset=0, q_stride=1, k_offset=0, k_stride=1, causal=True)),
    ("gqa_causal", (2, 6, 6, 4, 2, 8), dict(q_offset=0, q_stride=1, k_offset=0, k_stride=1, causal=True)),
    ("non_causal_nq_ne_nk", (1, 5, 9, 4, 1, 8), dict(q_offset=0, q_stride=1, k_offset=0, k_stride=1, causal=False)),
    ("striped_r1_s0", (1, 6, 6, 2, 1, 8), dict(q_offset=1, q_stride=4, k_offset=0, k_stride=4, causal=True)),
    # r=0, s=1: query 0 (position 0) sees no key (positions 1, 5, ...): empty row.
    ("striped_r0_s1_empty_row", (1, 6, 6, 2, 2, 8), dict(q_offset=0, q_stride=4, k_offset=1, k_stride=4, causal=True)),
    ("striped_r3_s2_gqa", (1, 5, 5, 6, 3, 8), dict(q_offset=3, q_stride=4, k_offset=2, k_stride=4, causal=True)),
    # contiguous ring, L=5: s > r is fully masked, s < r is unmasked.
    ("contiguous_all_empty", (1, 5, 5, 2, 2, 8), dict(q_offset=0, q_stride=1, k_offset=5, k_stride=1, causal=True)),
    ("contiguous_full", (1, 5, 5, 2, 2, 8), dict(q_offset=10, q_stride=1, k_offset=5, k_stride=1, causal=True)),
    # different strides on the two sides, and a negative numerator in the floor division.
    ("mixed_strides", (1, 7, 5, 2, 1, 8), dict(q_offset=-3, q_stride=3, k_offset=0, k_stride=2, causal=True)),
]


@pytest.mark.parametrize("name,shape,layout", CASES, ids=[c[0] for c in CASES])
def test_reference_matches_brute_force(name, shape, layout):
    q, k, v = _inputs(*shape)
    out, lse = block_attention_reference(q, k, v, **layout)
    bf_out, bf_lse = brute_force(q, k, v, **layout)
    assert out.shape == q.shape and out.dtype == torch.float64
    assert lse.shape == (shape[0], shape[3], shape[1]) and lse.dtype == torch.float64
    torch.testing.assert_close(out, bf_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(lse, bf_lse, rtol=1e-10, atol=1e-12)  # -inf == -inf where rows are empty


def test_empty_rows_are_zero_and_minus_inf():
    q, k, v = _inputs(1, 6, 6, 2, 2, 8)
    out, lse = block_attention_reference(q, k, v, q_offset=0, q_stride=4, k_offset=1, k_stride=4, causal=True)
    assert torch.all(out[:, 0] == 0)
    assert torch.all(lse[:, :, 0] == -math.inf)
    assert torch.isfinite(lse[:, :, 1:]).all()
    assert not torch.isnan(out).any()


def test_float32_inputs_compute_in_float32_and_keep_dtype():
    q, k, v = _inputs(1, 9, 9, 4, 2, 16, dtype=torch.float32)
    out, lse = block_attention_reference(q, k, v, q_offset=2, q_stride=3, k_offset=1, k_stride=3, causal=True)
    assert out.dtype == torch.float32 and lse.dtype == torch.float32
    bf_out, bf_lse = brute_force(q, k, v, q_offset=2, q_stride=3, k_offset=1, k_stride=3, causal=True)
    torch.testing.assert_close(out.double(), bf_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse.double(), bf_lse, rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_return_bfloat16_out_and_float32_lse():
    q, k, v = _inputs(1, 4, 4, 2, 2, 8, dtype=torch.bfloat16)
    out, lse = block_attention_reference(q, k, v)
    assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32


def test_chunking_gives_the_same_answer(monkeypatch):
    q, k, v = _inputs(2, 37, 29, 4, 2, 8)
    layout = dict(q_offset=1, q_stride=2, k_offset=0, k_stride=2, causal=True)
    whole = block_attention_reference(q, k, v, **layout)
    monkeypatch.setattr(reference, "_CHUNK_SCORES", 2 * 4 * 29 * 3)  # 3 query rows per chunk
    chunked = block_attention_reference(q, k, v, **layout)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-12, atol=1e-12)


def test_custom_scale_and_zero_length_keys():
    q, k, v = _inputs(1, 4, 6, 2, 1, 8)
    out, lse = block_attention_reference(q, k, v, causal=False, softmax_scale=0.3)
    bf_out, bf_lse = brute_force(q, k, v, q_offset=0, q_stride=1, k_offset=0, k_stride=1, causal=False,
                                 softmax_scale=0.3)
    torch.testing.assert_close(out, bf_out)
    torch.testing.assert_close(lse, bf_lse)
    out0, lse0 = block_attention_reference(q, k[:, :0], v[:, :0])
    assert torch.all(out0 == 0) and torch.all(lse0 == -math.inf)


def test_striped_masks_partition_the_causal_mask():
    """The G*G striped blocks tile the causal mask of the global sequence exactly."""
    G, L = 4, 5
    n = G * L
    full = allowed_mask(n, n)  # (n, n) plain causal
    for r in range(G):
        for s in range(G):
            block = allowed_mask(L, L, q_offset=r, q_stride=G, k_offset=s, k_stride=G)
            assert torch.equal(block, full[r::G, s::G])


def test_merging_two_halves_matches_the_whole():
    """lse lets ring steps merge: attention over [k_a; k_b] from the two halves."""
    q, k, v = _inputs(1, 8, 8, 2, 2, 8)
    whole_out, whole_lse = block_attention_reference(q, k, v, causal=True)
    a_out, a_lse = block_attention_reference(q, k[:, :4], v[:, :4], causal=True)
    b_out, b_lse = block_attention_reference(q, k[:, 4:], v[:, 4:], k_offset=4, causal=True)
    lse = torch.logaddexp(a_lse, b_lse)  # (batch, heads, n_q)
    wa = torch.exp(a_lse - lse).nan_to_num(0.0).transpose(1, 2).unsqueeze(-1)  # (batch, n_q, heads, 1)
    wb = torch.exp(b_lse - lse).nan_to_num(0.0).transpose(1, 2).unsqueeze(-1)
    torch.testing.assert_close(wa * a_out + wb * b_out, whole_out)
    torch.testing.assert_close(lse, whole_lse)


def test_bad_arguments_raise():
    q, k, v = _inputs(1, 4, 4, 3, 2, 8)
    with pytest.raises(ValueError):
        block_attention_reference(q, k, v)  # 3 heads, 2 kv heads
    q, k, v = _inputs(1, 4, 4, 2, 2, 8)
    with pytest.raises(ValueError):
        block_attention_reference(q, k, v, q_stride=0)
