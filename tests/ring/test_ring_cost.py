"""The analytic ring model against brute-force enumeration over token positions."""

import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from lcprof.cost.ring import (
    executed_pair_counts,
    load_imbalance,
    overlap_min_tokens_per_device,
    pair_counts,
    ring_memory_bytes,
    ring_step_model,
)

LAYOUTS = ["striped", "contiguous"]


def brute_pair_counts(n, world, layout):
    """Explicit double loop over global positions: which rank owns each token, and at
    which step the key's block reaches the query's rank."""
    m = -(-n // world)

    def owner(p):
        return p % world if layout == "striped" else p // m

    pairs = np.zeros((world, world), dtype=np.int64)
    for pq in range(n):
        for pk in range(n):
            if pk <= pq:  # causal
                r, s = owner(pq), owner(pk)
                pairs[(r - s) % world, r] += 1
    return pairs


def brute_executed(n, world, layout, tile):
    """Tiles of each local block with at least one allowed pair (pad tokens included)."""
    m = -(-n // world)

    def pos(rank, i):
        return rank + i * world if layout == "striped" else rank * m + i

    out = np.zeros((world, world), dtype=np.int64)
    for t in range(world):
        for r in range(world):
            s = (r - t) % world
            for a in range(0, m, tile):
                for b in range(0, m, tile):
                    rows, cols = range(a, min(a + tile, m)), range(b, min(b + tile, m))
                    if any(pos(s, j) <= pos(r, i) for i in rows for j in cols):
                        out[t, r] += len(rows) * len(cols)
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("world", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("n", [1, 2, 7, 16, 23, 40])
def test_pair_counts_equal_brute_force(layout, world, n):
    got = pair_counts(n, world, layout)
    assert got.shape == (world, world) and got.dtype == np.int64
    assert np.array_equal(got, brute_pair_counts(n, world, layout))
    assert got.sum() == n * (n + 1) // 2


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("world,n,tile", [(2, 16, 2), (3, 29, 4), (4, 40, 3), (8, 64, 4), (2, 9, 128), (1, 10, 3)])
def test_executed_pairs_equal_brute_force(layout, world, n, tile):
    got = executed_pair_counts(n, world, layout, tile)
    assert np.array_equal(got, brute_executed(n, world, layout, tile))
    assert (got >= pair_counts(n, world, layout)).all()


@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("m", [1, 3, 16, 1000])
def test_imbalance_exact_values(world, m):
    n = world * m
    contiguous = load_imbalance(n, world, "contiguous").imbalance
    striped = load_imbalance(n, world, "striped").imbalance
    # contiguous: sum_t max_r = m(m+1)/2 + (G-1) m^2 over (n(n+1)/2)/G
    assert contiguous == pytest.approx(float(Fraction(2 * world * m - m + 1, world * m + 1)), rel=1e-12)
    # striped: every step's slowest rank has m(m+1)/2 pairs
    assert striped == pytest.approx(float(Fraction(world * (m + 1), world * m + 1)), rel=1e-12)


def test_imbalance_one_million_tokens_eight_devices():
    n, world = 1 << 20, 8
    c = load_imbalance(n, world, "contiguous")
    s = load_imbalance(n, world, "striped")
    assert c.imbalance == pytest.approx(1966081 / 1048577, rel=1e-12)  # 1.87499917 ~ (2G-1)/G = 1.875
    assert s.imbalance == pytest.approx(1048584 / 1048577, rel=1e-12)  # 1.0000067
    assert c.total_pairs == s.total_pairs == n * (n + 1) // 2
    assert c.step_imbalance[-1] == pytest.approx(world)  # last step: one rank has a full block, the rest nothing
    assert s.step_imbalance.max() < 1.0001


@pytest.mark.parametrize("layout", LAYOUTS)
def test_imbalance_records_and_brute(layout):
    li = load_imbalance(23, 4, layout)
    brute = brute_pair_counts(23, 4, layout)
    assert li.imbalance == pytest.approx(brute.max(axis=1).sum() / (brute.sum() / 4), rel=1e-15)
    rec = li.records()
    assert len(rec) == 4 and {"step", "max_pairs", "mean_pairs", "step_imbalance"} <= rec[0].keys()


def test_ring_step_model_hand_computed():
    """n=8, G=2 contiguous, heads=2, kv_heads=1, head_dim=4, 2-byte dtype, 1000 FLOP/s, 100 B/s, tile 2.

    m = 4 tokens per device. Pairs (steps x ranks): step 0 diagonal 10, 10; step 1 rank 0 nothing,
    rank 1 a full 4x4 block = 16. Useful FLOPs = 4*d*h*pairs = 32*pairs -> [320, 512].
    Executed, 2x2 tiles: diagonal block runs 3 of 4 tiles = 12 pairs -> 384; full block 16 -> 512.
    Compute [0.384, 0.512] s. K+V block = 2*4*1*4*2 = 64 bytes -> 0.64 s at step 0, none at step 1.
    Exposed [0.256, 0]; step [0.64, 0.512]; total 1.152 s.
    Overlap: L >= kv_h*bytes*peak/(2*h*bw) = 1*2*1000/(2*2*100) = 5 tokens
    (check: 4*2*4*25/1000 = 0.8 s compute = 2*5*1*4*2/100 = 0.8 s transfer).
    Memory: q 4*2*4*2 = 64, k+v 64, out 64, lse 2*4*4 = 32, two K/V buffers 128 -> 352 bytes.
    """
    model = ring_step_model(8, 2, 2, 1, 4, 2, 1000.0, 100.0, "contiguous", tile=2)
    assert model.tokens_per_device == 4 and model.pad_tokens == 0
    assert model.useful_flops.tolist() == [320, 512]
    assert model.executed_flops.tolist() == [384, 512]
    np.testing.assert_allclose(model.compute_time_s, [0.384, 0.512])
    np.testing.assert_allclose(model.useful_compute_time_s, [0.320, 0.512])
    assert model.comm_bytes.tolist() == [64, 0]
    np.testing.assert_allclose(model.comm_time_s, [0.64, 0.0])
    np.testing.assert_allclose(model.exposed_comm_time_s, [0.256, 0.0])
    np.testing.assert_allclose(model.step_time_s, [0.64, 0.512])
    assert model.total_time_s == pytest.approx(1.152)
    assert model.total_exposed_comm_time_s == pytest.approx(0.256)
    assert not model.comm_hidden
    assert model.overlap_min_tokens_per_device == 5
    assert model.overlap_min_tokens_per_device_layout == 5
    assert model.overlap_min_n == 10
    assert model.memory_bytes_per_device == 352
    assert model.memory_breakdown_bytes == {
        "q_bytes": 64, "kv_bytes": 64, "out_bytes": 64, "lse_bytes": 32, "kv_buffers_bytes": 128,
    }
    rec = model.records()
    assert len(rec) == 2 and rec[1]["step_time_s"] == pytest.approx(0.512)
    assert all(k.endswith(("_s", "_flops", "_bytes")) or k in ("n", "world", "layout", "batch", "heads", "kv_heads",
               "head_dim", "v_head_dim", "tokens_per_device", "step") for k in rec[0])
    # striped, same shape: every step's slowest rank has 10 pairs; executed 12 per step
    striped = ring_step_model(8, 2, 2, 1, 4, 2, 1000.0, 100.0, "striped", tile=2)
    assert striped.useful_flops.tolist() == [320, 320]
    assert striped.executed_flops.tolist() == [384, 384]
    assert striped.overlap_min_tokens_per_device_layout == 10  # half blocks need twice the tokens


def test_overlap_condition_h100_like():
    # 32 heads, 8 kv heads, bf16, 989e12 FLOP/s, 450e9 B/s: L >= 8*2*989e12 / (2*32*450e9)
    expected = 8 * 2 * 989e12 / (2 * 32 * 450e9)
    assert overlap_min_tokens_per_device(32, 8, 2, 989e12, 450e9) == pytest.approx(expected)
    model = ring_step_model(1 << 20, 8, 32, 8, 128, 2, 989e12, 450e9, "striped")
    assert model.overlap_min_tokens_per_device == math.ceil(expected)
    assert model.comm_hidden  # 131072 tokens per device is far above ~550
    assert ring_memory_bytes(1 << 20, 8, 32, 8, 128, 2)["total_bytes"] == model.memory_bytes_per_device


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown ring layout"):
        pair_counts(8, 2, "zigzag")
    with pytest.raises(ValueError, match="positive integer"):
        pair_counts(0, 2, "striped")
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        ring_step_model(8, 2, 3, 2, 4, 2, 1.0, 1.0, "striped")


def test_cost_module_does_not_import_torch():
    code = "import sys, lcprof.cost.ring; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
