"""vLLM's startup figures reproduced for configurations whose inputs appear in public vLLM logs.

* exact: given the logged available KV memory (printed to 0.01 GiB), the planner's block count covers
  the logged one over that rounding interval, and its "Maximum concurrency" and "GPU KV cache size"
  lines equal the logged ones;
* first principles: from the logged total, utilization and non-torch memory only, the planner's
  weights and activation peak match the logged ones and its KV cache is within 5% of the logged one.
"""

import pytest

from lcprof.errors import LcprofError
from lcprof.plan import EngineSettings, plan

from support.plan_hand import GIB

pytestmark = pytest.mark.filterwarnings("ignore:.*max_position_embeddings")

# https://github.com/vllm-project/vllm/issues/10517 (comment of 2024-12-02): meta-llama/Llama-3.1-8B-Instruct
# on an RTX 3090, vLLM V0 (no chunked prefill below 32k: the profile runs max_model_len tokens):
#   Loading model weights took 14.9888 GB
#   Memory profiling results: total_gpu_memory=23.58GiB ... peak_torch_memory=17.06GiB ...
#     non_torch_memory=0.35GiB kv_cache_size=3.81GiB gpu_memory_utilization=0.90
#   # GPU blocks: 1952, # CPU blocks: 2048
#   Maximum concurrency for 20000 tokens per request: 1.56x
# and with --max-model-len 29000: peak_torch_memory=17.98GiB, kv_cache_size=2.89GiB, # GPU blocks: 1478,
#   Maximum concurrency for 29000 tokens per request: 0.82x, "the maximum number of tokens that can be
#   stored in KV cache (23648)".
ISSUE_10517 = {20000: dict(peak=17.06, kv=3.81, blocks=1952, conc="1.56"),
               29000: dict(peak=17.98, kv=2.89, blocks=1478, conc="0.82")}
RTX3090 = dict(gpu="rtx4090", gpu_memory="23.58GiB", memory_utilization=0.9, non_torch_bytes=int(0.35 * GIB))
BLOCK_BYTES = 16 * 32 * 8 * 256 * 2  # block 16 x Llama-3.1-8B's 128 KiB per token = 2 MiB


def _plan(L, **kw):
    from lcprof.plan.inputs import parse_memory_bytes

    base = dict(RTX3090)
    base["gpu_memory_bytes"] = parse_memory_bytes(base.pop("gpu_memory"))
    base.update(kw)
    return plan("llama3.1-8b", long=L, short="4k", chunk=0, max_model_len=L, **base)


def test_issue_10517_exact_from_the_logged_kv_memory():
    log = ISSUE_10517[20000]
    lo = _plan(20000, kv_memory_bytes=int((log["kv"] - 0.005) * GIB)).record["kv_pool_blocks"]
    hi = _plan(20000, kv_memory_bytes=int((log["kv"] + 0.005) * GIB) - 1).record["kv_pool_blocks"]
    assert (lo, hi) == (1948, 1953)  # floor(3.805 GiB / 2 MiB), floor(3.815 GiB / 2 MiB)
    assert lo <= log["blocks"] <= hi  # the logged count inside what the rounded memory allows
    p = _plan(20000, kv_memory_bytes=log["blocks"] * BLOCK_BYTES)
    assert p.record["kv_pool_blocks"] == log["blocks"]
    assert "Maximum concurrency for 20,000 tokens per request: 1.56x" in p.startup_log  # 1952 / 1250 blocks
    assert "GPU KV cache size: 31,232 tokens" in p.startup_log  # 1952 x 16


def test_issue_10517_refusal_at_29000_exact():
    """0.82x: one 29000-token request does not fit, so vLLM refuses to start and names the longest
    that would (the V0 log: "the maximum number of tokens that can be stored in KV cache (23648)")."""
    with pytest.raises(LcprofError, match=r"max seq len \(29000\).*estimated maximum model length is 23648"):
        _plan(29000, kv_memory_bytes=1478 * BLOCK_BYTES)


