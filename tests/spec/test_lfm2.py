"""LFM2: the gated short convolution's parameters, FLOPs, bytes and state by hand, the MLP width transformers
derives, the checkpoints' remote-code fields, and what is refused (one line, the field named). The published
checkpoint is in test_published_configs.py; the measured layer against the cost model (FLOPs, activation bytes
to the byte) in tests/measure/test_hybrid_layer.py ("lfm2"); transformers' own layers in
tests/measure/test_transformers_impl.py ("lfm2")."""

from __future__ import annotations

import pytest

from lcprof.cost.model import cost, kv_bytes, state_bytes
from lcprof.errors import LcprofError
from lcprof.spec import param_counts, spec_from_config

# hidden 64, 4 heads of 16, 2 KV heads; layers conv, attention, conv, conv; vocab 100
LFM2 = dict(model_type="lfm2", hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=144, block_multiple_of=32, vocab_size=100, max_position_embeddings=8192,
            layer_types=["conv", "full_attention", "conv", "conv"])


def spec(**kw):
    return spec_from_config(dict(LFM2, **kw), name="t", where="t")


def test_parameters_by_hand():
    """A conv layer: in_proj 64 x 192 (B, C, x), out_proj 64 x 64, 3 conv taps per channel (conv_L_cache 3);
    the attention layer: q, out_proj 64 x 64, k, v 64 x 32, q/k norms 16 each; every layer a SwiGLU of width
    int(2 x 144 / 3) = 96 (a multiple of 32) and 2 norms; tied embeddings, final norm."""
    s = spec()
    conv = 64 * 192 + 64 * 64 + 64 * 3
    attn = 2 * 64 * 64 + 2 * 64 * 32 + 2 * 16
    mlp = 3 * 64 * 96
    assert s.intermediate_size == 96
    assert param_counts(s)["total_params"] == 3 * conv + attn + 4 * (mlp + 2 * 64) + 100 * 64 + 64
    # conv_bias: the conv (64) and both projections (192 + 64)
    assert param_counts(spec(conv_bias=True))["total_params"] - param_counts(s)["total_params"] == 3 * (64 + 192 + 64)


@pytest.mark.parametrize("fields,width", [
    (dict(), 96),  # int(2 x 144 / 3) = 96, already a multiple of 32
    (dict(block_multiple_of=256), 256),  # 96 rounded up to 256
    (dict(block_ffn_dim_multiplier=1.5), 160),  # int(1.5 x 96) = 144, rounded up to 160
    (dict(block_ffn_dim_multiplier=None), 96),  # no multiplier: no rounding either (int(2 x 144 / 3))
    (dict(intermediate_size=100, block_ffn_dim_multiplier=None), 66),  # int(200 / 3) = 66, not rounded
    (dict(block_auto_adjust_ff_dim=False), 144),  # the width as given
    (dict(block_ff_dim=288), 192),  # the checkpoints' spelling wins: int(2 x 288 / 3) = 192
])
def test_mlp_width_is_lfm2_mlps(fields, width):
    assert spec(**fields).intermediate_size == width


def test_schedule_from_layer_types_or_full_attn_idxs():
    # KV: only the attention layer caches, 2 heads x 16 x (K, V) x 2 B = 128 B per token
    assert int(kv_bytes(spec(), 1000, kv_dtype="bf16")[0]) == 1000 * 128
    s = spec(layer_types=None, full_attn_idxs=[1, 3])
    assert [lyr.mixers for lyr in s.layers] == [("short_conv",), ("attention",), ("short_conv",), ("attention",)]
    assert {lyr.mixers for lyr in spec(layer_types=None).layers} == {("attention",)}  # neither: all attention
    assert spec(full_attn_idxs=[1]).layers == spec().layers  # both given and agreeing


def test_short_conv_flops_bytes_and_state_by_hand():
    """bf16, layer 0 (conv), n = 10 tokens: in_proj 2 x 10 x 64 x 192, the conv 2 x 10 x 64 x 3, out_proj
    2 x 10 x 64 x 64 FLOPs. Bytes: the gate products B x and C y (read 2c, write c each: 6 x 64 x 2 B per token);
    the conv reads its inputs, taps and carried 2-input state and writes its outputs and the new state:
    2 x (2 x 10 x 64 + 64 x 3) + 2 x 2 x 64 x 2. State per sequence: 3 conv layers x 64 x 2 inputs x 2 B."""
    c = cost(spec(), 10, layer=0)
    assert float(c.flops["mixer/in_proj"][0]) == 2 * 10 * 64 * 192
    assert float(c.flops["mixer/conv"][0]) == 2 * 10 * 64 * 3
    assert float(c.flops["mixer/out_proj"][0]) == 2 * 10 * 64 * 64
    assert float(c.bytes["mixer/gate"][0]) == 10 * 6 * 64 * 2
    assert float(c.bytes["mixer/conv"][0]) == 2 * (2 * 10 * 64 + 64 * 3) + 2 * 2 * 64 * 2
    assert state_bytes(spec(), dtype="bf16") == 3 * 64 * 2 * 2
    assert state_bytes(spec(), dtype="bf16", tp=2) == 3 * 32 * 2 * 2  # the channels split with TP
    assert state_bytes(spec(conv_L_cache=5), dtype="fp32") == 3 * 64 * 4 * 4
    # decode (n = 1) is the same conv over the carried window: the same per-token FLOPs
    assert float(cost(spec(), 1, layer=0).flops["mixer/conv"][0]) == 2 * 64 * 3


