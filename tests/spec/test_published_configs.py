"""Published config.json files (tests/data/configs/<org>--<name>/, provenance in each SOURCE.md)
against hand arithmetic: KV-cache bytes per token at 4k and 128k, and total / active parameters.

Every expected value is derived below from the config's numbers with the formula written out (bf16 KV:
2 bytes; K and V: x2). The loader and the cost model are only the things under test: nothing
here is computed by calling lcprof's own formulas. Where a published total is known (model card),
it is asserted within a stated tolerance and the gap is explained.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lcprof.cost.model import kv_bytes
from lcprof.spec import param_counts, spec_from_config

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"
N4K, N128K = 4096, 131072


def load(name: str):
    cfg = json.loads((CONFIGS / name / "config.json").read_text())
    return spec_from_config(cfg, name=name, where=name)


def kv_per_token(spec):
    """KV bytes per token of context at n = 4k and 128k (bf16): kv_bytes(n) / n."""
    kv = kv_bytes(spec, [N4K, N128K], kv_dtype="bf16")
    return kv[0] / N4K, kv[1] / N128K


def check(name, kv4k, kv128k, total, active):
    spec = load(name)
    got4, got128 = kv_per_token(spec)
    assert (got4, got128) == (kv4k, kv128k), (name, got4, got128)
    pc = param_counts(spec)
    assert pc["total_params"] == total, (name, pc["total_params"] - total)
    assert pc["active_params"] == active, (name, pc["active_params"] - active)
    return spec, pc


def within(value, published, rel):
    return abs(value / published - 1) <= rel


# ------------------------------------------------------------------------------------------------
# dense GQA
# ------------------------------------------------------------------------------------------------

def test_llama31_8b():
    # KV: 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 B = 131072 per token at every n
    kv = 32 * 8 * 128 * 2 * 2
    # per layer: q, o 2 x 4096^2; k, v 2 x 4096 x 1024; gated MLP 3 x 4096 x 14336; 2 RMSNorms
    layer = 2 * 4096 ** 2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    total = 32 * layer + 2 * 128256 * 4096 + 4096  # untied embedding + lm_head, final norm
    assert total == 8_030_261_248  # the 8.03B of the model card
    check("meta-llama--Meta-Llama-3.1-8B", kv, kv, total, total)


def test_llama31_70b():
    kv = 80 * 8 * 128 * 2 * 2  # 327680
    layer = 2 * 8192 ** 2 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192
    total = 80 * layer + 2 * 128256 * 8192 + 8192
    assert total == 70_553_706_496
    check("meta-llama--Meta-Llama-3.1-70B", kv, kv, total, total)


def test_qwen3_8b_qk_norm():
    # Qwen3: per-head q/k RMSNorm weights (2 x head_dim per layer); no biases; untied
    kv = 36 * 8 * 128 * 2 * 2  # 147456
    layer = 4096 * 4096 + 2 * 4096 * 1024 + 4096 * 4096 + 2 * 128 + 3 * 4096 * 12288 + 2 * 4096
    total = 36 * layer + 2 * 151936 * 4096 + 4096
    _, pc = check("Qwen--Qwen3-8B", kv, kv, total, total)
    assert within(total, 8.2e9, 0.005)  # model card: 8.2B


def test_mistral_7b_sliding_window():
    # W = 4096 on every layer: at 4k nothing is capped (32 x 8 x 128 x 4 = 131072 per token);
    # at 128k each layer holds 4096 tokens: 131072 x 4096 / 131072 = 4096 B per token of context
    per_tok = 32 * 8 * 128 * 2 * 2
    layer = 2 * 4096 ** 2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    total = 32 * layer + 2 * 32000 * 4096 + 4096
    check("mistralai--Mistral-7B-v0.1", per_tok, per_tok * 4096 / N128K, total, total)


def test_phi3_mini_4k_and_128k():
    # 4k: sliding_window 2047 < 4096 positions -> every layer holds min(n, 2047) tokens;
    # per layer-token 32 heads x 96 x 4 = 12288 B, x 32 layers = 393216
    per_tok = 32 * 32 * 96 * 2 * 2
    layer = 4 * 3072 ** 2 + 3 * 3072 * 8192 + 2 * 3072  # MHA; fused qkv/gate_up, no biases
    total = 32 * layer + 2 * 32064 * 3072 + 3072
    check("microsoft--Phi-3-mini-4k-instruct", per_tok * 2047 / N4K, per_tok * 2047 / N128K, total, total)
    # 128k: sliding_window 262144 >= 131072 positions masks nothing: global layers
    check("microsoft--Phi-3-mini-128k-instruct", per_tok, per_tok, total, total)


def test_qwen25_7b_qkv_bias():
    kv = 28 * 4 * 128 * 2 * 2  # 57344
    # q/k/v biases 3584 + 2 x 512 per layer (transformers' Qwen2 always has them)
    layer = 2 * 3584 ** 2 + 2 * 3584 * 512 + (3584 + 2 * 512) + 3 * 3584 * 18944 + 2 * 3584
    total = 28 * layer + 2 * 152064 * 3584 + 3584
    assert total == 7_615_616_512  # model card: 7.61B
    check("Qwen--Qwen2.5-7B-Instruct", kv, kv, total, total)


def test_smollm3_3b_nope_every_fourth_layer():
    """SmolLM3-3B: NoPE on layers 3, 7, ..., 35 (no_rope_layers 1,1,1,0 x 9); every layer global, so the
    NoPE layers cache K/V like the others."""
    kv = 36 * 4 * 128 * 2 * 2  # 36 layers x 4 KV heads x 128 x (K, V) x 2 B = 73728 per token
    # per layer: q, o 2 x 2048^2; k, v 2 x 2048 x 512; gated MLP 3 x 2048 x 11008; 2 RMSNorms
    layer = 2 * 2048 ** 2 + 2 * 2048 * 512 + 3 * 2048 * 11008 + 2 * 2048
    total = 36 * layer + 128256 * 2048 + 2048  # tied embeddings, final norm
    assert total == 3_075_098_624  # the Hub's 3.08B
    spec, _ = check("HuggingFaceTB--SmolLM3-3B", kv, kv, total, total)
    assert [i for i, lyr in enumerate(spec.layers) if not lyr.rope] == list(range(3, 36, 4))
    assert {lyr.attn for lyr in spec.layers} == {"global"} and spec.rope.theta == 5e6
    assert spec.tie_embeddings and not spec.qkv_bias and not spec.o_bias


def test_seed_oss_36b_biases_and_512k():
    """Seed-OSS-36B: q/k/v biased (attention_bias), o_proj not (attention_out_bias false), 512k positions."""
    kv = 64 * 8 * 128 * 2 * 2  # 262144 per token: 128 GiB for one 512k sequence
    # per layer: q 5120 x 10240 + bias, k, v 2 x (5120 x 1024 + 1024), o 10240 x 5120, MLP 3 x 5120 x 27648, 2 norms
    layer = (5120 * 10240 + 10240) + 2 * (5120 * 1024 + 1024) + 10240 * 5120 + 3 * 5120 * 27648 + 2 * 5120
    total = 64 * layer + 2 * 155136 * 5120 + 5120  # untied embedding + lm_head, final norm
    assert total == 36_151_104_512  # model card: 36B
    spec, _ = check("ByteDance-Seed--Seed-OSS-36B-Instruct", kv, kv, total, total)
    assert spec.qkv_bias and not spec.o_bias and spec.max_position_embeddings == 524288
    assert int(kv_bytes(spec, 524288, kv_dtype="bf16")[0]) == 128 * 2 ** 30


def test_olmo3_7b_output_norms_and_sliding():
    """OLMo 3 7B: MHA (32 KV heads), 24 sliding layers (W 4096) and 8 full ones (every 4th); norms on each
    block's output; q and k normed over all heads (4096 wide each)."""
    per_layer = 32 * 128 * 2 * 2  # 16384 B per token per layer
    kv4k = 32 * per_layer  # every layer holds all 4096 tokens: 524288
    kv128k = 8 * per_layer + 24 * per_layer * 4096 / N128K  # 131072 + 12288 = 143360
    # per layer: q, k, v, o 4 x 4096^2; MLP 3 x 4096 x 11008; 2 RMSNorms; q_norm and k_norm of 4096 each
    layer = 4 * 4096 ** 2 + 3 * 4096 * 11008 + 2 * 4096 + 2 * 4096
    total = 32 * layer + 2 * 100278 * 4096 + 4096  # untied, final norm
    assert total == 7_298_011_136  # the model card's 7B
    spec, _ = check("allenai--Olmo-3-1025-7B", kv4k, kv128k, total, total)
    assert spec.output_norms and spec.qk_norm == "full"
    assert [i for i, lyr in enumerate(spec.layers) if lyr.attn == "global"] == list(range(3, 32, 4))
    assert (spec.rope.type, spec.rope.factor, spec.rope.original_max_position) == ("yarn", 8.0, 8192)


