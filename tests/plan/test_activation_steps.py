"""vLLM's profile-run activation per layer kind, by hand (lcprof/plan/activation.py): with
max_num_seqs 1 the sampler is small and the forward's widest step per token x 8192 tokens is the
peak. Elements per token, bf16 (2 bytes), one GPU; base = 2h (residual + normed input)."""

import pytest

from lcprof.plan import build_deployment, decode_parts, plan
from lcprof.spec import LayerSpec

from support.hf_configs import llama_spec
from support.plan_hand import GIB

pytestmark = pytest.mark.filterwarnings("ignore:.*max_position_embeddings")
KW = dict(long="8k", short="4k", max_num_seqs=1, kv_memory_bytes=20 * GIB)


def test_non_gated_mlp_step_nemotron_h():
    """Nemotron-H-56B's MLP-only layers (relu^2, not gated): 2h + I + I + h = 3 x 8192 + 2 x 32768; wider
    than its Mamba-2 step (2h + in_proj 37120 + h) and its attention step."""
    r = plan("nemotron-h-56b", gpu="h200", **KW).record
    assert r["activation_bytes_per_gpu"] == 8192 * 2 * (3 * 8192 + 2 * 32768)


def test_moe_step_qwen3_30b_a3b():
    """Qwen3-30B-A3B (h 2048, 128 experts, 8 active of width 768): 2h + 128 router logits +
    8 x (max(2 x 768, h) + 768) + h elements, plus 8 x 8 bytes of top-k weights and ids."""
    r = plan("qwen3-30b-a3b", gpu="h200", **KW).record
    assert r["activation_bytes_per_gpu"] == 8192 * (2 * (2 * 2048 + 128 + 8 * (2048 + 768) + 2048) + 8 * 8)


def test_attention_step_when_it_is_the_widest():
    """A tiny llama (h 64, 4 heads and 4 KV heads of 16, MLP width 8): attention 2h + q 64 + k, v 4 x 32
    + out 64 + h = 448 elements beats the MLP's 2h + 2 x 8 + 8 + h = 216."""
    spec = llama_spec(hidden=64, heads=4, kv_heads=4, inter=8, vocab=100, layers=2)
    r = plan(spec, gpu="h100-sxm", max_model_len=16384, **KW).record
    assert r["activation_bytes_per_gpu"] == 8192 * 2 * (2 * 64 + 64 + 4 * 32 + 64 + 64)


def test_a_pipeline_stage_without_caches():
    """PP 2 of a 2-layer model whose second layer is MLP-only: that stage holds no KV and no state; the
    pool is the attention stage's: 20 GiB // (16 tokens x 4 KV heads x 16 x 2 x 2 bytes)."""
    spec = llama_spec(hidden=64, heads=4, kv_heads=4, inter=128, vocab=100, layers=2)
    spec = spec.with_layers((LayerSpec(), LayerSpec(mixers=())))
    r = plan(spec, gpu="h100-sxm", pp=2, max_model_len=16384, **KW).record
    assert r["kv_pool_blocks"] == 20 * GIB // (16 * 4 * 16 * 2 * 2)


def test_decode_flops_are_the_ops_not_the_total_twice():
    """llama3.1-8b, one token at context 4096: 2 x (32 layers' q, k, v, o and gated-MLP weights + the LM
    head) + QK and PV (2 x 2 x 32 heads x 128 x 4096 keys x 32 layers); elementwise adds 3e-5."""
    dep = build_deployment("llama3.1-8b")
    per_layer = 4096 * 4096 * 2 + 4096 * 1024 * 2 + 3 * 4096 * 14336
    hand = 2 * (per_layer * 32 + 4096 * 128256) + 4 * 32 * 128 * 4096 * 32
    assert float(decode_parts(dep, [4096]).flops_per_gpu[0]) == pytest.approx(hand, rel=1e-4)
