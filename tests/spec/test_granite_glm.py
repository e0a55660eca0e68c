"""Granite 3.x and GLM-4 (glm, glm4) configs: what each field changes, by hand, and what is refused (one line,
the field named). The published checkpoints are in test_published_configs.py; the byte-exact agreement with the
measured layer is tests/measure/test_tensor_audit.py ("mup", "sandwich"); transformers' own layers are
tests/measure/test_transformers_impl.py ("granite", "glm", "glm4")."""

from __future__ import annotations

import pytest

from lcprof.cost.model import cost, kv_bytes
from lcprof.errors import LcprofError
from lcprof.spec import param_counts, spec_from_config

# hidden 64, 8 heads of 8, 2 KV heads, FFN 96, 4 layers, vocab 100
GRANITE = dict(model_type="granite", hidden_size=64, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
               intermediate_size=96, vocab_size=100, max_position_embeddings=8192)
# hidden 64, 4 heads of 16, 2 KV heads
GLM = dict(model_type="glm", hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
           head_dim=16, intermediate_size=96, vocab_size=100, max_position_embeddings=8192)
GLM4 = dict(GLM, model_type="glm4")


def spec(cfg, **kw):
    return spec_from_config(dict(cfg, **kw), name="t", where="t")


def test_granite_defaults_are_granite_configs():
    """GraniteConfig's defaults: every muP scalar 1 (the softmax scale is attention_multiplier itself, so 1, not
    head_dim^-1/2), rope_theta 1e4, untied; no biases."""
    s = spec(GRANITE)
    assert (s.attn_scale, s.embedding_multiplier, s.logits_scaling) == (1.0, 1.0, 1.0)
    assert s.residual_factors == ((None, 1.0),) * 3 and s.rope.theta == 1e4 and not s.tie_embeddings
    layer = 2 * 64 * 64 + 2 * 64 * 16 + 3 * 64 * 96 + 2 * 64
    assert param_counts(s)["total_params"] == 4 * layer + 2 * 100 * 64 + 64
    # attention_bias biases q, k, v and o (GraniteAttention); mlp_bias gate, up and down
    assert param_counts(spec(GRANITE, attention_bias=True))["total_params"] - param_counts(s)["total_params"] == \
        4 * (64 + 16 + 16 + 64)
    assert param_counts(spec(GRANITE, mlp_bias=True))["total_params"] - param_counts(s)["total_params"] == \
        4 * (96 + 96 + 64)


def test_granite_residual_multiplier_is_one_more_op_per_block():
    """fp32, n = 20, h = 64. Unfused (lcprof's layer, transformers'): residual + out x m is a multiply (read h,
    write h) before the add, per block: 2 blocks x 2h x 4 B more per token, whatever the multiplier's value."""
    t, h = 20, 64
    s = spec(GRANITE, residual_multiplier=0.22)
    plain = s.replace(residual_factors=None)
    got = cost(s, t, layer=0, dtype="fp32", elementwise="unfused").bytes["misc/elementwise"][0]
    ref = cost(plain, t, layer=0, dtype="fp32", elementwise="unfused").bytes["misc/elementwise"][0]
    assert got - ref == t * 2 * 2 * h * 4
    assert cost(spec(GRANITE), t, layer=0, dtype="fp32").bytes["misc/elementwise"][0] == got  # 1.0 costs the same


def test_glm_partial_rope_and_biases():
    """RoPE on half of each head by default (GlmConfig's partial_rotary_factor 0.5): 8 of 16 dims; q/k/v biased by
    default (attention_bias true), o never; glm has 2 norms per layer, glm4 4."""
    s, s4 = spec(GLM), spec(GLM4)
    assert s.rope.rotary_dim == 8 and spec(GLM, partial_rotary_factor=1.0).rope.rotary_dim == 16
    assert spec(GLM, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                      "partial_rotary_factor": 0.25}).rope.rotary_dim == 4
    both = spec(GLM, rope_theta=1e4, partial_rotary_factor=0.25,  # both spellings, agreeing (a transformers-5 re-save)
                rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.25})
    assert (both.rope.rotary_dim, both.rope.theta) == (4, 1e4)
    assert s.qkv_bias and not s.o_bias and (s.norms_per_layer, s4.norms_per_layer) == (2, 4)
    layer = 2 * 64 * 64 + 2 * 64 * 32 + (64 + 32 + 32) + 3 * 64 * 96 + 2 * 64
    assert param_counts(s)["total_params"] == 4 * layer + 2 * 100 * 64 + 64
    assert param_counts(s4)["total_params"] == 4 * (layer + 2 * 64) + 2 * 100 * 64 + 64
    assert param_counts(spec(GLM, attention_bias=False))["total_params"] == 4 * (layer - 128) + 2 * 100 * 64 + 64
    # KV: 4 layers x 2 heads x 16 x (K, V) x 2 B = 512 B per token, every layer global
    assert int(kv_bytes(s4, 1000, kv_dtype="bf16")[0]) == 1000 * 512


