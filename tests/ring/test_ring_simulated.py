import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lcprof.cost.ring import pair_counts
from lcprof.ring.simulated import ring_attention_simulated

LAYOUTS = ["striped", "contiguous"]
WORLDS = [1, 2, 3, 4, 8]


def _inputs(n, heads=4, kv_heads=2, head_dim=8, batch=2, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n, heads, head_dim, generator=gen, dtype=dtype)
    k = torch.randn(batch, n, kv_heads, head_dim, generator=gen, dtype=dtype)
    v = torch.randn(batch, n, kv_heads, head_dim, generator=gen, dtype=dtype)
    return q, k, v


def test_reference_agrees_with_sdpa(full_attention):
    q, k, v = _inputs(24, heads=4, kv_heads=4)
    sdpa = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
    torch.testing.assert_close(full_attention(q, k, v), sdpa.transpose(1, 2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("world", WORLDS)
def test_ring_equals_full_causal_fp64(layout, world, full_attention):
    q, k, v = _inputs(32)
    out = ring_attention_simulated(q, k, v, world, layout, impl="torch")
    assert out.shape == q.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, full_attention(q, k, v), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("world", WORLDS)
def test_ring_equals_full_causal_fp32(layout, world, full_attention):
    q, k, v = _inputs(40, dtype=torch.float32)
    out = ring_attention_simulated(q, k, v, world, layout)
    assert out.dtype == torch.float32
    err = (out.double() - full_attention(q, k, v)).abs().max().item()
    assert err < 1e-5


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("world,n", [(2, 31), (3, 29), (4, 29), (8, 29), (8, 3)])
def test_ring_pads_indivisible_length(layout, world, n, full_attention):
    q, k, v = _inputs(n)
    out = ring_attention_simulated(q, k, v, world, layout)
    assert out.shape == q.shape
    torch.testing.assert_close(out, full_attention(q, k, v), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ring_rejects_indivisible_length_without_padding(layout):
    q, k, v = _inputs(30)
    with pytest.raises(ValueError, match="not divisible by world size 4"):
        ring_attention_simulated(q, k, v, 4, layout, pad=False)


def test_non_causal_ring(full_attention):
    q, k, v = _inputs(24)
    for layout in LAYOUTS:
        out = ring_attention_simulated(q, k, v, 4, layout, causal=False)
        torch.testing.assert_close(out, full_attention(q, k, v, causal=False), rtol=1e-11, atol=1e-12)
    with pytest.raises(ValueError, match="would attend pad keys"):
        ring_attention_simulated(*_inputs(23), 4, "striped", causal=False)


@pytest.mark.parametrize("heads,kv_heads", [(8, 1), (8, 2), (6, 3), (4, 4)])
def test_ring_gqa(heads, kv_heads, full_attention):
    q, k, v = _inputs(24, heads=heads, kv_heads=kv_heads)
    for layout in LAYOUTS:
        out = ring_attention_simulated(q, k, v, 4, layout)
        torch.testing.assert_close(out, full_attention(q, k, v), rtol=1e-11, atol=1e-12)


def test_softmax_scale(full_attention):
    q, k, v = _inputs(16)
    out = ring_attention_simulated(q, k, v, 4, "striped", softmax_scale=0.3)
    torch.testing.assert_close(out, full_attention(q, k, v, softmax_scale=0.3), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("world,n", [(4, 32), (3, 29), (8, 29)])
def test_step_stats_match_cost_model(layout, world, n):
    q, k, v = _inputs(n, batch=1)
    _, stats = ring_attention_simulated(q, k, v, world, layout, return_step_times=True)
    assert stats.impl == "torch"
    assert stats.step_time_s.shape == (world, world)
    assert np.array_equal(stats.pair_counts, pair_counts(n, world, layout))
    assert (stats.step_time_s[~stats.skipped] > 0).all()
    assert (stats.step_time_s[stats.skipped] == 0).all()
    src = (np.arange(world)[None, :] - np.arange(world)[:, None]) % world  # (steps, ranks)
    if layout == "contiguous":  # "future" blocks are skipped
        assert np.array_equal(stats.skipped, src > np.arange(world)[None, :])
    else:  # striped: every block holds some allowed pair
        assert not stats.skipped.any()