def test_glm4_9b_0414_sandwich_norms_partial_rope():
    """GLM-4-9B-0414: 2 KV heads of 128 on 40 global layers; q/k/v biased (never o); RoPE on half of each head;
    four RMSNorms per layer (before and after attention and the MLP)."""
    kv = 40 * 2 * 128 * 2 * 2  # 40960 B per token
    # per layer: q 4096^2 + 4096 bias; k, v 2 x (4096 x 256 + 256); o 4096^2; MLP 3 x 4096 x 13696; 4 norms
    layer = (4096 ** 2 + 4096) + 2 * (4096 * 256 + 256) + 4096 ** 2 + 3 * 4096 * 13696 + 4 * 4096
    total = 40 * layer + 2 * 151552 * 4096 + 4096  # untied embedding + lm_head, final norm
    assert total == 9_400_279_040  # model card: 9B
    spec, _ = check("zai-org--GLM-4-9B-0414", kv, kv, total, total)
    assert (spec.norms_per_layer, spec.rope.rotary_dim, spec.rope.theta) == (4, 64, 1e4)
    assert spec.qkv_bias and not spec.o_bias and spec.max_position_embeddings == 32768


def test_glm4_32b_0414_no_bias():
    """GLM-4-32B-0414: 61 layers, 48 heads, 2 KV heads; no attention bias (unlike the 9B)."""
    kv = 61 * 2 * 128 * 2 * 2  # 62464 B per token
    layer = 2 * 6144 ** 2 + 2 * 6144 * 256 + 3 * 6144 * 23040 + 4 * 6144
    total = 61 * layer + 2 * 151552 * 6144 + 6144
    assert total == 32_566_081_536  # llama.cpp's load log: 32.57 B
    spec, _ = check("zai-org--GLM-4-32B-0414", kv, kv, total, total)
    assert not spec.qkv_bias and spec.rope.rotary_dim == 64


def test_granite_33_8b_mup_scalars():
    """Granite 3.3 8B: 8 KV heads of 128, 128k positions, RoPE base 1e7; tied embeddings; the muP scalars as
    published (softmax scale 1/128, block outputs x 0.22, embeddings x 12, logits / 16)."""
    kv = 40 * 8 * 128 * 2 * 2  # 163840 B per token
    layer = 2 * 4096 ** 2 + 2 * 4096 * 1024 + 3 * 4096 * 12800 + 2 * 4096
    total = 40 * layer + 49159 * 4096 + 4096
    assert total == 8_170_864_640  # the checkpoint's safetensors total
    spec, _ = check("ibm-granite--granite-3.3-8b-instruct", kv, kv, total, total)
    assert (spec.attn_scale, spec.embedding_multiplier, spec.logits_scaling) == (0.0078125, 12.0, 16.0)
    assert spec.residual_factors == ((None, 0.22),) * 3 and spec.rope.theta == 1e7
    assert spec.max_position_embeddings == 131072 and spec.tie_embeddings


def test_hunyuan_7b_ntk_alpha_and_qk_norms_after_rope():
    """Hunyuan-7B (hunyuan_v1_dense): 32 global layers of GQA (8 KV heads), q/k normed per head after RoPE,
    NTK-alpha RoPE (alpha 1000: base 1e4 x 1000^(128/126) = 1.116e7), 256k positions, tied embeddings."""
    kv = 32 * 8 * 128 * 2 * 2  # 131072 B per token: 32 GiB for one 256k sequence
    # per layer: q, o 2 x 4096^2; k, v 2 x 4096 x 1024; MLP 3 x 4096 x 14336; 2 RMSNorms; q/k norms 2 x 128
    layer = 2 * 4096 ** 2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096 + 2 * 128
    total = 32 * layer + 128167 * 4096 + 4096
    assert total == 7_504_568_320
    spec, _ = check("tencent--Hunyuan-7B-Instruct", kv, kv, total, total)
    assert spec.rope.theta == pytest.approx(10000 * 1000 ** (128 / 126), rel=1e-12)
    assert spec.qk_norm_after_rope and spec.max_position_embeddings == 262144
    assert int(kv_bytes(spec, 262144, kv_dtype="bf16")[0]) == 32 * 2 ** 30


def test_lfm2_1_2b_short_convs():
    """LFM2-1.2B: 10 gated short-conv layers (3 taps over 2048 channels) and 6 attention layers (2, 5, 8, 10, 12,
    14; 8 KV heads of 64, per-head q/k norms); the MLP width block_ff_dim 12288 auto-adjusted to
    int(2 x 12288 / 3) = 8192; embeddings tied (Lfm2Config's default)."""
    kv = 6 * 8 * 64 * 2 * 2  # 12288 B per token
    conv = 2048 * 3 * 2048 + 2048 * 2048 + 2048 * 3  # in_proj (B, C, x), out_proj, the 3-tap conv
    attn = 2 * 2048 ** 2 + 2 * 2048 * 512 + 2 * 64  # q, out_proj, k, v; q/k norms
    mlp = 3 * 2048 * 8192
    total = 10 * conv + 6 * attn + 16 * (mlp + 2 * 2048) + 65536 * 2048 + 2048
    assert total == 1_170_340_608  # the model card's count
    spec, _ = check("LiquidAI--LFM2-1.2B", kv, kv, total, total)
    assert [i for i, lyr in enumerate(spec.layers) if lyr.has_attention] == [2, 5, 8, 10, 12, 14]
    assert spec.intermediate_size == 8192 and spec.tie_embeddings and spec.qk_norm == "head"
    from lcprof.cost.model import state_bytes

    # conv state per sequence: 10 layers x 2048 channels x (3 - 1) inputs x 2 B (vLLM's (L_cache - 1, dim))
    assert state_bytes(spec, dtype="bf16") == 10 * 2048 * 2 * 2 == 81_920


def test_lfm2_8b_a1b_short_convs_and_experts():
    """LFM2-8B-A1B: 18 short-conv and 6 attention layers (2, 6, 10, 14, 18, 21); layers 0-1 a dense SwiGLU of 7168,
    the other 22 route 4 of 32 experts of 1792 (sigmoid router 2048 x 32); tied embeddings."""
    kv = 6 * 8 * 64 * 2 * 2  # 12288 B per token
    conv = 2048 * 3 * 2048 + 2048 * 2048 + 2048 * 3
    attn = 2 * 2048 ** 2 + 2 * 2048 * 512 + 2 * 64
    dense, expert, router = 3 * 2048 * 7168, 3 * 2048 * 1792, 2048 * 32
    common = 18 * conv + 6 * attn + 2 * dense + 24 * 2 * 2048 + 65536 * 2048 + 2048
    total = common + 22 * (router + 32 * expert)
    active = common + 22 * (router + 4 * expert)
    assert (total, active) == (8_339_929_856, 1_557_740_288)  # the card: 8.3B total, 1.5B active
    spec, _ = check("LiquidAI--LFM2-8B-A1B", kv, kv, total, active)
    assert [i for i, lyr in enumerate(spec.layers) if lyr.has_attention] == [2, 6, 10, 14, 18, 21]
    assert [i for i, lyr in enumerate(spec.layers) if not lyr.moe] == [0, 1]
    from lcprof.cost.model import state_bytes

    assert state_bytes(spec, dtype="bf16") == 18 * 2048 * 2 * 2  # 18 conv layers x (L_cache - 1) x 2048 x 2 B


def test_phi4_mini_partial_longrope():
    """Phi-4-mini: RoPE on 96 of 128 dims (partial_rotary_factor 0.75) with LongRoPE's 48 factors per list, x32
    from 4096; tied 200064-token embeddings; sliding_window 262144 exceeds the 131072 positions: every layer global."""
    kv = 32 * 8 * 128 * 2 * 2  # 131072 B per token
    layer = 2 * 3072 ** 2 + 2 * 3072 * 1024 + 3 * 3072 * 8192 + 2 * 3072
    total = 32 * layer + 200064 * 3072 + 3072
    assert total == 3_836_021_760  # card: 3.8B
    spec, _ = check("microsoft--Phi-4-mini-instruct", kv, kv, total, total)
    assert (spec.rope.type, spec.rope.rotary_dim, len(spec.rope.long_factor)) == ("longrope", 96, 48)
    assert spec.rope.factor == 131072 / 4096 and spec.rope.long_factor[-1] == 47.77 and spec.tie_embeddings


