"""`lcprof ring` sizes MLA's K and V with their own head dims (issue 13).

DeepSeek-V3's config (lcprof/data/models/deepseek-v3.json): 128 attention heads,
qk_nope_head_dim 128 + qk_rope_head_dim 64 -> q/k head dim 192, v_head_dim 128. The ring runs
MLA in its naive form: K and V decompressed per query head, so kv_heads = heads = 128.

Per allowed (query, key) pair and head: q.k is 192 multiply-adds, p.v is 128, 2 FLOPs each:
2 * 192 + 2 * 128 = 384 + 256 = 640 FLOPs (sizing V like K, the old bug, gave 4 * 192 = 768).
"""

import json

import pytest
from click.testing import CliRunner

from lcprof.cli import main
from lcprof.cost.ring import ring_memory_bytes, ring_step_model

HEADS = 128
QK_DIM = 128 + 64  # qk_nope_head_dim + qk_rope_head_dim
V_DIM = 128
N, G = 65536, 8
M = N // G  # 8192 tokens per device


def _ring(*extra):
    res = CliRunner().invoke(main, ["ring", "--model", "deepseek-v3", "--n", "64k", "--gpus", str(G),
                                    "--format", "json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_flops_per_pair_per_head_is_640():
    flops_per_pair = 2 * QK_DIM + 2 * V_DIM
    assert flops_per_pair == 640
    for rec in _ring():
        assert rec["section"] == "summary" and rec["flops_per_pair_per_head"] == 640


def test_step_flops_bytes_and_memory_by_hand():
    steps = [r for r in _ring("--steps") if r["section"] == "steps"]
    assert len(steps) == 2 * G
    for rec in steps:
        assert (rec["heads"], rec["kv_heads"], rec["head_dim"], rec["v_head_dim"]) == (HEADS, HEADS, QK_DIM, V_DIM)
    # step 0 is every rank's own block in both layouts: m(m+1)/2 pairs on the slowest rank
    diag_pairs = M * (M + 1) // 2  # 33,558,528
    for rec in steps:
        if rec["step"] == 0:
            assert rec["useful_flops"] == 640 * HEADS * diag_pairs == 2_749_114_613_760
    # K block 8192 x 128 heads x 192 dims + V block 8192 x 128 x 128, bf16 (2 bytes), steps 0..G-2
    kv_block_bytes = M * HEADS * QK_DIM * 2 + M * HEADS * V_DIM * 2
    assert kv_block_bytes == 402_653_184 + 268_435_456
    for rec in steps:
        assert rec["comm_bytes"] == (kv_block_bytes if rec["step"] < G - 1 else 0)

    summary = {r["layout"]: r for r in _ring()}
    q_bytes = M * HEADS * QK_DIM * 2  # 402,653,184
    out_bytes = M * HEADS * V_DIM * 2  # 268,435,456: the output has v's head dim
    lse_bytes = HEADS * M * 4
    for rec in summary.values():
        assert rec["memory_q_bytes"] == q_bytes == 402_653_184
        assert rec["memory_kv_bytes"] == kv_block_bytes
        assert rec["memory_out_bytes"] == out_bytes == 268_435_456
        assert rec["memory_lse_bytes"] == lse_bytes
        assert rec["memory_kv_buffers_bytes"] == 2 * kv_block_bytes
        assert rec["memory_bytes_per_device"] == q_bytes + 3 * kv_block_bytes + out_bytes + lse_bytes
        # comm: G-1 transfers of one K+V block over NVLink4 at 450e9 B/s
        assert rec["total_comm_time_s"] == pytest.approx((G - 1) * kv_block_bytes / 450e9, rel=1e-12)


def test_model_with_distinct_v_dim_by_hand():
    """n=8, G=2 contiguous, heads 2, kv_heads 1, q/k dim 4, v dim 2, 2-byte dtype, tile 2.

    Pairs per step (slowest rank): 10 (diagonal), 16 (rank 1's full block). Per pair and head
    2*4 + 2*2 = 12 FLOPs, x 2 heads = 24: useful [240, 384]. Executed (2x2 tiles): 12 and 16
    pairs -> [288, 384]. K+V block: 4 tokens x 1 kv head x (4 + 2) dims x 2 bytes = 48 bytes.
    Memory: q 4*2*4*2 = 64, kv 48, out 4*2*2*2 = 32, lse 2*4*4 = 32, buffers 96 -> 272 bytes.
    """
    model = ring_step_model(8, 2, 2, 1, 4, 2, 1000.0, 100.0, "contiguous", tile=2, v_head_dim=2)
    assert model.useful_flops.tolist() == [240, 384]
    assert model.executed_flops.tolist() == [288, 384]
    assert model.comm_bytes.tolist() == [48, 0]
    assert model.memory_breakdown_bytes == {
        "q_bytes": 64, "kv_bytes": 48, "out_bytes": 32, "lse_bytes": 32, "kv_buffers_bytes": 96,
    }
    assert model.memory_bytes_per_device == 272
    assert ring_memory_bytes(8, 2, 2, 1, 4, 2, v_head_dim=2)["total_bytes"] == 272
    assert model.summary()["flops_per_pair_per_head"] == 12
    # the overlap threshold does not depend on the head dims: 1*2*1000/(2*2*100) = 5 tokens
    assert model.overlap_min_tokens_per_device == 5


def test_measure_refuses_distinct_v_dim_in_one_line():
    res = CliRunner().invoke(main, ["ring", "--model", "deepseek-v3", "-n", "256", "--measure"])
    assert res.exit_code == 2
    assert "q/k 192 and v 128" in res.output
