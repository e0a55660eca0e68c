"""``plan``: concurrency, displacement, TTFT/TPOT and recommendations, checked by hand or by definition."""

import math
import pytest

from lcprof.errors import LcprofError
from lcprof.plan import plan, prefill_s, resolve_rates
from lcprof.plan.compute import allreduce_s, chunked_prefill_s
from lcprof.spec import load_model

from plan_hand import (BF16, FP8, H100_BF16_FLOPS_PER_S, H100_HBM_BYTES_PER_S, H100_MEMORY_BYTES,
                       NVLINK4_BYTES_PER_S, llama_params, tiled_activation_bytes)


# 128k is beyond llama3-70b's 8k positions: planned anyway, with a warning
pytestmark = pytest.mark.filterwarnings("ignore:.*max_position_embeddings")


def _llama3_70b_tp8_budget(reserve_tokens):
    weights_total = BF16 * llama_params(8192, 28672, 128256, 80, 64, 8, 128)
    norms = 80 * 2 * 8192 + 8192
    # TP=8: everything split 8 ways except the replicated norms (8 KV heads -> exactly one per GPU)
    weights = round(weights_total / 8 + BF16 * norms * (1 - 1 / 8))
    act = math.ceil(tiled_activation_bytes(reserve_tokens, 8192, 64, 8, 128, 28672, tp=8))
    return H100_MEMORY_BYTES * 9 // 10 - weights - act, weights


@pytest.mark.parametrize("kv_dtype,elem", [("bf16", BF16), ("fp8", FP8)])
def test_llama3_70b_8xh100_tp8_by_hand(kv_dtype, elem):
    p = plan("llama3-70b", gpus=8, tp=8, long="128k", short="4k", kv_dtype=kv_dtype)
    r = p.record
    budget, weights = _llama3_70b_tp8_budget(131072)  # no chunking: the reserve is the whole long prefill
    assert r["weights_bytes_per_gpu"] == weights
    assert r["kv_budget_bytes_per_gpu"] == budget
    per_token = 80 * 1 * 256 * elem
    assert r["kv_bytes_per_token_per_gpu"] == per_token
    pool = budget // (16 * per_token)
    assert r["kv_pool_blocks"] == pool
    assert r["kv_blocks_long"] == 131072 // 16 and r["kv_blocks_short"] == 4096 // 16
    assert r["max_concurrent_short"] == pool // 256
    assert r["max_concurrent_long"] == pool // 8192
    assert r["displacement_kv"] == 32.0
    assert r["short_requests_lost_per_long"] == pool // 256 - (pool - 8192) // 256
    assert r["replicas"] == 1 and r["max_concurrent_short_deployment"] == r["max_concurrent_short"]
    # prefill is superlinear: a 32x longer request costs more than 32 short prefills
    assert r["displacement_prefill"] > 32
    assert r["ttft_short_behind_long_s"] == pytest.approx(r["prefill_long_s"] + r["prefill_short_s"])


def test_replicas_multiply_deployment_numbers():
    a = plan("llama3-8b", gpus=1, tp=1, long="32k", short="4k")
    b = plan("llama3-8b", gpus=4, tp=1, long="32k", short="4k")
    assert b.record["replicas"] == 4
    assert b.record["max_concurrent_short"] == a.record["max_concurrent_short"]
    assert b.record["max_concurrent_short_deployment"] == 4 * a.record["max_concurrent_short"]


def test_mha_llama2_7b_block_rounding_in_displacement():
    r = plan("llama2-7b", long="4k", short="1000").record
    assert r["kv_blocks_short"] == 63  # ceil(1000 / 16)
    assert r["displacement_kv"] == pytest.approx(256 / 63)
    weights = BF16 * llama_params(4096, 11008, 32000, 32, 32, 32, 128)
    act = tiled_activation_bytes(4096, 4096, 32, 32, 128, 11008)
    budget = H100_MEMORY_BYTES * 9 // 10 - weights - act
    pool = budget // (16 * 32 * 32 * 256 * BF16)
    assert r["kv_pool_blocks"] == pool and r["max_concurrent_short"] == pool // 63


def test_sliding_window_displacement_is_flat():
    r = plan("mistral-7b", long="32k", short="4k").record
    assert r["kv_blocks_long"] == r["kv_blocks_short"] == 256
    assert r["displacement_kv"] == 1.0
    assert r["max_concurrent_long"] == r["max_concurrent_short"]
    assert r["displacement_prefill"] > 8  # compute still grows with the prompt (W-banded attention + linear)