@pytest.mark.parametrize("name,h,layers,heads,hd,total", [
    # per layer: q, o 2 x h x heads hd; k, v 2 x h x 8 x hd; MLP 3 x h x 8192; 2 norms; tied 128256-token table
    ("meta-llama--Llama-3.2-1B-Instruct", 2048, 16, 32, 64, 1_235_814_400),  # card: 1.23B
    ("meta-llama--Llama-3.2-3B-Instruct", 3072, 28, 24, 128, 3_212_749_824),  # card: 3.21B
])
def test_llama32_small_tied(name, h, layers, heads, hd, total):
    layer = 2 * h * heads * hd + 2 * h * 8 * hd + 3 * h * 8192 + 2 * h
    assert layers * layer + 128256 * h + h == total
    kv = layers * 8 * hd * 2 * 2
    spec, _ = check(name, kv, kv, total, total)
    assert (spec.rope.type, spec.rope.factor, spec.rope.original_max_position) == ("llama3", 32.0, 8192)
    assert spec.tie_embeddings and spec.rope.theta == 5e5


def test_gemma3_1b_window_512_every_sixth_global():
    """Gemma 3 1B: 1 KV head of 256; 22 sliding layers (W 512) and the global ones 5, 11, 17, 23; four norms and
    q/k norms per layer; tied 262144-token embeddings."""
    per_layer = 1 * 256 * 2 * 2  # 1024 B per token per layer
    kv4k = (4 * N4K + 22 * 512) * per_layer / N4K  # 6912
    kv128k = (4 * N128K + 22 * 512) * per_layer / N128K  # 4184
    layer = 2 * 1152 * 1024 + 2 * 1152 * 256 + 3 * 1152 * 6912 + 4 * 1152 + 2 * 256
    total = 26 * layer + 262144 * 1152 + 1152
    assert total == 999_885_952  # card: 1B
    spec, _ = check("google--gemma-3-1b-it", kv4k, kv128k, total, total)
    assert [i for i, lyr in enumerate(spec.layers) if lyr.attn == "global"] == [5, 11, 17, 23]
    assert spec.max_position_embeddings == 32768 and spec.query_pre_attn_scalar == 256


def test_mistral_small_31_text_model_of_a_wrapper():
    """Mistral Small 3.1 (mistral3 wrapper): the text model, hidden 5120 with 32 heads of 128 (q 4096 wide), 8 KV
    heads, FFN 32768, 40 global layers, rope_theta 1e9, untied."""
    kv = 40 * 8 * 128 * 2 * 2  # 163840 B per token
    layer = 2 * 5120 * 4096 + 2 * 5120 * 1024 + 3 * 5120 * 32768 + 2 * 5120
    total = 40 * layer + 2 * 131072 * 5120 + 5120
    assert total == 23_572_403_200  # the card's 24B with the vision tower
    spec, _ = check("mistralai--Mistral-Small-3.1-24B-Instruct-2503", kv, kv, total, total)
    assert spec.text_model_of == "mistral3" and spec.rope.theta == 1e9 and not spec.tie_embeddings


def test_qwen25_vl_7b_text_model_of_a_flat_config():
    """Qwen2.5-VL-7B, as published (flat): the text model is Qwen2.5-7B's shape with M-RoPE [16, 24, 24] over 128
    dims; sliding_window 32768 without use_sliding_window slides nothing."""
    kv = 28 * 4 * 128 * 2 * 2  # 57344
    layer = 2 * 3584 ** 2 + 2 * 3584 * 512 + (3584 + 2 * 512) + 3 * 3584 * 18944 + 2 * 3584
    total = 28 * layer + 2 * 152064 * 3584 + 3584
    assert total == 7_615_616_512
    spec, _ = check("Qwen--Qwen2.5-VL-7B-Instruct", kv, kv, total, total)
    assert spec.text_model_of == "qwen2_5_vl" and spec.rope.rotary_dim == 128 and spec.max_position_embeddings == 128000


def test_mistral_nemo_head_dim_128_and_1m_positions():
    """Mistral-Nemo: head_dim 128 with hidden 5120 and 32 heads (q 4096 wide, not 5120), 1024000 positions,
    no window."""
    kv = 40 * 8 * 128 * 2 * 2  # 163840
    layer = 2 * 5120 * 4096 + 2 * 5120 * 1024 + 3 * 5120 * 14336 + 2 * 5120
    total = 40 * layer + 2 * 131072 * 5120 + 5120
    assert total == 12_247_782_400  # card: 12B; ollama's parameter_count
    spec, _ = check("mistralai--Mistral-Nemo-Instruct-2407", kv, kv, total, total)
    assert spec.max_position_embeddings == 1_024_000 and {lyr.attn for lyr in spec.layers} == {"global"}


@pytest.mark.parametrize("name,h,layers,heads,inter,tie,total", [
    # per layer: q, o 2 x h x heads x 128; k, v 2 x h x 8 x 128; MLP 3 x h x inter; 2 norms; q/k norms 2 x 128
    ("Qwen--Qwen3-32B", 5120, 64, 64, 25600, False, 32_762_123_264),  # the safetensors total
    ("Qwen--Qwen3-4B", 2560, 36, 32, 9728, True, 4_022_468_096),  # card: 4.0B
])
def test_qwen3_dense(name, h, layers, heads, inter, tie, total):
    layer = 2 * h * heads * 128 + 2 * h * 8 * 128 + 3 * h * inter + 2 * h + 2 * 128
    assert layers * layer + (1 if tie else 2) * 151936 * h + h == total
    kv = layers * 8 * 128 * 2 * 2
    spec, _ = check(name, kv, kv, total, total)
    assert spec.tie_embeddings == tie and spec.qk_norm == "head"


def test_r1_distill_qwen_32b():
    """DeepSeek-R1-Distill-Qwen-32B: Qwen2.5-32B's layer (q/k/v biased), sliding_window 131072 unused."""
    kv = 64 * 8 * 128 * 2 * 2  # 262144
    layer = 2 * 5120 ** 2 + 2 * 5120 * 1024 + (5120 + 2 * 1024) + 3 * 5120 * 27648 + 2 * 5120
    total = 64 * layer + 2 * 152064 * 5120 + 5120
    assert total == 32_763_876_352  # the safetensors total
    spec, _ = check("deepseek-ai--DeepSeek-R1-Distill-Qwen-32B", kv, kv, total, total)
    assert {lyr.attn for lyr in spec.layers} == {"global"} and spec.qkv_bias


def test_qwen3_coder_30b_a3b_256k():
    """Qwen3-Coder-30B-A3B: Qwen3-30B-A3B's shapes (48 layers, 4 KV heads of 128, 128 experts of 768, 8 active) with
    262144 positions and rope_theta 1e7; the remote-code fields qkv_bias / use_qk_norm / shared_expert_intermediate_size
    at the values that change nothing."""
    kv = 48 * 4 * 128 * 2 * 2  # 98304 B per token: 24 GiB for one 256k sequence
    attn = 2 * 2048 * 4096 + 2 * 2048 * 512 + 2 * 128
    expert = 3 * 2048 * 768
    common = 48 * (attn + 2048 * 128 + 2 * 2048) + 2 * 151936 * 2048 + 2048
    total, active = common + 48 * 128 * expert, common + 48 * 8 * expert
    assert (total, active) == (30_532_122_624, 3_353_032_704)  # card: 30.5B, 3.3B
    spec, _ = check("Qwen--Qwen3-Coder-30B-A3B-Instruct", kv, kv, total, active)
    assert spec.max_position_embeddings == 262144 and spec.rope.theta == 1e7


def test_llama33_70b():
    kv = 80 * 8 * 128 * 2 * 2  # 327680 B per token
    layer = 2 * 8192 ** 2 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192
    total = 80 * layer + 2 * 128256 * 8192 + 8192
    assert total == 70_553_706_496  # card: 70B
    spec, _ = check("meta-llama--Llama-3.3-70B-Instruct", kv, kv, total, total)
    assert (spec.rope.type, spec.rope.factor) == ("llama3", 8.0)


def test_phi35_mini_longrope():
    """Phi-3.5-mini: Phi-3-mini-128k's shapes (MHA, 32 heads of 96) with its own 48 LongRoPE factors per list."""
    kv = 32 * 32 * 96 * 2 * 2  # 393216 B per token
    layer = 4 * 3072 ** 2 + 3 * 3072 * 8192 + 2 * 3072
    total = 32 * layer + 2 * 32064 * 3072 + 3072
    assert total == 3_821_079_552  # the leaderboard's 3.821B
    spec, _ = check("microsoft--Phi-3.5-mini-instruct", kv, kv, total, total)
    assert spec.rope.long_factor[0] == 1.0800000429153442 and spec.rope.long_factor[-1] == 64.83999633789062
    assert len(spec.rope.short_factor) == 48 and spec.rope.original_max_position == 4096


