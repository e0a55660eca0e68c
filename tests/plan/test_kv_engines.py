"""KV formats with scales, engine defaults and the engines' refusals, by hand from the engines' source."""

import math

import numpy as np
import pytest

from lcprof.errors import LcprofError
from lcprof.hardware import get_gpu
from lcprof.plan import engines as E
from lcprof.plan.kvformat import kv_bytes_per_token, kv_bytes_per_token_per_layer, kv_format, kv_read_bytes
from lcprof.spec import load_model

from support.plan_hand import BF16, FP8, H100_REPORTED_BYTES, H200_REPORTED_BYTES, MIB


def test_kv_bytes_per_token_per_format():
    spec = load_model("llama3.1-8b")  # 32 layers, 8 KV heads of 128
    per = {d: kv_bytes_per_token(spec, kv_format(spec, d, "vllm")) for d in ("bf16", "fp8", "int8", "int4")}
    assert per["bf16"] == 32 * 8 * (128 + 128) * BF16 == 131072
    assert per["fp8"] == 32 * 8 * 256 * FP8
    # vLLM int8_per_token_head: 1 byte per element + fp32 scales for K and V per token per KV head
    assert per["int8"] == 32 * (8 * 256 + 8 * 2 * 4) == 67584
    # int4_per_token_head: head_size // 2 bytes for K and for V + the same scales
    assert per["int4"] == 32 * (8 * 128 + 8 * 2 * 4) == 34816
    # TP 2 halves the heads and their scales
    assert kv_bytes_per_token_per_layer(spec, kv_format(spec, "int8"), tp=2) == 4 * 256 + 4 * 8
    assert kv_format(spec, "int8").engine_name == "int8_per_token_head"
    assert kv_format(spec, "fp8", "sglang").engine_name == "fp8_e4m3"


def test_mla_latent_whole_on_every_rank_and_no_int_formats():
    spec = load_model("deepseek-v3")
    for tp in (1, 8):
        assert kv_bytes_per_token_per_layer(spec, kv_format(spec, "bf16"), tp) == (512 + 64) * BF16
    assert kv_bytes_per_token(spec, kv_format(spec, "fp8")) == 61 * 576
    with pytest.raises(LcprofError, match="MLA's latent, which no engine stores in int8"):
        kv_format(spec, "int8")


def test_engines_refuse_kv_dtypes_they_do_not_store():
    spec = load_model("llama3.1-8b")
    with pytest.raises(LcprofError, match="sglang has no int8 KV cache"):
        kv_format(spec, "int8", "sglang")
    with pytest.raises(LcprofError, match="unknown engine 'trt'"):
        kv_format(spec, "bf16", "trt")
    with pytest.raises(LcprofError, match="unknown dtype 'fp4'"):
        kv_format(spec, "fp4")


def test_kv_read_caps_sliding_layers():
    spec = load_model("mistral-7b")  # all 32 layers slide over 4096
    fmt = kv_format(spec, "bf16")
    got = kv_read_bytes(spec, fmt, [1000, 4096, 32768])
    per = 32 * 8 * 256 * BF16
    assert list(got) == [1000 * per, 4096 * per, 4096 * per]


def test_vllm_defaults_by_gpu():
    """vllm/engine/arg_utils.py: >= 70 GiB and not an A100 -> 8192 tokens / 1024 sequences, else 2048 / 256;
    vllm/config/cache.py: gpu_memory_utilization 0.92, block 16; FlashMLA forces 64 on Hopper, CUTLASS MLA 128
    on Blackwell."""
    spec = load_model("llama3.1-8b")
    h100 = E.resolve_limits(E.EngineSettings(), spec, get_gpu("h100-sxm"))
    assert (h100.max_num_batched_tokens, h100.max_num_seqs, h100.memory_utilization, h100.block_size) == \
        (8192, 1024, 0.92, 16)
    assert h100.gpu_memory_bytes == H100_REPORTED_BYTES and h100.max_model_len == 131072
    a100 = E.resolve_limits(E.EngineSettings(), spec, get_gpu("a100-80gb"))
    assert (a100.max_num_batched_tokens, a100.max_num_seqs) == (2048, 256)
    l40s = E.resolve_limits(E.EngineSettings(), spec, get_gpu("l40s"))
    assert (l40s.max_num_batched_tokens, l40s.max_num_seqs) == (2048, 256)
    capped = E.resolve_limits(E.EngineSettings(max_num_batched_tokens=512), spec, get_gpu("h100-sxm"))
    assert capped.max_num_seqs == 512  # max_num_seqs <= max_num_batched_tokens
    off = E.resolve_limits(E.EngineSettings(chunked=False), spec, get_gpu("h100-sxm"))
    assert off.max_num_batched_tokens == 131072  # unchunked: vLLM profiles max_model_len tokens
    mla = load_model("deepseek-v3")
    assert E.resolve_limits(E.EngineSettings(), mla, get_gpu("h200")).block_size == 64
    assert E.resolve_limits(E.EngineSettings(), mla, get_gpu("b200")).block_size == 128
    assert E.resolve_limits(E.EngineSettings(), mla, get_gpu("a100-80gb")).block_size == 16
    given = E.resolve_limits(E.EngineSettings(block_size=32, memory_utilization=0.5), mla, get_gpu("h200"))
    assert (given.block_size, given.memory_utilization, given.sources["block_size"]) == (32, 0.5, "given")