def test_checkpoint_fields():
    """The checkpoints' remote-code spellings: tie_embedding wins over tie_word_embeddings, theta must be
    rope_theta, block_dim / conv_dim / conv_dim_out the hidden size, num_heads the head count."""
    assert not spec(tie_embedding=False).tie_embeddings
    assert spec(tie_word_embeddings=False, tie_embedding=True).tie_embeddings
    s = spec(block_dim=64, conv_dim=64, conv_dim_out=64, num_heads=4, theta=1e6, rope_theta=1e6, use_pos_enc=True,
             block_use_swiglu=True, block_norm_eps=1e-5, block_mlp_init_scale=1.0, block_out_init_scale=1.0,
             block_use_xavier_init=True, conv_use_xavier_init=True)
    assert s.rope.theta == 1e6 and spec().rope.theta == 1e6  # Lfm2Config's default_theta


@pytest.mark.parametrize("fields,match", [
    (dict(block_dim=48), "block_dim 48 differs from hidden_size 64"),
    (dict(conv_dim_out=32), "conv_dim_out 32 differs"),
    (dict(num_heads=8), "num_heads 8 differs"),
    (dict(theta=5e5), "theta 500000.0 differs from rope_theta"),
    (dict(full_attn_idxs=[2]), "disagrees with layer_types"),
    (dict(layer_types=None, full_attn_idxs=[7]), "full_attn_idxs"),
    (dict(layer_types=["conv", "sliding_attention", "conv", "conv"]), "layer_types"),
    (dict(conv_L_cache=1), "conv_L_cache"),
    (dict(block_use_swiglu=False), "block_use_swiglu false"),
    (dict(use_pos_enc=False), "use_pos_enc false"),
    (dict(intermediate_size=None), "MLP width is unknown"),
    (dict(conv_state_dtype="fp32"), "does not understand .*conv_state_dtype"),
])
def test_refused_in_one_line(fields, match):
    with pytest.raises(LcprofError, match=match):
        spec(**fields)


# LFM2-MoE: the same layers, a dense MLP on layer 0, then 4 experts of 16 (2 per token)
MOE = dict(LFM2, model_type="lfm2_moe", intermediate_size=48, moe_intermediate_size=16, num_experts=4,
           num_experts_per_tok=2, num_dense_layers=1)


def test_lfm2_moe_parameters_by_hand():
    """Layer 0: a dense SwiGLU of intermediate_size 48 as given (LFM2-MoE adjusts nothing); layers 1-3: the
    router (64 x 4) and 4 experts of 3 x 64 x 16, 2 active per token; no shared expert."""
    s = spec_from_config({k: v for k, v in MOE.items() if k != "block_multiple_of"}, name="t")
    conv = 64 * 192 + 64 * 64 + 64 * 3
    attn = 2 * 64 * 64 + 2 * 64 * 32 + 2 * 16
    dense, expert, router = 3 * 64 * 48, 3 * 64 * 16, 64 * 4
    common = 3 * conv + attn + 4 * 2 * 64 + 100 * 64 + 64
    pc = param_counts(s)
    assert pc["total_params"] == common + dense + 3 * (router + 4 * expert)
    assert pc["active_params"] == common + dense + 3 * (router + 2 * expert)
    assert [lyr.moe for lyr in s.layers] == [False, True, True, True] and s.intermediate_size == 48
    assert spec_from_config({k: v for k, v in MOE.items() if k not in ("block_multiple_of", "num_dense_layers")},
                            name="t").layers[1].moe is False  # Lfm2MoeConfig's default: 2 dense layers


def test_short_conv_under_tensor_parallelism():
    """TP 2 splits the channels: in_proj's output (B, C, x: 3 x 64 -> 3 x 32 per rank) halves in the live bytes
    of layer 0's in_proj step (bf16, 10 tokens: 3 x 32 x 10 x 2 B fewer), the hidden-size input does not."""
    from lcprof.cost.model import activation_steps

    one = activation_steps(spec(), 10, layer=0, tp=1)["mixer/in_proj"][0]
    two = activation_steps(spec(), 10, layer=0, tp=2)["mixer/in_proj"][0]
    assert one - two == 3 * 32 * 10 * 2