def test_gemma3_12b_text_model():
    """Gemma 3 12B (gemma3 wrapper): 8 KV heads of 256, 40 sliding layers (W 1024) and 8 global ones (every 6th),
    linear RoPE x8 on the global base; tied 262208-token embeddings."""
    per_layer = 8 * 256 * 2 * 2  # 8192 B per token per layer
    kv4k = (8 * N4K + 40 * 1024) * per_layer / N4K  # 81920
    kv128k = (8 * N128K + 40 * 1024) * per_layer / N128K  # 68096
    layer = 2 * 3840 * 4096 + 2 * 3840 * 2048 + 3 * 3840 * 15360 + 4 * 3840 + 2 * 256
    total = 48 * layer + 262208 * 3840 + 3840
    assert total == 11_766_034_176  # the card's 12B with the vision tower
    spec, _ = check("google--gemma-3-12b-it", kv4k, kv128k, total, total)
    assert [i for i, lyr in enumerate(spec.layers) if lyr.attn == "global"] == list(range(5, 48, 6))


def _granite4(h, heads, kv, experts, top, width, shared, mamba_heads):
    """(total, active) of a Granite 4.0-H config by hand: 36 Mamba-2 layers (heads of 64, one group of state 128,
    conv 4 with bias: in_proj h -> 2 d + 2 x 128 + heads, the conv over d + 256 channels, dt_bias / A_log / D, the
    gated norm over d, out_proj d -> h), 4 NoPE attention layers (heads of 128), every layer routing top of
    experts plus the shared MLP, 2 norms each; tied 100352-token embeddings."""
    d = mamba_heads * 64
    mamba = h * (2 * d + 256 + mamba_heads) + (d + 256) * 5 + 3 * mamba_heads + d + d * h
    attn = 2 * h * heads * 128 + 2 * h * kv * 128
    moe_common = h * experts + 3 * h * shared + 2 * h
    common = 36 * mamba + 4 * attn + 100352 * h + h
    return common + 40 * (moe_common + experts * 3 * h * width), common + 40 * (moe_common + top * 3 * h * width)


@pytest.mark.parametrize("name,dims,card", [
    ("ibm-granite--granite-4.0-h-small", (4096, 32, 8, 72, 10, 768, 1536, 128), (32_207_337_984, 8_803_121_664)),
    ("ibm-granite--granite-4.0-h-tiny", (1536, 12, 4, 64, 6, 512, 1024, 48), (6_939_037_248, 1_465_470_528)),
])
def test_granite4_h(name, dims, card):
    """Granite 4.0-H small (32B, 9B active) and tiny (7B, 1B active): attention on layers 5, 15, 25, 35 only."""
    total, active = _granite4(*dims)
    assert (total, active) == card
    kv = 4 * dims[2] * 128 * 2 * 2
    spec, _ = check(name, kv, kv, total, active)
    assert [i for i, lyr in enumerate(spec.layers) if lyr.has_attention] == [5, 15, 25, 35]


def test_nemotron_nano_9b_v2():
    """Nemotron-Nano-9B-v2: 27 Mamba-2 (128 heads of 80, 8 groups of state 128, conv 4 with bias), 4 attention (40 heads
    of 128, 8 KV heads) and 25 ReLU^2 MLP layers (15680), one norm each; untied."""
    h, d = 4480, 128 * 80
    mamba = h * (2 * d + 2 * 8 * 128 + 128) + (d + 2 * 8 * 128) * 5 + 3 * 128 + d + d * h
    attn = 2 * h * 40 * 128 + 2 * h * 8 * 128
    mlp = 2 * h * 15680
    total = 27 * mamba + 4 * attn + 25 * mlp + 56 * h + 2 * 131072 * h + h
    assert total == 8_888_227_328  # card: 9B
    kv = 4 * 8 * 128 * 2 * 2  # 16384 B per token
    spec, _ = check("nvidia--NVIDIA-Nemotron-Nano-9B-v2", kv, kv, total, total)
    assert spec.layer_kinds == {"mamba2": 27, "mlp": 25, "global": 4}
    assert [i for i, lyr in enumerate(spec.layers) if lyr.has_attention] == [14, 21, 30, 39]


def test_command_r7b_parallel_block():
    """Command R7B: 24 sliding layers (W 4096, RoPE) and 8 global ones (every 4th, no RoPE); attention and
    the MLP read one LayerNorm (weight only) per layer; logits x 0.25."""
    per_layer = 8 * 128 * 2 * 2  # 4096 B per token per layer
    kv4k = 32 * per_layer  # 131072
    kv128k = 8 * per_layer + 24 * per_layer * 4096 / N128K  # 32768 + 3072 = 35840
    # per layer: q, o 2 x 4096^2; k, v 2 x 4096 x 1024; MLP 3 x 4096 x 14336; ONE norm of 4096
    layer = 2 * 4096 ** 2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 4096
    total = 32 * layer + 256000 * 4096 + 4096  # tied embeddings, final norm
    assert total == 8_028_033_024  # the Hub's 8.03B
    spec, _ = check("CohereLabs--c4ai-command-r7b-12-2024", kv4k, kv128k, total, total)
    assert spec.parallel_block and spec.layer_norm and spec.norms_per_layer == 1 and spec.logits_scaling == 4.0
    assert [i for i, lyr in enumerate(spec.layers) if not lyr.rope] == list(range(3, 32, 4))
    assert {lyr.window for lyr in spec.layers if lyr.rope} == {4096}


def test_qwen3_vl_8b_text_model_from_the_wrapper():
    """Qwen3-VL-8B: the qwen3_vl wrapper's text_config, Qwen3-8B's shapes: GQA 32/8 with per-head q/k norms,
    interleaved M-RoPE (sections 24 + 20 + 20 = 64 pairs = head_dim 128), 262144 positions; the vision tower
    is not counted."""
    kv = 36 * 8 * 128 * 2 * 2  # 147456 per token
    # per layer: q, o 2 x 4096^2; k, v 2 x 4096 x 1024; MLP 3 x 4096 x 12288; 2 RMSNorms; q/k norms 2 x 128
    layer = 2 * 4096 ** 2 + 2 * 4096 * 1024 + 3 * 4096 * 12288 + 2 * 4096 + 2 * 128
    total = 36 * layer + 2 * 151936 * 4096 + 4096  # untied
    assert total == 8_190_735_360  # Qwen3-8B's text model, the same count
    spec, _ = check("Qwen--Qwen3-VL-8B-Instruct", kv, kv, total, total)
    assert spec.text_model_of == "qwen3_vl" and spec.qk_norm == "head" and spec.max_position_embeddings == 262144
    assert spec.rope.rotary_dim == 128 and spec.rope.theta == 5e6 and {lyr.attn for lyr in spec.layers} == {"global"}


# ------------------------------------------------------------------------------------------------
# alternating local/global, chunked, sinks
# ------------------------------------------------------------------------------------------------

def test_gemma2_9b_alternating():
    # 42 layers, 8 KV heads x 256 x 4 = 8192 B per layer-token; even layers sliding (W 4096)
    lt = 8 * 256 * 2 * 2
    kv4k = 42 * lt  # nothing capped at 4k
    kv128k = (21 * 4096 + 21 * N128K) * lt / N128K  # 21 x 8192 x (1 + 1/32) = 177408
    layer = 3584 * 4096 + 2 * 3584 * 2048 + 4096 * 3584 + 3 * 3584 * 14336 + 4 * 3584  # 4 norms
    total = 42 * layer + 256000 * 3584 + 3584  # tied embeddings
    assert total == 9_241_705_984
    check("google--gemma-2-9b", kv4k, kv128k, total, total)


def test_gemma3_27b_defaults_and_pattern():
    # The published text_config omits vocab_size, max positions and the layer pattern: transformers'
    # defaults apply -- every sixth layer global (10 of 62), the 52 others sliding with W = 1024.
    # 16 KV heads x 128 x 4 = 8192 B per layer-token.
    lt = 16 * 128 * 2 * 2
    kv4k = (52 * 1024 + 10 * N4K) * lt / N4K
    kv128k = (52 * 1024 + 10 * N128K) * lt / N128K
    assert (kv4k, kv128k) == (188_416, 85_248)  # the numbers
    # per layer: q 5376 x 4096, k/v 2 x 5376 x 2048, o 4096 x 5376, q/k norms 2 x 128,
    # GeGLU 3 x 5376 x 21504, 4 RMSNorms; vocab 262208 (default), tied
    layer = 5376 * 4096 + 2 * 5376 * 2048 + 4096 * 5376 + 2 * 128 + 3 * 5376 * 21504 + 4 * 5376
    total = 62 * layer + 262208 * 5376 + 5376
    spec, pc = check("google--gemma-3-27b-it", kv4k, kv128k, total, total)
    assert spec.text_model_of == "gemma3" and "vision tower" in spec.notes
    assert spec.query_pre_attn_scalar == 168 and spec.rope.type == "linear" and spec.rope.factor == 8.0
    # model card: 27B; the published 27.4B includes the SigLIP vision tower (~0.4B), not counted here
    assert within(total, 27.4e9, 0.02) and total < 27.4e9