def test_mla_concurrency_by_hand():
    r = plan("deepseek-v2-lite", long="32k", short="2k").record
    assert r["kv_bytes_per_token_per_gpu"] == 27 * 576 * BF16
    assert r["kv_block_bytes_per_gpu"] == 16 * 27 * 576 * BF16
    assert r["kv_pool_blocks"] == r["kv_budget_bytes_per_gpu"] // (16 * 27 * 576 * BF16)
    assert r["max_concurrent_short"] == r["kv_pool_blocks"] // 128
    assert r["displacement_kv"] == 16.0


def test_gemma2_alternating_displacement():
    r = plan("gemma2-9b", long="32k", short="4k").record
    assert r["kv_groups"] == 2 and r["kv_layers_per_group"] == 21
    assert r["kv_blocks_long"] == 2048 + 256 and r["kv_blocks_short"] == 512
    assert r["displacement_kv"] == pytest.approx(2304 / 512)


def test_prefill_tp_split_and_allreduce_by_hand():
    spec = load_model("llama3-70b")
    rates = resolve_rates("h100-sxm")
    n = 4096
    # 80 layers x 2 all-reduces x ring (2 (T-1)/T) x n x hidden x 2 bytes / 450 GB/s
    ar = 80 * 2 * (2 * (7 / 8) * n * 8192 * BF16) / NVLINK4_BYTES_PER_S
    assert float(allreduce_s(spec, n, 8, NVLINK4_BYTES_PER_S)) == pytest.approx(ar)
    one = float(prefill_s(spec, rates, [n], tp=1)[0])
    assert float(prefill_s(spec, rates, [n], tp=8)[0]) == pytest.approx(one / 8 + ar)
    # the roofline is never faster than the linear layers' FLOPs at peak: 2 x non-embedding params x n
    params = llama_params(8192, 28672, 128256, 80, 64, 8, 128) - 128256 * 8192
    assert one >= 2 * params * n / H100_BF16_FLOPS_PER_S
    assert one < 1.5 * 2 * params * n / H100_BF16_FLOPS_PER_S + 0.01


def test_decode_step_is_weights_plus_kv_over_bandwidth():
    r = plan("llama3-70b", gpus=8, tp=8, long="128k", short="4k").record
    # one 4k request alone: memory-bound; read the weights once and its KV; plus two tiny all-reduces per layer
    ar = 80 * 2 * (2 * (7 / 8) * 1 * 8192 * BF16) / NVLINK4_BYTES_PER_S
    expected = (r["weights_bytes_per_gpu"] + 4096 * 80 * 256 * BF16) / H100_HBM_BYTES_PER_S + ar
    assert r["decode_step_short_s"] == pytest.approx(expected)
    assert r["decode_step_long_s"] > r["decode_step_short_s"]
    assert r["tpot_full_short_s"] > r["decode_step_short_s"]


def test_chunked_prefill_ttft_waits_one_chunk():
    p = plan("llama3-70b", gpus=8, tp=8, long="128k", short="4k", chunk="8k")
    r = p.record
    spec, rates = load_model("llama3-70b"), resolve_rates("h100-sxm")
    # the last chunk is the longest: 8192 new tokens attending a 120k prefix
    last = float(prefill_s(spec, rates, [8192], [131072 - 8192], tp=8)[0])
    assert r["chunk_max_s"] == pytest.approx(last)
    assert r["ttft_short_behind_long_chunked_s"] == pytest.approx(last + r["prefill_short_s"])
    assert r["ttft_short_behind_long_chunked_s"] < r["ttft_short_behind_long_s"]
    total, mx = chunked_prefill_s(spec, rates, 131072, 8192, tp=8)
    assert total == pytest.approx(r["prefill_long_chunked_s"]) and mx == pytest.approx(last)
    assert total >= r["prefill_long_s"] * 0.999  # chunks re-read the weights; never cheaper
    # the activation reserve shrinks to one chunk
    assert r["activation_reserve_tokens"] == 8192
    assert r["activation_reserve_bytes_per_gpu"] == math.ceil(tiled_activation_bytes(8192, 8192, 64, 8, 128, 28672, tp=8))


