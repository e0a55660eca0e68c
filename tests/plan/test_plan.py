"""``plan``: the engines' memory, concurrency, displacement, TTFT/TPOT and recommendations -- by hand."""

import math

import pytest

from lcprof.errors import LcprofError
from lcprof.plan import comm_s, plan
from lcprof.plan.compute import pipelined_s
from lcprof.plan.parallel import Parallel
from lcprof.spec import load_model

from support.plan_hand import (BF16, DSV3, FP8, GIB, H100_BF16_FLOPS_PER_S, H100_FP8_FLOPS_PER_S, H100_HBM_BYTES_PER_S,
                       H100_MEMORY_BYTES, H100_REPORTED_BYTES, H200_REPORTED_BYTES, MIB, NVLINK4_BYTES_PER_S,
                       causal_tiled_pairs, dsv3_weights_fp8, llama_params, tiled_activation_bytes,
                       vllm_dense_mlp_bytes_per_token, vllm_sampler_bytes)

pytestmark = pytest.mark.filterwarnings("ignore:.*max_position_embeddings")

NON_TORCH = 512 * MIB  # the planner's stated estimate when no log is given


def _llama70b_tp8_weights():
    total = llama_params(8192, 28672, 128256, 80, 64, 8, 128)
    norms = 80 * 2 * 8192 + 8192
    # TP 8: everything split 8 ways but the replicated norms (8 KV heads: exactly one per GPU); vLLM adds the
    # RoPE cache of 131072 positions x 128 dims (bf16)
    return BF16 * ((total - norms) // 8 + norms) + 131072 * 128 * BF16


@pytest.mark.parametrize("kv_dtype,elem", [("bf16", BF16), ("fp8", FP8)])
def test_llama31_70b_8xh100_tp8_vllm_by_hand(kv_dtype, elem):
    r = plan("llama3.1-70b", gpus=8, tp=8, long="128k", short="4k", kv_dtype=kv_dtype).record
    w = _llama70b_tp8_weights()
    assert r["weights_bytes_per_gpu"] == w
    # the profile run: 8192 tokens (vLLM's default on an 80 GB H100) and the sampler on 1024 rows
    forward = 8192 * vllm_dense_mlp_bytes_per_token(8192, 28672, tp=8)
    sampler = vllm_sampler_bytes(8192, 1024, 8192, 128256)
    assert sampler > forward
    assert r["activation_bytes_per_gpu"] == sampler
    budget = math.trunc(H100_REPORTED_BYTES * 0.92 - (w + sampler + NON_TORCH))
    assert r["kv_budget_bytes_per_gpu"] == budget
    per_token = 80 * 1 * 256 * elem
    assert r["kv_bytes_per_token_per_gpu"] == per_token
    blocks = budget // (16 * per_token)
    assert r["kv_pool_blocks"] == blocks
    assert r["kv_cache_tokens"] == blocks * 16
    assert r["max_concurrency_at_max_model_len"] == blocks / (131072 // 16)
    assert r["kv_blocks_long"] == 131072 // 16 and r["kv_blocks_short"] == 4096 // 16
    assert r["max_concurrent_short"] == min(blocks // 256, 1024)
    assert r["max_concurrent_long"] == blocks // 8192
    assert r["displacement_kv"] == 32.0
    assert r["short_requests_lost_per_long"] == min(blocks // 256, 1024) - min((blocks - 8192) // 256, 1023)
    assert r["replicas"] == 1 and r["max_concurrent_short_deployment"] == r["max_concurrent_short"]


def test_engine_none_keeps_lcprofs_own_accounting():
    """usable = 0.9 x 80 GiB; weights without engine buffers; the unfused activation reserve of the
    whole long prefill when unchunked (what the planner did before engines)."""
    r = plan("llama3.1-70b", engine="none", gpus=8, tp=8, long="128k", short="4k").record
    total = llama_params(8192, 28672, 128256, 80, 64, 8, 128)
    norms = 80 * 2 * 8192 + 8192
    w = BF16 * ((total - norms) // 8 + norms)
    act = math.ceil(tiled_activation_bytes(131072, 8192, 64, 8, 128, 28672, tp=8))
    assert r["weights_bytes_per_gpu"] == w and r["activation_bytes_per_gpu"] == act
    assert r["kv_budget_bytes_per_gpu"] == H100_MEMORY_BYTES * 9 // 10 - w - act
    assert r["kv_pool_blocks"] == r["kv_budget_bytes_per_gpu"] // (16 * 40960)
    assert r["max_num_seqs"] is None and r["max_concurrent_short"] == r["kv_pool_blocks"] // 256
    c = plan("llama3.1-70b", engine="none", gpus=8, tp=8, long="128k", short="4k", chunk="8k").record
    assert c["activation_bytes_per_gpu"] == math.ceil(tiled_activation_bytes(8192, 8192, 64, 8, 128, 28672, tp=8))


def test_chunked_by_default_unchunked_on_request():
    """llama3.1-8b at 128k on an H200: vLLM chunks at 8192 tokens and profiles the sampler (1.77 GiB);
    unchunked it profiles 131072 tokens of the MLP step (13.5 GiB) and holds fewer KV tokens."""
    a = plan("llama3.1-8b", gpu="h200", long="128k", short="4k").record
    b = plan("llama3.1-8b", gpu="h200", long="128k", short="4k", chunk=0).record
    assert a["chunked"] and not b["chunked"]
    assert (a["max_num_batched_tokens"], b["max_num_batched_tokens"]) == (8192, 131072)
    assert a["activation_bytes_per_gpu"] == vllm_sampler_bytes(8192, 1024, 4096, 128256)
    assert b["activation_bytes_per_gpu"] == 131072 * vllm_dense_mlp_bytes_per_token(4096, 14336)
    assert round(b["activation_bytes_per_gpu"] / GIB, 2) == 13.5
    w = BF16 * llama_params(4096, 14336, 128256, 32, 32, 8, 128) + 131072 * 128 * BF16
    for r in (a, b):
        budget = math.trunc(H200_REPORTED_BYTES * 0.92 - (w + r["activation_bytes_per_gpu"] + NON_TORCH))
        assert r["kv_cache_tokens"] == budget // (16 * 131072) * 16
    # chunked prefill takes the long prefill in 16 chunks: never cheaper than one pass, and a short
    # request waits one chunk, not the whole prefill
    assert a["prefill_long_s"] >= a["prefill_long_unchunked_s"] * 0.999
    assert a["ttft_short_behind_long_s"] == pytest.approx(a["chunk_max_s"] + a["prefill_short_s"])
    assert a["ttft_short_behind_long_unchunked_s"] == pytest.approx(a["prefill_long_unchunked_s"]
                                                                   + a["prefill_short_s"])
    assert a["ttft_short_behind_long_s"] < a["ttft_short_behind_long_unchunked_s"]


def test_concurrency_capped_at_max_num_seqs():
    r = plan("llama3.1-8b", gpu="h200", long="32k", short="1k", kv_dtype="fp8").record
    assert r["kv_limited_concurrent_short"] == r["kv_pool_blocks"] // 64 > 1024
    assert r["max_concurrent_short"] == 1024 == r["max_num_seqs"]
    s = plan("llama3.1-8b", gpu="h200", long="32k", short="1k", kv_dtype="fp8", max_num_seqs=256).record
    assert s["max_concurrent_short"] == 256
    # one 32k request takes one of the 256 slots and 512 blocks, both room to spare: it costs one slot
    assert s["short_requests_lost_per_long"] == 1


def test_deepseek_v3_fp8_weights_bf16_attention_on_8_h200():
    """Per-layer attention time = the bf16 MLA count at the bf16 rate: the naive (prefill) form attends
    128 heads of QK dim 192 and V dim 128 over the causal tiles, 2 FLOPs per multiply-add, split 8 ways."""
    n = 32768
    r = plan("deepseek-v3", gpu="h200", gpus=8, tp=8, weights="fp8", long="32k", short="4k").record
    assert (r["gemm_dtype"], r["attn_dtype"], r["attention_rate"]) == ("fp8", "bf16", "bf16 GEMM peak")
    flops = 2 * DSV3["heads"] * causal_tiled_pairs(n) * (DSV3["nope"] + DSV3["rope"] + DSV3["v"])
    per_layer_s = flops / H100_BF16_FLOPS_PER_S / 8  # the H200 has the H100's GH100 peak
    assert r["attention_long_s"] == pytest.approx(DSV3["layers"] * per_layer_s, rel=1e-12)
    f8 = plan("deepseek-v3", gpu="h200", gpus=8, tp=8, weights="fp8", attn_dtype="fp8", long="32k", short="4k")
    assert f8.record["attention_long_s"] == pytest.approx(DSV3["layers"] * flops / H100_FP8_FLOPS_PER_S / 8,
                                                          rel=1e-12)
    assert r["weights_bytes_per_gpu"] == dsv3_weights_fp8(tp=8, dp=1)


def _dsv3_budget(tp, dp):
    """vLLM's available KV per GPU for DeepSeek-V3 fp8 on an H200, by hand (see plan_hand)."""
    d = DSV3
    h, k, E = d["h"], d["active"], d["experts"]
    w = dsv3_weights_fp8(tp, dp)
    width = d["expert_inter"] if dp > 1 else d["expert_inter"] // (tp * dp)
    hr = d["heads"] // tp
    qk = d["nope"] + d["rope"]
    moe = BF16 * (2 * h + E + k * (max(2 * width, h) + width) + h + h) + 8 * k
    attn = BF16 * (2 * h + hr * qk + d["kv_lora"] + d["rope"] + hr * (d["nope"] + d["v"]) + 3 * hr * qk + h)
    act = max(8192 * max(moe, attn), vllm_sampler_bytes(8192, 1024, h, d["vocab"]))
    return math.trunc(H200_REPORTED_BYTES * 0.92 - (w + act + NON_TORCH)), act


def test_mla_tp8_against_dp8_attention_by_hand():
    """DeepSeek-V3 fp8 on 8 H200s. Under TP 8 MLA's single latent cannot be split: every GPU caches the
    whole 61 x 576 x 2 B per token of every request, one KV pool for the 8 GPUs. Under DP 8 (+ EP 8)
    each GPU holds its own requests' KV: 8 pools. Block 64 (FlashMLA)."""
    per_token = 61 * 576 * BF16
    tp8 = plan("deepseek-v3", gpu="h200", gpus=8, tp=8, weights="fp8", long="128k", short="4k").record
    dp8 = plan("deepseek-v3", gpu="h200", gpus=8, tp=1, dp=8, ep=8, weights="fp8", long="128k", short="4k").record
    for r, (tp, dp) in ((tp8, (8, 1)), (dp8, (1, 8))):
        budget, act = _dsv3_budget(tp, dp)
        assert r["activation_bytes_per_gpu"] == act
        assert r["kv_budget_bytes_per_gpu"] == budget
        assert r["kv_bytes_per_token_per_gpu"] == per_token and r["block_size"] == 64
        blocks = budget // (64 * per_token)
        assert r["kv_pool_blocks"] == blocks
        assert r["max_concurrency_at_max_model_len"] == blocks / (163840 // 64)
        assert r["max_concurrent_short"] == min(blocks // 64, 1024)
        assert r["max_concurrent_short_deployment"] == dp * min(blocks // 64, 1024)
        assert r["max_concurrent_long_deployment"] == dp * (blocks // 2048)
    # the weights per GPU differ (attention whole on every DP rank, 32 whole experts each: 95.8 against
    # 79.6 GiB), the KV per token does not, and DP has 8 pools where TP has one: 5.2x the tokens
    assert 8 * dp8["kv_cache_tokens"] > 5 * tp8["kv_cache_tokens"] > 4 * 8 * dp8["kv_cache_tokens"] / 6


def test_sglang_by_hand():
    """SGLang on one H100: mem_fraction_static round((81559 - 13440) / 81559, 3) = 0.835 of the free
    memory (total - non-torch in use) minus the weights; page 1."""
    r = plan("llama3.1-8b", engine="sglang", long="32k", short="4k").record
    assert r["memory_utilization"] == 0.835 and r["block_size"] == 1
    w = BF16 * llama_params(4096, 14336, 128256, 32, 32, 8, 128) + 131072 * 128 * BF16
    rest = math.floor((H100_REPORTED_BYTES - NON_TORCH) * 0.835 - w)
    tokens = rest // 131072
    assert r["kv_budget_bytes_per_gpu"] == rest and r["kv_cache_tokens"] == tokens
    assert r["max_num_seqs"] == min(max(int(tokens / 131072 * 512), 2048), 4096, tokens // 2)
    assert r["max_concurrent_short"] == min(tokens // 4096, r["max_num_seqs"])
    assert r["activation_bytes_per_gpu"] == 0  # in the reserve, not subtracted


def test_sliding_window_vllm_concurrency_count_vs_real_blocks():
    """mistral-7b slides over 4096: vLLM's concurrency count charges a max_model_len request
    cdiv(min(4095 + 8192, 32768), 16) + 1 = 769 blocks, while a 32k request holds 256 (the window)."""
    r = plan("mistral-7b", long="32k", short="4k", kv_memory_bytes=20 * GIB).record
    blocks = 20 * GIB // (16 * 32 * 8 * 256 * BF16)
    assert r["kv_pool_blocks"] == blocks
    assert r["max_concurrency_at_max_model_len"] == blocks / 769
    assert r["kv_blocks_long"] == r["kv_blocks_short"] == 256 and r["displacement_kv"] == 1.0


def test_hybrid_groups_padded_as_vllm_does():
    """llama4-scout: 36 chunked (8192) + 12 global layers; vLLM groups of 12 layers: 3 chunked groups and
    1 global; a 32k request holds cdiv(32768, 16) = 2048 blocks in the global group and, in each chunked
    group, the 8192-token current chunk (512 blocks)."""
    r = plan("llama4-scout", gpu="h200", gpus=4, tp=4, long="32k", short="4k", kv_memory_bytes=40 * GIB).record
    assert r["kv_groups"] == 4 and r["kv_layers_per_group"] == 12
    assert r["kv_blocks_long"] == 2048 + 3 * 512
    assert r["kv_blocks_short"] == 256 + 3 * 256


def test_pipeline_parallel_by_hand():
    """PP 2: each stage holds 16 layers (blocks of 16 layers); unchunked, a prefill passes both stages
    one after the other (no faster) plus one stage send of hidden state and residual."""
    one = plan("llama3.1-8b", long="32k", short="4k", chunk=0).record
    two = plan("llama3.1-8b", pp=2, gpus=2, long="32k", short="4k", chunk=0).record
    assert two["kv_block_bytes_per_gpu"] == 16 * 16 * 8 * 256 * BF16 == one["kv_block_bytes_per_gpu"] // 2
    send = 1 * 2 * 32768 * 4096 * BF16 / NVLINK4_BYTES_PER_S
    assert two["prefill_long_unchunked_s"] == pytest.approx(one["prefill_long_unchunked_s"] + send, rel=1e-9)
    assert two["binding_stage"] in (0, 1) and two["prefill_bubble_share"] == 0.5
    # k chunks through pp stages: sum / pp + (pp - 1) x the largest / pp
    assert pipelined_s([1.0, 2.0, 3.0], 2) == (6.0 / 2 + 3.0 / 2)
    assert pipelined_s([1.0, 2.0, 3.0], 1) == 6.0


def test_collectives_by_hand():
    """Per layer: TP ring all-reduces of tokens x hidden (2 (T-1)/T of it per GPU); EP replaces the MoE
    layer's all-reduce by a dispatch + combine of tokens / tp x top-k x hidden x (EP-1)/EP."""
    spec = load_model("deepseek-v2-lite")  # 27 layers: 1 dense + 26 MoE, hidden 2048, 6 experts per token
    n, h, link = 4096, 2048, NVLINK4_BYTES_PER_S
    ar = lambda t, ranks: 2 * t * h * BF16 * (ranks - 1) / ranks / link  # noqa: E731
    tp2 = float(comm_s(spec, Parallel(tp=2), n, link))
    assert tp2 == pytest.approx(27 * 2 * ar(n, 2), rel=1e-12)
    ep = float(comm_s(spec, Parallel(tp=1, dp=2, ep=2), n, link))
    a2a = 2 * n * 6 * h * BF16 * (1 / 2) / link
    assert ep == pytest.approx(1 * 2 * ar(n, 1) + 26 * (ar(n, 1) + a2a), rel=1e-12)
    no_ep = float(comm_s(spec, Parallel(tp=1, dp=2, ep=1), n, link))
    assert no_ep == pytest.approx(26 * ar(n, 2), rel=1e-12)
    assert float(comm_s(spec, Parallel(), n, link)) == 0.0
    with pytest.raises(LcprofError, match="no interconnect bandwidth"):
        comm_s(spec, Parallel(tp=2), n, None)


def test_decode_step_is_weights_plus_kv_over_bandwidth():
    r = plan("llama3.1-70b", gpus=8, tp=8, long="128k", short="4k", calibration="datasheet").record
    # one 4k request alone, memory-bound: every weight but the embedding (a row gather) and the RoPE
    # buffer, its KV, plus two tiny all-reduces per layer
    w = _llama70b_tp8_weights() - BF16 * 128256 * 8192 // 8 - 131072 * 128 * BF16
    ar = 80 * 2 * (2 * (7 / 8) * 1 * 8192 * BF16) / NVLINK4_BYTES_PER_S
    assert r["decode_step_short_s"] == pytest.approx((w + 4096 * 80 * 256 * BF16) / H100_HBM_BYTES_PER_S + ar)
    assert r["decode_step_long_s"] > r["decode_step_short_s"]
    assert r["tpot_full_short_s"] > r["decode_step_short_s"]


def test_moe_decode_reads_only_visitable_experts():
    from lcprof.cost.weights import weight_bytes_per_gpu
    from lcprof.plan.compute import decode_weight_read_bytes

    spec = load_model("deepseek-v2-lite")
    w = weight_bytes_per_gpu(spec, "bf16")
    experts = w.by_class["experts"]
    rest = w.total_bytes - experts - w.by_class["embedding"]
    assert experts == 26 * 64 * 3 * 2048 * 1408 * BF16
    # 64 routed experts, 6 per token: a batch of B tokens visits at most min(64, 6 B)
    for batch, touched in ((1, 6), (4, 24), (10, 60), (11, 64), (500, 64)):
        assert float(decode_weight_read_bytes(spec, w, batch, Parallel())) == rest + experts * touched / 64
    # attention data parallel: the MoE group sees every DP rank's tokens
    assert float(decode_weight_read_bytes(spec, w, 1, Parallel(dp=2, ep=2))) == rest + experts * 12 / 64
    dense = load_model("llama3-8b")
    wd = weight_bytes_per_gpu(dense, "bf16")
    assert float(decode_weight_read_bytes(dense, wd, 1, Parallel())) == wd.total_bytes - wd.by_class["embedding"]


def test_ttft_recommendations_by_definition():
    p = plan("llama3.1-8b", long="64k", short="4k", ttft="1s", tpot="30ms", chunk="4k")
    r = p.record
    from lcprof.plan.compute import chunked_prefill_s, last_chunk_s

    dep = p.deployment

    def t(n):
        return chunked_prefill_s(dep, n, 4096)[0]

    n_max = r["longest_n_meeting_ttft"]
    assert t(n_max) <= 1.0 < t(n_max + 1)
    l_max = r["longest_long_keeping_short_ttft"]
    assert l_max == 131072 or (float(last_chunk_s(dep, l_max, 4096)) + r["prefill_short_s"] <= 1.0
                               < float(last_chunk_s(dep, l_max + 1, 4096)) + r["prefill_short_s"])
    f = r["long_prefill_time_share_max"]
    assert f == pytest.approx(1 - r["prefill_short_s"] / (1.0 - r["chunk_max_s"]))
    rr = r["long_request_share_max"]
    assert rr == pytest.approx((f / r["prefill_long_s"]) / (f / r["prefill_long_s"] + (1 - f) / r["prefill_short_s"]))
    assert r["long_kv_pool_share_max"] == pytest.approx(rr * 4096 / (rr * 4096 + (1 - rr) * 256))
    q = min(65536, n_max)
    assert r["kv_quota_bytes_per_long_request_per_gpu"] == math.ceil(q / 16) * r["kv_block_bytes_per_gpu"]
    b = r["max_decode_batch_short_tpot"]
    assert 0 < b <= r["max_concurrent_short"]
    assert r["tpot_met_full_pool"] == (b == r["max_concurrent_short"])


def test_mix_expected_blocks_by_hand():
    p = plan("deepseek-v2-lite", long="32k", mix="2k:0.8,8k:0.15,32k:0.05", ttft="2s", kv_memory_bytes=10 * GIB)
    r = p.record
    assert r["short_n"] == 2048 and r["long_n"] == 32768
    # MLA on an H100: block 64 -> 2k: 32 blocks, 8k: 128, 32k: 512
    expected = 0.8 * 32 + 0.15 * 128 + 0.05 * 512
    assert r["mix_expected_kv_blocks_per_request"] == pytest.approx(expected)
    pool = 10 * GIB // (64 * 27 * 576 * BF16)
    assert r["kv_pool_blocks"] == pool
    assert r["max_concurrent_mix"] == min(int(pool // expected), 1024)
    assert r["mix_long_kv_pool_share"] == pytest.approx(0.05 * 512 / expected)
    assert r["mix_long_request_share"] == pytest.approx(0.05)
    assert list(p.mix["n"]) == [2048, 8192, 32768]
    assert "mix_meets_ttft_share" in r


def test_prefix_is_shared():
    a = plan("llama3.1-8b", long="32k", short="4k").record
    b = plan("llama3.1-8b", long="32k", short="4k", prefix="1k").record
    assert b["shared_prefix_blocks"] == 64
    assert b["kv_blocks_short"] == 256 - 64
    assert b["kv_limited_concurrent_short"] > a["kv_limited_concurrent_short"]
    assert b["prefill_short_s"] < a["prefill_short_s"]  # only 3k new tokens to prefill


@pytest.mark.parametrize("kwargs,match", [
    (dict(model="llama3.1-70b", tp=3, long="128k", short="4k"), "TP=3 does not divide"),
    (dict(model="llama3.1-70b", tp=1, long="128k", short="4k"), r"does not fit the GPUs.*missing"),
    (dict(model="llama3.1-8b", long="2k", short="4k"), "shorter than --short"),
    (dict(model="llama3.1-8b", long="128k", short="4k", memory_utilization=0.2), "nothing left for KV"),
    (dict(model="llama3.1-8b", gpus=3, tp=2, long="8k", short="4k"), "not a multiple of tp x dp x pp"),
    (dict(model="llama3.1-8b", mix="2k:0.5,8k:0.4"), "sum to 0.9"),
    (dict(model="llama3.1-8b", long="8k"), "give --long and --short"),
    (dict(model="llama3.1-8b", long="8k", short="4k", prefix="4k"), "--prefix"),
    (dict(model="llama3-8b", long="32k", short="4k"), r"exceeds vllm's max_model_len for llama3-8b \(8192"),
    (dict(model="llama3.1-8b", long="128k", short="4k", max_model_len="64k"), "exceeds vllm's max_model_len"),
    (dict(model="llama3.1-8b", long="8k", short="4k", dp=2), "is dense"),
    (dict(model="deepseek-v2-lite", long="8k", short="4k", dp=2, ep=4), "must be 1 or tp x dp"),
    (dict(model="llama3.1-8b", long="8k", short="4k", weights="mxfp4"), "routed experts only"),
    (dict(model="llama3.1-8b", long="8k", short="4k", engine="sglang", kv_dtype="int8"), "sglang has no int8"),
    (dict(model="llama3.1-8b", long="8k", short="4k", gpu="a100", weights="fp8"), "no fp8 peak rate"),
    (dict(model="llama3.1-8b", long="8k", short="4k", foo=1), "unknown plan option"),
    (dict(model="llama3.1-8b", long="8k", short="4k", weights="fp8", dtype="int8"), "not both"),
])
def test_bad_input_raises(kwargs, match):
    kwargs = dict(kwargs)
    model = kwargs.pop("model")
    with pytest.raises(LcprofError, match=match):
        plan(model, **kwargs)


def test_sglang_warns_when_its_reserve_cannot_hold_one_chunk():
    """The forward of an 8192-token chunk (8192 x the MLP step of 110592 B = 864 MiB for llama3.1-8b) must
    fit the (1 - mem_fraction_static) reserve: at 0.99 of (81559 - 512) MiB free it is 810.47 MiB."""
    assert 8192 * vllm_dense_mlp_bytes_per_token(4096, 14336) == 864 * MIB
    with pytest.warns(UserWarning, match=r"reserve of 810\.47 MiB .* 8192-token chunk \(864\.00 MiB\)"):
        plan("llama3.1-8b", engine="sglang", memory_utilization=0.99, long="32k", short="4k")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan("llama3.1-8b", engine="sglang", long="32k", short="4k")