def test_llama4_scout_instruct_chunked_and_equal_freq_factors():
    # RoPE layers attend in 8192-token chunks, every 4th (NoPE) layer globally: 36 chunked + 12 global;
    # 8 KV heads x 128 x 4 = 4096 B per layer-token
    lt = 8 * 128 * 2 * 2
    kv4k = 48 * lt
    kv128k = (36 * 8192 + 12 * N128K) * lt / N128K  # 58368
    attn = 5120 * 5120 + 2 * 5120 * 1024 + 5120 * 5120  # L2 q/k norm: no weights
    router, expert = 5120 * 16, 3 * 5120 * 8192
    layer_total = attn + router + 16 * expert + expert + 2 * 5120  # + one shared expert of the same width
    layer_active = attn + router + 1 * expert + expert + 2 * 5120
    emb = 2 * 202048 * 5120
    spec, pc = check("meta-llama--Llama-4-Scout-17B-16E-Instruct", kv4k, kv128k, 48 * layer_total + emb + 5120,
                     48 * layer_active + emb + 5120)
    # low_freq_factor == high_freq_factor == 1.0 (accepted, as transformers accepts it)
    assert (spec.rope.low_freq_factor, spec.rope.high_freq_factor, spec.rope.factor) == (1.0, 1.0, 16.0)
    # model card: 109B total with the vision encoder (~1.9B), 17B active
    assert within(pc["total_params"], 109e9, 0.02) and within(pc["active_params"], 17e9, 0.02)


def test_llama4_maverick_interleaved_moe():
    # interleave_moe_layer_step 2: layers 1, 3, ..., 47 MoE (128 experts + shared), the others dense 16384
    lt = 8 * 128 * 2 * 2
    attn = 2 * 5120 * 5120 + 2 * 5120 * 1024
    moe_total = 5120 * 128 + 128 * 3 * 5120 * 8192 + 3 * 5120 * 8192
    moe_active = 5120 * 128 + 2 * 3 * 5120 * 8192
    dense = 3 * 5120 * 16384
    norms = 48 * 2 * 5120 + 5120
    emb = 2 * 202048 * 5120
    total = 48 * attn + 24 * moe_total + 24 * dense + norms + emb
    active = 48 * attn + 24 * moe_active + 24 * dense + norms + emb
    check("meta-llama--Llama-4-Maverick-17B-128E-Instruct", 48 * lt, (36 * 8192 + 12 * N128K) * lt / N128K,
          total, active)
    assert within(total, 400e9, 0.01) and within(active, 17e9, 0.02)  # model card: 400B / 17B


def _gpt_oss(layers, experts):
    # attention: q 2880 x 64*64 (+b), k/v 2880 x 8*64 (+b), o 4096 x 2880 (+b), 64 sinks
    attn = (2880 * 4096 + 4096) + 2 * (2880 * 512 + 512) + (4096 * 2880 + 2880) + 64
    # each expert: gate_up 2880 x 5760 + bias 5760, down 2880 x 2880 + bias 2880; router 2880 x E + E
    expert = 2880 * 5760 + 5760 + 2880 * 2880 + 2880
    router = 2880 * experts + experts
    emb = 2 * 201088 * 2880
    total = layers * (attn + router + experts * expert + 2 * 2880) + emb + 2880
    active = layers * (attn + router + 4 * expert + 2 * 2880) + emb + 2880
    # 8 KV heads x 64 x 4 = 2048 B per layer-token; half the layers sliding (W 128)
    half = layers // 2
    kv4k = (half * 128 + half * N4K) * 2048 / N4K
    kv128k = (half * 128 + half * N128K) * 2048 / N128K
    return kv4k, kv128k, total, active, 201088 * 2880


def test_gpt_oss_20b_and_120b():
    kv4k, kv128k, total, active, emb = _gpt_oss(24, 32)
    spec, _ = check("openai--gpt-oss-20b", kv4k, kv128k, total, active)
    assert all(layer.sinks for layer in spec.layers)
    # OpenAI's model card: 20.91B total, 3.61B active -- its "active" counts the unembedding but
    # not the embedding table
    assert within(total, 20.91e9, 0.001) and within(active - emb, 3.61e9, 0.002)
    kv4k, kv128k, total, active, emb = _gpt_oss(36, 128)
    check("openai--gpt-oss-120b", kv4k, kv128k, total, active)
    assert within(total, 116.83e9, 0.001) and within(active - emb, 5.13e9, 0.002)


# ------------------------------------------------------------------------------------------------
# MoE
# ------------------------------------------------------------------------------------------------

def test_mixtral_8x7b():
    kv = 32 * 8 * 128 * 2 * 2
    attn = 2 * 4096 ** 2 + 2 * 4096 * 1024
    expert = 3 * 4096 * 14336
    total = 32 * (attn + 4096 * 8 + 8 * expert + 2 * 4096) + 2 * 32000 * 4096 + 4096
    active = 32 * (attn + 4096 * 8 + 2 * expert + 2 * 4096) + 2 * 32000 * 4096 + 4096
    check("mistralai--Mixtral-8x7B-v0.1", kv, kv, total, active)
    assert within(total, 46.7e9, 0.001) and within(active, 12.9e9, 0.002)  # Mistral's announcement


def test_qwen3_30b_a3b_num_experts_spelling():
    # Qwen3-MoE spells its expert count num_experts (128, top 8, width 768); no shared expert
    kv = 48 * 4 * 128 * 2 * 2
    attn = 2048 * 4096 + 2 * 2048 * 512 + 4096 * 2048 + 2 * 128
    expert = 3 * 2048 * 768
    emb = 2 * 151936 * 2048
    total = 48 * (attn + 2048 * 128 + 128 * expert + 2 * 2048) + emb + 2048
    active = 48 * (attn + 2048 * 128 + 8 * expert + 2 * 2048) + emb + 2048
    check("Qwen--Qwen3-30B-A3B", kv, kv, total, active)
    assert within(total, 30.5e9, 0.002) and within(active, 3.3e9, 0.02)  # model card: 30.5B / 3.3B


def test_qwen3_235b_a22b():
    kv = 94 * 4 * 128 * 2 * 2
    attn = 4096 * 8192 + 2 * 4096 * 512 + 8192 * 4096 + 2 * 128
    expert = 3 * 4096 * 1536
    emb = 2 * 151936 * 4096
    total = 94 * (attn + 4096 * 128 + 128 * expert + 2 * 4096) + emb + 4096
    active = 94 * (attn + 4096 * 128 + 8 * expert + 2 * 4096) + emb + 4096
    check("Qwen--Qwen3-235B-A22B", kv, kv, total, active)
    assert within(total, 235e9, 0.001) and within(active, 22e9, 0.01)


def _mla_layer(hidden, heads, q_rank, kv_rank, nope, rope, v):
    q = hidden * q_rank + q_rank + q_rank * heads * (nope + rope)  # q_a, its norm, q_b
    kv = hidden * (kv_rank + rope) + kv_rank + kv_rank * heads * (nope + v)  # kv_a (+ rope key), norm, kv_b
    return q + kv + heads * v * hidden


def _deepseek(layers, dense_layers, hidden, heads, inter, experts, shared, top_k, moe_w, vocab, mla):
    attn = _mla_layer(hidden, heads, *mla)
    expert = 3 * hidden * moe_w
    moe_total = hidden * experts + experts * expert + shared * expert
    moe_active = hidden * experts + top_k * expert + shared * expert
    common = layers * (attn + 2 * hidden) + dense_layers * 3 * hidden * inter + 2 * vocab * hidden + hidden
    return (common + (layers - dense_layers) * moe_total, common + (layers - dense_layers) * moe_active, attn)