def test_ttft_recommendations_by_definition():
    p = plan("llama3-8b", long="64k", short="4k", ttft="1s", tpot="30ms", chunk="4k")
    r = p.record
    spec, rates = load_model("llama3-8b"), resolve_rates("h100-sxm")

    def t(n):
        return float(prefill_s(spec, rates, [n])[0])

    n_max = r["longest_n_meeting_ttft"]
    assert t(n_max) <= 1.0 < t(n_max + 1)
    l_max = r["longest_long_keeping_short_ttft"]
    assert t(l_max) + r["prefill_short_s"] <= 1.0 < t(l_max + 1) + r["prefill_short_s"]
    f = r["long_prefill_time_share_max"]
    room = 1.0 - r["chunk_max_s"]
    assert f == pytest.approx(1 - r["prefill_short_s"] / room)
    rr = r["long_request_share_max"]
    assert rr == pytest.approx((f / r["prefill_long_s"]) / (f / r["prefill_long_s"] + (1 - f) / r["prefill_short_s"]))
    assert r["long_kv_pool_share_max"] == pytest.approx(rr * 4096 / (rr * 4096 + (1 - rr) * 256))
    q = min(65536, n_max)
    assert r["kv_quota_bytes_per_long_request_per_gpu"] == math.ceil(q / 16) * r["kv_block_bytes_per_gpu"]
    b = r["max_decode_batch_short_tpot"]
    assert 0 < b <= r["max_concurrent_short"]
    assert r["tpot_met_full_pool"] == (b == r["max_concurrent_short"])


def test_mix_expected_blocks_by_hand():
    p = plan("deepseek-v2-lite", long="32k", mix="2k:0.8,8k:0.15,32k:0.05", ttft="2s")
    r = p.record
    assert r["short_n"] == 2048 and r["long_n"] == 32768
    expected = 0.8 * 128 + 0.15 * 512 + 0.05 * 2048  # 281.6 blocks
    assert r["mix_expected_kv_blocks_per_request"] == pytest.approx(expected)
    assert r["max_concurrent_mix"] == int(r["kv_pool_blocks"] // expected)
    assert r["mix_long_kv_pool_share"] == pytest.approx(0.05 * 2048 / expected)
    assert r["mix_long_request_share"] == pytest.approx(0.05)
    assert list(p.mix["n"]) == [2048, 8192, 32768]
    assert "mix_meets_ttft_share" in r


def test_prefix_is_shared():
    a = plan("llama3-8b", long="32k", short="4k").record
    b = plan("llama3-8b", long="32k", short="4k", prefix="1k").record
    assert b["shared_prefix_blocks"] == 64
    assert b["kv_blocks_short"] == 256 - 64
    assert b["max_concurrent_short"] > a["max_concurrent_short"]
    assert b["prefill_short_s"] < a["prefill_short_s"]  # only 3k new tokens to prefill


@pytest.mark.parametrize("kwargs,match", [
    (dict(model="llama3-70b", tp=3, long="128k", short="4k"), "TP=3 does not divide"),
    (dict(model="llama3-70b", tp=1, long="128k", short="4k"), r"does not fit the GPUs.*missing"),
    (dict(model="llama3-8b", long="2k", short="4k"), "shorter than --short"),
    (dict(model="llama3-8b", long="128k", short="4k", memory_utilization=0.2), "nothing left for KV"),
    (dict(model="llama3-8b", gpus=3, tp=2, long="8k", short="4k"), "not a multiple of --tp"),
    (dict(model="llama3-8b", mix="2k:0.5,8k:0.4"), "sum to 0.9"),
    (dict(model="llama3-8b", long="8k"), "give --long and --short"),
    (dict(model="llama3-8b", long="8k", short="4k", prefix="4k"), "--prefix"),
])
def test_bad_input_raises(kwargs, match):
    model = kwargs.pop("model")
    with pytest.raises(LcprofError, match=match):
        plan(model, **kwargs)


def test_moe_decode_reads_only_visitable_experts():
    from lcprof.plan.compute import decode_weight_read_bytes

    spec = load_model("deepseek-v2-lite")
    w = 10 ** 10
    # 26 MoE layers (layer 0 is dense), 64 routed experts, 6 per token, expert = 3 x 2048 x 1408 x 2 bytes
    expert = 3 * 2048 * 1408 * BF16
    for batch, untouched in ((1, 64 - 6), (4, 64 - 24), (10, 4), (11, 0), (500, 0)):
        assert float(decode_weight_read_bytes(spec, w, batch)) == w - 26 * untouched * expert
    dense = load_model("llama3-8b")
    assert float(decode_weight_read_bytes(dense, w, 1)) == w