def test_derived_max_model_len():
    """vllm/config/model.py _get_and_verify_max_len: YaRN = original positions x factor."""
    assert E.derived_max_model_len(load_model("deepseek-v3")) == 4096 * 40
    assert E.derived_max_model_len(load_model("qwen2.5-7b-yarn")) == 32768 * 4
    assert E.derived_max_model_len(load_model("llama3.1-8b")) == 131072  # llama3 scaling keeps the positions
    assert E.derived_max_model_len(load_model("llama3-8b")) == 8192


def test_sglang_mem_fraction_static_by_hand():
    """server_args.py _handle_gpu_memory_settings on an H200 (143771 MiB): chunked_prefill_size 8192,
    cuda_graph_max_bs 256 (TP < 4) or 512; reserved = 512 + 8192 x 1.5 + bs x 2 + tp x pp / 8 x 1024 MiB,
    at least 10240."""
    mib = H200_REPORTED_BYTES / MIB
    assert E.sglang_gpu_defaults(mib, 1) == (8192, 256) and E.sglang_gpu_defaults(mib, 8) == (8192, 512)
    tp1 = 512 + 8192 * 1.5 + 256 * 2 + 1 * 1 / 8 * 1024
    assert tp1 == 13440
    assert E.sglang_mem_fraction_static(mib, chunked_prefill_size=8192, cuda_graph_max_bs=256, tp_size=1,
                                        pp_size=1) == round((mib - tp1) / mib, 3) == 0.907
    tp8 = 512 + 8192 * 1.5 + 512 * 2 + 8 * 1 / 8 * 1024
    assert E.sglang_mem_fraction_static(mib, chunked_prefill_size=8192, cuda_graph_max_bs=512, tp_size=8,
                                        pp_size=1) == round((mib - tp8) / mib, 3)
    dp = tp8 + 512 * 8 * 3 + 512 * 8 * 1.5
    assert E.sglang_mem_fraction_static(mib, chunked_prefill_size=8192, cuda_graph_max_bs=512, tp_size=8, pp_size=1,
                                        dp_size=8, dp_attention=True) == round((mib - dp) / mib, 3)
    small = 16 * 1024  # a 16 GiB GPU: 2048 / 8, no 10 GiB floor
    assert E.sglang_gpu_defaults(small, 1) == (2048, 8)
    assert E.sglang_mem_fraction_static(small, chunked_prefill_size=2048, cuda_graph_max_bs=8, tp_size=1,
                                        pp_size=1) == round((small - (512 + 3072 + 16 + 128)) / small, 3)
    assert E.sglang_gpu_defaults(30 * 1024, 4) == (2048, 80) and E.sglang_gpu_defaults(50 * 1024, 2) == (4096, 32)
    assert E.sglang_gpu_defaults(200 * 1024, 1) == (16384, 512) and E.sglang_gpu_defaults(80 * 1024, 4)[1] == 512


def test_sglang_max_running_requests():
    """model_runner._resolve_max_num_reqs: tokens / context x 512 clamped to [2048, 4096], at most tokens // 2."""
    assert E.sglang_max_running_requests(1_000_000, 131072) == 3906  # int(1e6 / 131072 x 512) = 3906
    assert E.sglang_max_running_requests(100_000, 131072) == 2048
    assert E.sglang_max_running_requests(3000, 131072) == 1500
    assert E.sglang_max_running_requests(10_000_000, 8192) == 4096
    assert list(E.sglang_max_running_requests(np.array([3000, 10_000_000]), 8192)) == [1500, 4096]


def test_budgets_per_engine_by_hand():
    spec = load_model("llama3.1-8b")
    gpu = get_gpu("h100-sxm")
    w, a = 16_094_076_928, 1_000_000_000
    v = E.resolve_limits(E.EngineSettings(memory_utilization=0.9, non_torch_bytes=300 * MIB), spec, gpu)
    assert int(E.kv_budget_bytes(v, weights_bytes=w, activation_bytes=a)) == \
        math.trunc(H100_REPORTED_BYTES * 0.9 - (w + a + 300 * MIB))
    s = E.resolve_limits(E.EngineSettings(engine="sglang", memory_utilization=0.85, non_torch_bytes=300 * MIB), spec, gpu)
    assert int(E.kv_budget_bytes(s, weights_bytes=w, activation_bytes=a)) == \
        math.floor((H100_REPORTED_BYTES - 300 * MIB) * 0.85 - w)  # activations live in the reserve
    n = E.resolve_limits(E.EngineSettings(engine="none"), spec, gpu)
    assert n.gpu_memory_bytes == 80 << 30 and n.non_torch_bytes == 0 and n.max_num_seqs is None
    assert int(E.kv_budget_bytes(n, weights_bytes=w, activation_bytes=a)) == (80 << 30) * 9 // 10 - w - a
    logged = E.resolve_limits(E.EngineSettings(kv_memory_bytes=123_456_789), spec, gpu)
    assert int(E.kv_budget_bytes(logged, weights_bytes=w, activation_bytes=a)) == 123_456_789


def test_engine_settings_refusals():
    for kw, match in ((dict(engine="trt"), "unknown engine"), (dict(memory_utilization=1.5), r"in \(0, 1\]"),
                      (dict(block_size=0), "--block-size must be positive"),
                      (dict(non_torch_bytes=-1), "--non-torch-bytes must be >= 0"),
                      (dict(chunked=False, max_num_batched_tokens=8192), "contradict")):
        with pytest.raises(LcprofError, match=match):
            E.EngineSettings(**kw)
    with pytest.raises(LcprofError, match="CUDA graphs live in the"):
        E.resolve_limits(E.EngineSettings(engine="sglang", cuda_graph_bytes=1), load_model("llama3-8b"),
                         get_gpu("h100-sxm"))