def test_deepseek_v2_lite():
    # MLA: the 512 latent + 64 rope key are cached, one copy per layer: 27 x 576 x 2 B
    kv = 27 * (512 + 64) * 2
    hidden, heads = 2048, 16
    attn = hidden * heads * 192 + hidden * 576 + 512 + 512 * heads * (128 + 128) + heads * 128 * hidden  # no q LoRA
    expert = 3 * hidden * 1408
    total = 27 * (attn + 2 * hidden) + 3 * hidden * 10944 + 26 * (hidden * 64 + 64 * expert + 2 * expert) \
        + 2 * 102400 * hidden + hidden
    active = 27 * (attn + 2 * hidden) + 3 * hidden * 10944 + 26 * (hidden * 64 + 6 * expert + 2 * expert) \
        + 2 * 102400 * hidden + hidden
    assert total == 15_706_484_224
    check("deepseek-ai--DeepSeek-V2-Lite", kv, kv, total, active)
    # model card: 15.7B total, 2.4B activated -- the activated count leaves out the input embedding
    # (2.66B with it, 2.45B without)
    assert within(total, 15.7e9, 0.001) and within(active - 102400 * hidden, 2.4e9, 0.025)


def test_deepseek_v3():
    kv = 61 * (512 + 64) * 2  # 70272
    total, active, _ = _deepseek(61, 3, 7168, 128, 18432, 256, 1, 8, 2048, 129280, (1536, 512, 128, 64, 128))
    spec, _ = check("deepseek-ai--DeepSeek-V3", kv, kv, total, active)
    # README: 671B total / 37B activated, without the 11.5B MTP module (not loaded by transformers)
    assert within(total, 671e9, 0.001) and within(active, 37e9, 0.02)
    assert "multi-token-prediction" in spec.notes


def test_kimi_k2():
    kv = 61 * (512 + 64) * 2
    total, active, _ = _deepseek(61, 1, 7168, 64, 18432, 384, 1, 8, 2048, 163840, (1536, 512, 128, 64, 128))
    check("moonshotai--Kimi-K2-Instruct", kv, kv, total, active)
    assert within(total, 1.04e12, 0.02) and within(active, 32.9e9, 0.01)  # model card: 1T total / 32B active


def test_deepseek_v32_sparse_attention():
    # DSA: every layer keeps the whole MLA cache (576 bf16 values per token) and its indexer's key,
    # which vLLM stores in fp8 with one fp32 scale per 128 values whatever the KV dtype: 128 + 4 bytes
    kv = 61 * ((512 + 64) * 2 + 128 + 4)  # 78324
    total, active, _ = _deepseek(61, 3, 7168, 128, 18432, 256, 1, 8, 2048, 129280, (1536, 512, 128, 64, 128))
    # indexer per layer: wq_b 1536 x 64*128, wk 7168 x 128, LayerNorm 2 x 128, weights_proj 7168 x 64
    indexer = 1536 * 64 * 128 + 7168 * 128 + 2 * 128 + 7168 * 64
    spec, _ = check("deepseek-ai--DeepSeek-V3.2", kv, kv, total + 61 * indexer, active + 61 * indexer)
    assert spec.layer_kinds == {"sparse:top2048": 61}


def test_glm5_sparse_attention():
    kv = 78 * ((512 + 64) * 2 + 128 + 4)  # 100152: MLA bf16 + the indexer's fp8 key and fp32 scale
    total, active, _ = _deepseek(78, 3, 6144, 64, 12288, 256, 1, 8, 2048, 154880, (2048, 512, 192, 64, 256))
    indexer = 2048 * 32 * 128 + 6144 * 128 + 2 * 128 + 6144 * 32
    check("zai-org--GLM-5", kv, kv, total + 78 * indexer, active + 78 * indexer)
    assert within(total + 78 * indexer, 744e9, 0.002)  # announcement: 744B total (40B active)


def test_minimax_m25():
    # full attention, RMSNorm over the whole q (48 x 128) and k (8 x 128) widths; 256 experts, top 8
    kv = 62 * 8 * 128 * 2 * 2
    attn = 3072 * 6144 + 2 * 3072 * 1024 + 6144 * 3072 + (6144 + 1024)
    expert = 3 * 3072 * 1536
    emb = 2 * 200064 * 3072
    total = 62 * (attn + 3072 * 256 + 256 * expert + 2 * 3072) + emb + 3072
    active = 62 * (attn + 3072 * 256 + 8 * expert + 2 * 3072) + emb + 3072
    check("MiniMaxAI--MiniMax-M2.5", kv, kv, total, active)
    assert within(total, 229e9, 0.01)  # model card: 229B (230B) total, 10B active (without embeddings)


# ------------------------------------------------------------------------------------------------
# hybrids: KV in the attention layers only
# ------------------------------------------------------------------------------------------------

def _gdn(hidden, nk, nv, dk, dv, conv):
    key, val = nk * dk, nv * dv
    # in_proj_qkvz, in_proj_ba, depthwise conv over q,k,v (no bias), dt_bias, A_log, gated norm, out_proj
    return hidden * (2 * key + 2 * val) + hidden * 2 * nv + (2 * key + val) * conv + 2 * nv + dv + val * hidden


def test_qwen3_next_80b():
    # 12 full-attention layers hold KV: 12 x 2 x 2 KV heads x 256 x 2 B = 24576 per token (the number)
    kv = 12 * 2 * 2 * 256 * 2
    assert kv == 24_576
    # gated attention: q_proj twice as wide (16 x 256 x 2), per-head q/k norms
    attn = 2048 * 16 * 256 * 2 + 2 * 2048 * 2 * 256 + 16 * 256 * 2048 + 2 * 256
    gdn = _gdn(2048, 16, 32, 128, 128, 4)
    # MoE: router 2048 x 512, 512 experts of 3 x 2048 x 512, one shared of the same width, its sigmoid gate 2048
    expert = 3 * 2048 * 512
    moe_total = 2048 * 512 + 512 * expert + expert + 2048
    moe_active = 2048 * 512 + 10 * expert + expert + 2048
    emb = 2 * 151936 * 2048
    common = 12 * attn + 36 * gdn + 48 * 2 * 2048 + emb + 2048
    total, active = common + 48 * moe_total, common + 48 * moe_active
    assert (total, active) == (79_674_391_296, 3_874_929_408)
    spec, _ = check("Qwen--Qwen3-Next-80B-A3B-Thinking", kv, kv, total, active)
    assert spec.layer_kinds == {"gated_deltanet": 36, "global": 12}
    assert within(total, 80e9, 0.005)  # model card: 80B total, 3B active (3.9B with the embeddings)


def test_qwen35_dense_and_moe():
    # Qwen3.5-27B (text model): 16 of 64 layers full attention, 4 KV heads x 256
    kv = 16 * 4 * 256 * 2 * 2
    attn = 5120 * 24 * 256 * 2 + 2 * 5120 * 4 * 256 + 24 * 256 * 5120 + 2 * 256
    gdn = _gdn(5120, 16, 48, 128, 128, 4)
    total = 16 * attn + 48 * gdn + 64 * (3 * 5120 * 17408 + 2 * 5120) + 2 * 248320 * 5120 + 5120
    spec, _ = check("Qwen--Qwen3.5-27B", kv, kv, total, total)
    assert spec.text_model_of == "qwen3_5" and spec.rope.rotary_dim == 64  # 0.25 x 256, mRoPE sections 11+11+10
    # Qwen3.5-397B-A17B: 15 of 60 layers full attention, 2 KV heads x 256
    kv = 15 * 2 * 256 * 2 * 2
    attn = 4096 * 32 * 256 * 2 + 2 * 4096 * 2 * 256 + 32 * 256 * 4096 + 2 * 256
    gdn = _gdn(4096, 16, 64, 128, 128, 4)
    expert = 3 * 4096 * 1024
    common = 15 * attn + 45 * gdn + 60 * 2 * 4096 + 2 * 248320 * 4096 + 4096
    total = common + 60 * (4096 * 512 + 512 * expert + expert + 4096)
    active = common + 60 * (4096 * 512 + 10 * expert + expert + 4096)
    check("Qwen--Qwen3.5-397B-A17B", kv, kv, total, active)
    assert within(total, 397e9, 0.005) and within(active, 17e9, 0.03)  # name: 397B, 17B active