@pytest.mark.parametrize("L", sorted(ISSUE_10517))
def test_issue_10517_from_first_principles(L):
    log = ISSUE_10517[L]
    from lcprof.plan import build_deployment
    from lcprof.plan.memory import kv_layout, pool_blocks, stage_activation_bytes, stage_weights

    kw = dict(RTX3090)
    kw.pop("gpu_memory")
    settings = EngineSettings(gpu_memory_bytes=int(23.58 * GIB), chunked=False, max_model_len=L,
                              memory_utilization=kw.pop("memory_utilization"), non_torch_bytes=kw.pop("non_torch_bytes"))
    dep = build_deployment("llama3.1-8b", gpu="rtx4090", engine=settings)
    w = stage_weights(dep.spec, dep)
    a = stage_activation_bytes(dep.spec, dep, dep.limits.max_num_batched_tokens)
    blocks, budget, _ = pool_blocks(dep, kv_layout(dep.spec, dep.precision.kv, engine="vllm"), w, a)
    assert f"{w[0].total_bytes / GIB:.4f}" == "14.9888"
    logged_act = log["peak"] * GIB - w[0].total_bytes  # peak_torch_memory includes the weights
    assert int(a[0]) == pytest.approx(logged_act, rel=0.01)
    assert int(a[0]) == L * (3 * 4096 + 3 * 14336) * 2  # the MLP step, by hand
    assert int(blocks) == pytest.approx(log["blocks"], rel=0.05)
    assert int(budget) == pytest.approx(log["kv"] * GIB, rel=0.05)
    if L == 29000:  # and the plan stops where vLLM stopped
        with pytest.raises(LcprofError, match="vLLM would not start"):
            _plan(L)


def test_pr_17122_v1_engine_exact():
    """https://github.com/vllm-project/vllm/pull/17122 (2025-04-24): Llama-3.1-8B-Instruct on one L40S,
    vLLM V1: "Model loading took 14.9889 GiB", "GPU KV cache size: 158,656 tokens", "Maximum
    concurrency for 32,768 tokens per request: 4.84x"."""
    blocks = 158_656 // 16
    p = plan("llama3.1-8b", gpu="l40s", long="32k", short="4k", max_model_len=32768,
             kv_memory_bytes=blocks * BLOCK_BYTES)
    assert "GPU KV cache size: 158,656 tokens" in p.startup_log
    assert "Maximum concurrency for 32,768 tokens per request: 4.84x" in p.startup_log
    assert p.record["weights_bytes_per_gpu"] / GIB == pytest.approx(14.9889, abs=1e-3)
    # with the KV memory given, vLLM skips the profile; the log line says so
    assert any("as specified by kv_cache_memory_bytes" in line for line in p.startup_log)


def test_pr_10511_h100_tp1_and_tp2_from_first_principles():
    """https://github.com/vllm-project/vllm/pull/10511 (comment of 2024-12-13), Meta-Llama-3-8B on H100,
    vLLM V0: total_gpu_memory 79.22 GiB x 0.90; TP 1: weights 14.96, non_torch 1.79, activation peak
    1.26, available_kv_cache_memory 53.29 GiB; TP 2: weights 7.48, non_torch 3.58, activation 1.26.

    The weights match to the log's two decimals. V0's activation peak at 8192 tokens was its sampler
    (top-p/top-k sorting over 256 x 128256 logits); the planner counts V1's sampler (0.84 GiB here,
    the forward's MLP step), so it is 0.42 GiB under the log and the available KV ~0.8% over it."""
    kw = dict(gpu="h100-sxm", long="8k", short="4k", memory_utilization=0.9, max_num_seqs=256,
              gpu_memory_bytes=int(79.22 * GIB))
    one = plan("llama3-8b", non_torch_bytes=int(1.79 * GIB), **kw).record
    two = plan("llama3-8b", tp=2, non_torch_bytes=int(3.58 * GIB), **kw).record
    assert round(one["weights_bytes_per_gpu"] / GIB, 2) == 14.96
    assert round(two["weights_bytes_per_gpu"] / GIB, 2) == 7.48
    assert one["activation_bytes_per_gpu"] == 8192 * (3 * 4096 + 3 * 14336) * 2
    assert one["kv_budget_bytes_per_gpu"] == pytest.approx(53.29 * GIB, rel=0.05)
    assert two["activation_bytes_per_gpu"] == 8192 * (3 * 4096 + 3 * 14336 // 2) * 2


def test_kv_memory_replaces_the_profile_but_not_the_blocks_rule():
    a = plan("llama3.1-8b", long="32k", short="4k", kv_memory_bytes=20 * GIB).record
    assert a["kv_budget_bytes_per_gpu"] == 20 * GIB
    assert a["kv_pool_blocks"] == 20 * GIB // BLOCK_BYTES == 10240
    assert a["kv_cache_tokens"] == 10240 * 16  # block 16 divides max_model_len 131072
    assert a["max_concurrency_at_max_model_len"] == 10240 / (131072 / 16)
    b = plan("llama3.1-8b", long="32k", short="4k", kv_memory_bytes=20 * GIB, kv_dtype="fp8").record
    assert b["kv_pool_blocks"] == 2 * a["kv_pool_blocks"]