def test_four_norm_layer_fused_traffic_by_hand():
    """An engine's fused kernels on GLM-4-0414's layer (vLLM's Glm4DecoderLayer, as its Gemma2DecoderLayer): per
    block the fused residual add + RMSNorm on the input (read x and the residual, write both: 4h) and the plain
    RMSNorm on the output (read, write: 2h). bf16 (2 B), layer 0, one token, h = 64, 4 q + 2 KV heads of 16:
    norms 2 x (4h + 2h), rotary on q and k (read + write whole heads, 16 x 6: RoPE on 8 of 16 dims still rewrites
    each head, as the compiled rotary's slice-and-concatenate does), K/V into the cache (read + write 2 x 2 x 16),
    SiLU-and-mul (read 2 x 96, write 96)."""
    per_token = 2 * (2 * (4 * 64 + 2 * 64) + 2 * 6 * 16 + 2 * 2 * 2 * 16 + 3 * 96)
    got = cost(spec(GLM4), 10, layer=0, elementwise="fused").bytes["misc/elementwise"][0]
    assert got == 10 * per_token
    two = cost(spec(GLM), 10, layer=0, elementwise="fused").bytes["misc/elementwise"][0]
    assert got - two == 10 * 2 * 2 * 2 * 64  # the two output norms, 2h each


@pytest.mark.parametrize("cfg,fields,match", [
    (GRANITE, dict(attention_multiplier=0), "attention_multiplier"),
    (GRANITE, dict(residual_multiplier=-0.2), "residual_multiplier"),
    (GRANITE, dict(embedding_multiplier="12"), "embedding_multiplier"),
    (GRANITE, dict(sliding_window=4096), "does not understand .*sliding_window"),
    (GLM, dict(partial_rotary_factor=1.5), "partial_rotary_factor"),
    (GLM4, dict(partial_rotary_factor=0.01), "nothing would be rotated"),
    (GLM4, dict(num_key_value_heads=3), "not a multiple of 3 KV heads"),
    (GLM4, dict(sliding_window=4096), "does not understand .*sliding_window"),
    # a transformers-5 re-save keeps both spellings: they must agree
    (GLM4, dict(partial_rotary_factor=1.0, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                           "partial_rotary_factor": 0.5}), "partial_rotary_factor 1 differs"),
    (GLM4, dict(rope_theta=5e5, rope_parameters={"rope_type": "default", "rope_theta": 1e4}), "rope_theta 500000 differs"),
])
def test_refused_in_one_line(cfg, fields, match):
    with pytest.raises(LcprofError, match=match):
        spec(cfg, **fields)


# HunYuan dense: hidden 64, 4 heads of 16, 2 KV heads
HUNYUAN = dict(model_type="hunyuan_v1_dense", hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, intermediate_size=96, vocab_size=100, max_position_embeddings=8192)


def test_hunyuan_ntk_alpha_rope_and_norms_after_rope():
    """NTK-alpha: base 1e4 x 1000^(16/14) (transformers' ntk_alpha: alpha^(head_dim / (head_dim - 2))), over the
    whole head, whatever the factor and YaRN-style keys beside it; q/k normed per head after RoPE (16 + 16 weights
    per layer); untied by default."""
    s = spec(HUNYUAN, rope_scaling={"type": "dynamic", "alpha": 1000.0, "factor": 1.0, "beta_fast": 32,
                                    "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0})
    assert s.rope.type == "default" and s.rope.rotary_dim == 16
    assert s.rope.theta == pytest.approx(1e4 * 1000 ** (16 / 14), rel=1e-12)  # 2.6827e7
    assert (s.qk_norm, s.qk_norm_after_rope) == ("head", True)
    layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 96 + 2 * 64 + 2 * 16
    assert param_counts(s)["total_params"] == 4 * layer + 2 * 100 * 64 + 64
    # without alpha a "dynamic" block is dynamic NTK as for any model
    assert spec(HUNYUAN, rope_scaling={"type": "dynamic", "factor": 2.0}).rope.type == "dynamic"
    assert spec(HUNYUAN).rope.theta == 1e4


@pytest.mark.parametrize("fields,match", [
    (dict(use_qk_norm=False), "use_qk_norm false"),
    (dict(use_cla=True, cla_share_factor=2), "cross-layer attention"),
    (dict(attention_head_dim=8), "attention_head_dim 8 differs from head_dim 16"),
    (dict(mlp_bias=True), "mlp_bias true"),
    (dict(norm_type="layer"), "norm_type"),
    (dict(use_rotary_pos_emb=False), "use_rotary_pos_emb false"),
    (dict(add_classification_head=True), "add_classification_head"),
    (dict(rope_scaling={"type": "linear", "alpha": 10.0, "factor": 2.0}), "alpha only for"),
    (dict(rope_scaling={"type": "dynamic", "alpha": 10.0, "low_freq_factor": 2.0}), "low_freq_factor"),
    (dict(rope_scaling={"type": "dynamic", "alpha": -1.0}), "alpha"),
    (dict(rope_theta=5e5, rope_parameters={"rope_type": "default", "rope_theta": 1e4}), "rope_theta 500000 differs"),
])
def test_hunyuan_refused_in_one_line(fields, match):
    with pytest.raises(LcprofError, match=match):
        spec(HUNYUAN, **fields)