def test_jamba_15_mini():
    # attention every 8th layer from 4: 4 of 32 layers, 8 KV heads x 128: 4 x 8 x 128 x 4 = 16384
    kv = 4 * 8 * 128 * 2 * 2
    d = 2 * 4096
    # Mamba-1: in_proj 4096 x 2d, conv d x 4 + bias d, x_proj d x (256 + 32), dt_proj 256 x d + bias d,
    # A_log d x 16, D d, RMSNorms over dt (256), B (16), C (16), out_proj d x 4096
    mamba = 4096 * 2 * d + d * 4 + d + d * (256 + 2 * 16) + 256 * d + d + d * 16 + d + 256 + 16 + 16 + d * 4096
    attn = 2 * 4096 ** 2 + 2 * 4096 * 1024  # no positional encoding
    expert = 3 * 4096 * 14336
    moe_total, moe_active = 4096 * 16 + 16 * expert, 4096 * 16 + 2 * expert
    common = 4 * attn + 28 * mamba + 16 * expert + 32 * 2 * 4096 + 2 * 65536 * 4096 + 4096
    total, active = common + 16 * moe_total, common + 16 * moe_active
    spec, _ = check("ai21labs--AI21-Jamba-1.5-Mini", kv, kv, total, active)
    assert spec.rope is None and spec.layer_kinds == {"mamba": 28, "global": 4}
    assert within(total, 52e9, 0.01) and within(active, 12e9, 0.01)  # model card: 52B / 12B active


def _mamba2(hidden, heads, head_dim, state, groups, conv):
    d = heads * head_dim
    conv_dim = d + 2 * groups * state
    # in_proj h -> z, x, B, C, dt; conv (+ bias); dt_bias, A_log, D per head; gated norm d; out_proj
    return hidden * (d + conv_dim + heads) + conv_dim * conv + conv_dim + 3 * heads + d + d * hidden


def test_nemotron_h_56b():
    # 10 attention blocks ('*') of 118: 10 x 8 x 128 x 4 = 40960 (all 118 as attention would be 11.8x)
    kv = 10 * 8 * 128 * 2 * 2
    m2 = _mamba2(8192, 256, 64, 256, 8, 4)
    attn = 8192 * 8192 + 2 * 8192 * 1024 + 8192 * 8192
    mlp = 2 * 8192 * 32768  # ReLU^2, not gated
    total = 54 * m2 + 10 * attn + 54 * mlp + 118 * 8192 + 2 * 131072 * 8192 + 8192  # one norm per block
    check("nvidia--Nemotron-H-56B-Base-8K", kv, kv, total, total)
    assert within(total, 56e9, 0.01)  # the name: 56B


def test_nemotron3_nano_moe_blocks():
    # 6 attention blocks of 52: 6 x 2 KV heads x 128 x 4 = 6144 (52 as attention: 8.7x)
    kv = 6 * 2 * 128 * 2 * 2
    m2 = _mamba2(2688, 64, 64, 128, 8, 4)
    attn = 2688 * 4096 + 2 * 2688 * 256 + 4096 * 2688
    expert = 2 * 2688 * 1856  # ReLU^2 experts: up, down
    shared = 2 * 2688 * 3712
    moe_total = 2688 * 128 + 128 * expert + shared
    moe_active = 2688 * 128 + 6 * expert + shared
    common = 23 * m2 + 6 * attn + 52 * 2688 + 2 * 131072 * 2688 + 2688
    spec, _ = check("nvidia--NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", kv, kv, common + 23 * moe_total,
                    common + 23 * moe_active)
    assert spec.state_dtype == "float32"
    # model card: 31.6B total, 3.2B active (3.6B with embeddings)
    assert within(common + 23 * moe_total, 31.6e9, 0.005) and within(common + 23 * moe_active, 3.6e9, 0.01)


def test_minimax_m1_lightning():
    # attn_type_list: 1 every 8th -> 10 softmax layers of 80: 10 x 8 x 128 x 4 = 40960
    kv = 10 * 8 * 128 * 2 * 2
    attn = 6144 * 8192 + 2 * 6144 * 1024 + 8192 * 6144
    light = 6144 * 3 * 8192 + 6144 * 8192 + 8192 + 8192 * 6144  # qkv, output gate, norm, out_proj
    expert = 3 * 6144 * 9216
    emb = 2 * 200064 * 6144
    common = 10 * attn + 70 * light + 80 * 2 * 6144 + emb + 6144
    total = common + 80 * (6144 * 32 + 32 * expert)
    active = common + 80 * (6144 * 32 + 2 * expert)
    spec, _ = check("MiniMaxAI--MiniMax-M1", kv, kv, total, active)
    assert spec.rope.rotary_dim == 64
    # paper: 456B total, 45.9B activated -- MiniMax's activated count leaves out embedding and lm_head
    assert within(total, 456e9, 0.001) and within(active - emb, 45.9e9, 0.001)


def test_mimo_v2_flash_per_kind_heads():
    # 9 full layers: 4 KV heads x (192 + 128) x 2 B = 2560 per token; 39 sliding layers: 8 KV heads x 320 x 2
    # = 5120 per token, capped at 129 tokens -- sliding_window_size 128 keys before the query, and the query
    # (SGLang's reference; transformers' MiMoV2FlashConfig: sliding_window = sliding_window_size + 1)
    full, swa = 4 * (192 + 128) * 2, 8 * (192 + 128) * 2
    kv4k = 9 * full + 39 * swa * 129 / N4K  # 23040 + 6288.75
    kv128k = 9 * full + 39 * swa * 129 / N128K
    q = 4096 * 64 * 192
    attn_full = q + 4096 * 4 * (192 + 128) + 64 * 128 * 4096
    attn_swa = q + 4096 * 8 * (192 + 128) + 64 * 128 * 4096 + 64  # + a sink logit per head
    expert = 3 * 4096 * 2048
    emb = 2 * 152576 * 4096
    common = 9 * attn_full + 39 * attn_swa + 3 * 4096 * 16384 + 48 * 2 * 4096 + emb + 4096
    total = common + 47 * (4096 * 256 + 256 * expert)
    active = common + 47 * (4096 * 256 + 8 * expert)
    spec, _ = check("XiaomiMiMo--MiMo-V2-Flash", kv4k, kv128k, total, active)
    assert spec.attn_dims(1) == (64, 8, 192, 128) and spec.attn_dims(0) == (64, 4, 192, 128)
    assert within(total, 309e9, 0.002) and within(active, 15e9, 0.04)  # model card: 309B / 15B active


def test_falcon_mamba_7b_no_kv():
    d = 8192  # intermediate_size as stated (expand 16 is overridden, as transformers does)
    mamba = 4096 * 2 * d + d * 4 + d + d * (256 + 32) + 256 * d + d + d * 16 + d + d * 4096  # unweighted B/C/dt norms
    total = 64 * (mamba + 4096) + 2 * 65024 * 4096 + 4096
    spec, _ = check("tiiuae--falcon-mamba-7b", 0.0, 0.0, total, total)
    assert spec.attention_type == "none"
    assert within(total, 7.27e9, 0.002)  # model card: 7.27B


def _glm4_moe(n_layers, dense, hidden, heads, kv, hd, inter, experts, top, moe_w, vocab, qk_norm):
    """(total, active) of a GLM-4.5-family config from its numbers: attention with q/k/v biases (o_proj
    has none), per-head q/k norms when qk_norm, 2 RMSNorms per layer; `dense` layers of a gated MLP of
    `inter`, the rest a router (hidden x experts), `experts` gated experts of `moe_w` (top `top` active)
    and one shared expert of `moe_w`; untied embedding and lm_head, a final norm."""
    attn = hidden * heads * hd + heads * hd + 2 * (hidden * kv * hd + kv * hd) + heads * hd * hidden
    attn += 2 * hd if qk_norm else 0
    expert = 3 * hidden * moe_w
    common = n_layers * (attn + 2 * hidden) + dense * 3 * hidden * inter + 2 * vocab * hidden + hidden
    moe = n_layers - dense
    return (common + moe * (hidden * experts + experts * expert + expert),
            common + moe * (hidden * experts + top * expert + expert))


def test_glm47_partial_rope_qkv_bias_qk_norm():
    # KV: 92 layers x 8 KV heads x 128 x 2 (K, V) x 2 B = 376832 per token (RoPE on half of each head:
    # no byte change); the multi-token-prediction layer is not loaded by transformers
    kv = 92 * 8 * 128 * 2 * 2
    total, active = _glm4_moe(92, 3, 5120, 96, 8, 128, 12288, 160, 8, 1536, 151552, qk_norm=True)
    assert (total, active) == (352_797_814_784, 33_632_251_904)
    spec, _ = check("zai-org--GLM-4.7", kv, kv, total, active)
    assert spec.rope.rotary_dim == 64 and spec.qk_norm == "head" and spec.qkv_bias and not spec.o_bias
    assert [lyr.moe for lyr in spec.layers[:4]] == [False, False, False, True]
    # GLM-4.5 (same shapes): 355B total, 32B active. Without embeddings lcprof's active count is 32.08B;
    # the total is 1.4B short of 355B with embeddings (the MTP layer: attention + MoE + its projections)
    assert within(active - 2 * 151552 * 5120, 32e9, 0.005) and within(total, 355e9, 0.01)
    assert "multi-token-prediction" in spec.notes


