"""Edges and small contracts the larger tests do not reach (each one kills a mutant of the planner)."""

import math
import warnings

import numpy as np
import pytest

from lcprof.errors import LcprofError
from lcprof.plan import (EngineSettings, Parallel, build_deployment, capacity_grid, kv_group_kinds, kv_layout, plan,
                         resolve_limits)
from lcprof.plan.compute import chunked_prefill_s, last_chunk_s
from lcprof.plan.inputs import parse_int_list, parse_seconds
from lcprof.plan.kvformat import kv_format
from lcprof.plan.memory import stage_activation_bytes
from lcprof.plan.parallel import parallel_problem
from lcprof.hardware import get_gpu
from lcprof.spec import LayerSpec, load_model

from support.plan_hand import BF16, GIB

pytestmark = pytest.mark.filterwarnings("ignore:.*max_position_embeddings")


def test_inputs_numbers_and_messages():
    assert parse_seconds(2) == 2.0 and parse_seconds(0.5) == 0.5
    with pytest.raises(LcprofError, match=r"--tp must be positive integers.*|malformed --tp 'x'; use integers such as"):
        parse_int_list("x", "--tp")
    with pytest.raises(LcprofError, match=r"malformed --tp 'x'; use integers such as 1,2,4,8"):
        parse_int_list("x", "--tp")


def test_weights_exactly_filling_the_request_leave_no_kv_room():
    """vLLM with total x utilization equal to the weights to the byte: they fit (not 'does not fit'),
    nothing is left for KV."""
    dep = build_deployment("llama3.1-8b")
    from lcprof.plan.memory import stage_weights

    w = stage_weights(dep.spec, dep)[0].total_bytes
    with pytest.raises(LcprofError, match="nothing left for KV"):
        plan("llama3.1-8b", long="8k", short="4k", gpu_memory_bytes=w, memory_utilization=1.0)
    df = capacity_grid("llama3.1-8b", longs="8k", short="4k", gpu_memory_bytes=w, memory_utilizations=(1.0,))
    assert df["status"].iloc[0] == "no_kv_room"


def test_shared_prefix_counts_every_group_and_windows_drop_it():
    g = plan("gemma2-9b", engine="none", long="8k", short="4k", prefix="1k").record
    assert g["shared_prefix_blocks"] == 2 * 64  # 64 full blocks in the sliding group and in the global group
    m = plan("mistral-7b", engine="none", long="32k", short="8k", prefix="1k").record
    assert m["shared_prefix_blocks"] == 0  # the 8k request no longer attends the prefix (window 4096)


def test_sglang_activation_is_in_the_reserve_and_its_mla_log():
    r = plan("llama3.1-8b", engine="sglang", long="32k", short="4k").record
    assert r["activation_tokens"] == 0 and r["activation_bytes_per_gpu"] == 0
    p = plan("deepseek-v2-lite", engine="sglang", long="32k", short="4k")
    tokens = p.record["kv_cache_tokens"]
    assert p.startup_log[1] == f"KV Cache is allocated. #tokens: {tokens}, KV size: {tokens * 27 * 576 * BF16 / GIB:.2f} GB"


def test_unchunked_ttft_search_and_mix_flags():
    r = plan("llama3.1-8b", long="32k", short="4k", ttft="2s", chunk=0,
             mix="4k:0.9,32k:0.1").record
    t_short = r["prefill_short_s"]
    assert r["longest_long_keeping_short_ttft"] >= 4096
    assert r["mix_meets_ttft_share"] is (r["mix_long_prefill_time_share"] <= r["long_prefill_time_share_max"])
    assert math.isfinite(r["tpot_full_mix_s"]) and r["tpot_full_mix_s"] > r["decode_step_short_s"]
    pool = r["kv_pool_blocks"]
    assert r["kv_quota_bytes_long_class_per_gpu"] == int(r["long_kv_pool_share_max"] * pool * r["kv_block_bytes_per_gpu"])
    assert t_short > 0


def test_sources_say_where_each_setting_came_from():
    spec, gpu = load_model("llama3.1-8b"), get_gpu("h100-sxm")
    none = resolve_limits(EngineSettings(engine="none"), spec, gpu).sources
    assert none["memory_utilization"] == "lcprof default" and none["gpu_memory_bytes"] == "datasheet memory_bytes"
    v = resolve_limits(EngineSettings(), spec, gpu).sources
    assert v["block_size"] == "vLLM default" and v["gpu_memory_bytes"].startswith("gpus.json reported_memory_mib")
    mla = resolve_limits(EngineSettings(), load_model("deepseek-v3"), get_gpu("h200")).sources
    assert mla["block_size"] == "vLLM default (MLA on hopper)"
    assert EngineSettings(non_torch_bytes=0, cuda_graph_bytes=0).non_torch_bytes == 0


def test_none_engine_subtracts_cuda_graphs():
    a = plan("llama3.1-8b", engine="none", long="32k", short="4k").record
    b = plan("llama3.1-8b", engine="none", long="32k", short="4k", cuda_graph_bytes=GIB).record
    assert a["kv_budget_bytes_per_gpu"] - b["kv_budget_bytes_per_gpu"] == GIB