def test_glm45_air():
    kv = 46 * 8 * 128 * 2 * 2  # 188416
    total, active = _glm4_moe(46, 1, 4096, 96, 8, 128, 10944, 128, 8, 1408, 151552, qk_norm=False)
    spec, _ = check("zai-org--GLM-4.5-Air", kv, kv, total, active)
    assert spec.qk_norm == "none"
    # model card: 106B total, 12B active (12.18B without the embeddings)
    assert within(total, 106e9, 0.01) and within(active - 2 * 151552 * 4096, 12e9, 0.02)


def test_kimi_linear_48b_kda_and_nope_mla():
    # 7 of 27 layers MLA (1-based 4, 8, ..., 24, 27) hold KV: the latent 512 + the shared (unrotated) key
    # part 64, bf16: 7 x 576 x 2 = 8064 B per token at every n; the 20 KDA layers hold a fixed state
    kv = 7 * (512 + 64) * 2
    assert kv == 8064
    h, w, d = 2304, 32 * 128, 128
    # KDA: q, k, v (h x w each), conv 3w x 4 (no bias), f_a h x d, f_b d x w, dt_bias w, A_log 32,
    # b_proj h x 32, g_a h x d, g_b d x w, o_norm d, o_proj w x h
    kda = 3 * h * w + 3 * w * 4 + h * d + d * w + w + 32 + h * 32 + h * d + d * w + d + w * h
    assert kda == 39_514_272
    # MLA without q LoRA: q_proj h x 32 x (128 + 64), kv_a h x (512 + 64), its norm 512,
    # kv_b 512 x 32 x (128 + 128), o_proj 32 x 128 x h
    mla = h * 32 * 192 + h * 576 + 512 + 512 * 32 * 256 + 32 * 128 * h
    assert mla == 29_114_880
    expert = 3 * h * 1024
    # layer 0 dense (FFN 9216); layers 1..26 route 8 of 256 experts (router h x 256; its score-correction
    # bias is a buffer) plus one shared expert of the same width
    dense = 3 * h * 9216
    common = 20 * kda + 7 * mla + dense + 27 * 2 * h + 2 * 163840 * h + h  # untied embedding + lm_head
    total = common + 26 * (h * 256 + 256 * expert + expert)
    active = common + 26 * (h * 256 + 8 * expert + expert)
    assert (total, active) == (49_122_675_072, 3_484_453_248)
    spec, _ = check("moonshotai--Kimi-Linear-48B-A3B-Instruct", kv, kv, total, active)
    assert spec.layer_kinds == {"kda": 20, "global": 7} and spec.rope is None
    assert spec.max_position_embeddings == 1_048_576  # model_max_length
    # state per sequence, bf16 model: 20 x (32 x 128 x 128 recurrent in fp32 (vLLM's kda_state_dtype forces
    # it) + 3 x 4096 x 3 conv in bf16); a bf16 state asked for does not change the recurrent part
    from lcprof.cost.model import state_bytes

    assert state_bytes(spec, dtype="bf16") == 20 * (32 * 128 * 128 * 4 + 3 * 4096 * 3 * 2) == 43_417_600
    assert state_bytes(spec, dtype="bf16", state_dtype="bf16") == 43_417_600
    # model card: 48B total (49.1B here), 3B activated (3.1B without the input embedding table)
    assert within(total, 48e9, 0.03) and within(active - 163840 * h, 3e9, 0.05)

def test_every_committed_config_is_tested_and_has_a_source():
    tested = {"meta-llama--Meta-Llama-3.1-8B", "meta-llama--Meta-Llama-3.1-70B", "Qwen--Qwen3-8B",
              "mistralai--Mistral-7B-v0.1", "microsoft--Phi-3-mini-4k-instruct", "microsoft--Phi-3-mini-128k-instruct",
              "Qwen--Qwen2.5-7B-Instruct", "google--gemma-2-9b", "google--gemma-3-27b-it",
              "meta-llama--Llama-4-Scout-17B-16E-Instruct", "meta-llama--Llama-4-Maverick-17B-128E-Instruct",
              "openai--gpt-oss-20b", "openai--gpt-oss-120b", "mistralai--Mixtral-8x7B-v0.1", "Qwen--Qwen3-30B-A3B",
              "Qwen--Qwen3-235B-A22B", "deepseek-ai--DeepSeek-V2-Lite", "deepseek-ai--DeepSeek-V3",
              "moonshotai--Kimi-K2-Instruct", "deepseek-ai--DeepSeek-V3.2", "zai-org--GLM-5", "MiniMaxAI--MiniMax-M2.5",
              "Qwen--Qwen3-Next-80B-A3B-Thinking", "Qwen--Qwen3.5-27B", "Qwen--Qwen3.5-397B-A17B",
              "ai21labs--AI21-Jamba-1.5-Mini", "nvidia--Nemotron-H-56B-Base-8K",
              "nvidia--NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "MiniMaxAI--MiniMax-M1", "XiaomiMiMo--MiMo-V2-Flash",
              "tiiuae--falcon-mamba-7b", "Qwen--Qwen3.5-35B-A3B", "zai-org--GLM-4.7", "zai-org--GLM-4.5-Air",
              "moonshotai--Kimi-Linear-48B-A3B-Instruct", "HuggingFaceTB--SmolLM3-3B",
              "ByteDance-Seed--Seed-OSS-36B-Instruct", "allenai--Olmo-3-1025-7B",
              "CohereLabs--c4ai-command-r7b-12-2024", "Qwen--Qwen3-VL-8B-Instruct", "zai-org--GLM-4-9B-0414",
              "zai-org--GLM-4-32B-0414", "ibm-granite--granite-3.3-8b-instruct", "tencent--Hunyuan-7B-Instruct",
              "LiquidAI--LFM2-1.2B", "LiquidAI--LFM2-8B-A1B", "microsoft--Phi-4-mini-instruct",
              "meta-llama--Llama-3.2-1B-Instruct", "meta-llama--Llama-3.2-3B-Instruct", "google--gemma-3-1b-it",
              "mistralai--Mistral-Small-3.1-24B-Instruct-2503", "Qwen--Qwen2.5-VL-7B-Instruct",
              "mistralai--Mistral-Nemo-Instruct-2407", "Qwen--Qwen3-32B", "Qwen--Qwen3-4B",
              "deepseek-ai--DeepSeek-R1-Distill-Qwen-32B", "Qwen--Qwen3-Coder-30B-A3B-Instruct",
              "meta-llama--Llama-3.3-70B-Instruct", "microsoft--Phi-3.5-mini-instruct", "google--gemma-3-12b-it",
              "ibm-granite--granite-4.0-h-small", "ibm-granite--granite-4.0-h-tiny", "nvidia--NVIDIA-Nemotron-Nano-9B-v2"}
    present = {p.name for p in CONFIGS.iterdir() if p.is_dir()}
    assert present == tested
    for p in CONFIGS.iterdir():
        assert (p / "SOURCE.md").read_text().strip(), p


def test_qwen35_35b_a3b():
    kv = 10 * 2 * 256 * 2 * 2
    attn = 2048 * 16 * 256 * 2 + 2 * 2048 * 2 * 256 + 16 * 256 * 2048 + 2 * 256
    gdn = _gdn(2048, 16, 32, 128, 128, 4)
    expert = 3 * 2048 * 512
    common = 10 * attn + 30 * gdn + 40 * 2 * 2048 + 2 * 248320 * 2048 + 2048
    total = common + 40 * (2048 * 256 + 256 * expert + expert + 2048)
    active = common + 40 * (2048 * 256 + 8 * expert + expert + 2048)
    check("Qwen--Qwen3.5-35B-A3B", kv, kv, total, active)
    assert within(total, 35e9, 0.02) and within(active, 3e9, 0.2)  # name: 35B, A3B


def test_kv_cli_on_qwen3_next_config():
    """`lcprof kv` on the published Qwen3-Next config: 24576 B per token, at any n."""
    from click.testing import CliRunner

    from lcprof.cli import main

    path = CONFIGS / "Qwen--Qwen3-Next-80B-A3B-Thinking" / "config.json"
    r = CliRunner().invoke(main, ["kv", "--model", str(path), "--n", "4k,128k", "--format", "json"])
    assert r.exit_code == 0, r.output
    recs = json.loads(r.stdout)
    assert [rec["kv_bytes_per_token"] for rec in recs] == [24576, 24576]
    assert np.array_equal([rec["kv_bytes"] for rec in recs], [24576 * N4K, 24576 * N128K])