def test_grid_zeroes_and_reasons():
    df = capacity_grid("llama3.1-8b", engine="none", tps=(1,), memory_utilizations=(0.195, 0.9), longs="8k",
                       short="4k")
    dead = df[df["status"] == "no_kv_room"].iloc[0]
    assert dead["kv_cache_tokens"] == 0 and dead["kv_pool_blocks"] == 0
    sg = capacity_grid("llama3.1-8b", engine="sglang", kv_dtypes=("int8", "bf16"), longs="8k", short="4k")
    assert list(sg["status"].astype(str)) == ["invalid", "ok"]
    tiny = capacity_grid("llama3.1-8b", engine="none", kv_memory_bytes=1000, longs="8k", short="4k")
    assert tiny["status"].iloc[0] == "long_does_not_fit"  # less than one block, but some bytes: not a refusal
    fixed = capacity_grid("llama3.1-8b", gpus=2, tps=(1,), longs="8k", short="4k")
    assert fixed["replicas"].iloc[0] == 2 and (fixed["dtype"] == "bf16").all()
    assert fixed["max_concurrent_long_deployment"].iloc[0] == 2 * fixed["max_concurrent_long"].iloc[0]


def test_decode_table_marks_contexts_that_do_not_fit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = plan("llama3.1-8b", engine="none", long="128k", short="4k", memory_utilization=0.35, chunk="8k")
    d = p.decode.set_index("n")
    assert d.loc[131072, "max_concurrent"] == 0 and np.isnan(d.loc[131072, "tpot_full_pool_s"])
    assert d.loc[4096, "max_concurrent"] > 0 and not np.isnan(d.loc[4096, "tpot_full_pool_s"])


def test_zero_gpus_refused():
    assert parallel_problem(load_model("llama3.1-8b"), Parallel(), 0) == "--gpus must be positive, got 0"


def test_last_chunk_is_the_longest_of_full_chunks():
    dep = build_deployment("llama3.1-8b")
    total, longest = chunked_prefill_s(dep, 32768, 8192)
    assert float(last_chunk_s(dep, 32768, 8192)) == pytest.approx(longest, rel=1e-12)
    assert float(last_chunk_s(dep, 8192 * 3 + 100, 8192)) < longest  # a partial last chunk of 100 tokens


def test_vllm_groups_padded_where_gcd_would_not_pad():
    """20 sliding + 30 global layers: vLLM groups of 20 (30 < 1.5 x 20 fails), the global kind padded
    to two groups; lcprof's gcd cut gives groups of 10 and no padding."""
    base = load_model("gemma2-9b")
    layers = tuple([LayerSpec("sliding", 4096)] * 20 + [LayerSpec("global")] * 30)
    spec = base.replace(n_layers=50, layers=layers)
    v = kv_group_kinds(spec, "vllm")
    assert [(k.kind, k.layers_per_group, k.n_groups, k.padding_layers) for k in v] == \
        [("sliding", 20, 1, 0), ("global", 20, 2, 10)]
    n = kv_group_kinds(spec, "none")
    assert [(k.layers_per_group, k.n_groups) for k in n] == [(10, 2), (10, 3)]
    lay = kv_layout(spec, kv_format(spec, "bf16"), engine="vllm", block_size=16)
    assert lay.n_groups == 3 and lay.block_bytes_per_gpu == 16 * 20 * 8 * 512 * BF16


def test_pipeline_stage_activation_follows_its_own_layers():
    """deepseek-v2-lite in 27 one-layer stages: stage 0 holds the dense layer, the others MoE layers."""
    dep = build_deployment("deepseek-v2-lite", pp=27, engine=EngineSettings(engine="none"))
    acts = stage_activation_bytes(dep.spec, dep, np.array(4096))
    assert int(acts[0]) != int(acts[1]) and int(acts[1]) == int(acts[26])


def test_unchunked_search_without_an_engine_chunk():
    """engine none, no --chunk: the longest long request a short one can wait behind is searched on the
    whole prefill: t(long) + t(short) <= TTFT."""
    p = plan("llama3.1-8b", engine="none", long="32k", short="4k", ttft="2s")
    r, dep = p.record, p.deployment
    from lcprof.plan.compute import prefill_s

    n = r["longest_long_keeping_short_ttft"]
    t = lambda m: float(prefill_s(dep, [m])[0])  # noqa: E731
    assert t(n) + r["prefill_short_s"] <= 2.0 < t(n + 1) + r["prefill_short_s"]


def test_gpu_memory_source_without_a_reported_total():
    src = resolve_limits(EngineSettings(), load_model("llama3.1-8b"), get_gpu("a100-80gb")).sources
    assert src["gpu_memory_bytes"] == "datasheet memory_bytes"


def test_grid_keeps_going_after_an_invalid_dtype_and_sglang_never_refuses():
    sg = capacity_grid("llama3.1-8b", engine="sglang", kv_dtypes=("int8", "bf16"), longs="8k", short="4k")
    assert sg["kv_pool_blocks"].iloc[1] > 0 and sg["prefill_long_s"].iloc[1] > 0
    tiny = capacity_grid("llama3.1-8b", engine="sglang", kv_memory_bytes=1000, longs="8k", short="4k")
    assert tiny["status"].iloc[0] == "long_does_not_fit"
