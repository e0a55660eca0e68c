"""Cohere 2: the parallel block, its LayerNorm, the sliding schedule with NoPE global layers, logit_scale and
the original release's own fields -- by hand and against a sequential twin. The byte-exact agreement with the
measured layer is tests/measure/test_tensor_audit.py ("parallel"); transformers' own layer is
tests/measure/test_transformers_impl.py ("cohere2")."""

from __future__ import annotations

import pytest

from lcprof.cost.model import activation_steps, cost, kv_bytes
from lcprof.errors import LcprofError
from lcprof.plan.activation import fused_step_bytes_per_token
from lcprof.plan.parallel import Parallel
from lcprof.spec import param_counts, spec_from_config

# hidden 64, 8 heads of 8, 2 KV heads, FFN 96, 4 layers, vocab 100
BASE = dict(model_type="cohere2", hidden_size=64, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
            intermediate_size=96, vocab_size=100, max_position_embeddings=8192)


def spec(**kw):
    return spec_from_config(dict(BASE, **kw), name="t", where="t")


def test_parameters_schedule_and_kv_by_hand():
    """One norm per layer (64), tied embeddings, final norm; 3 sliding layers (W 4096 by default, RoPE) and a
    global one without RoPE; head_dim 64 / 8 = 8."""
    s = spec()
    layer = 2 * 64 * 64 + 2 * 64 * 16 + 3 * 64 * 96 + 64
    assert param_counts(s)["total_params"] == 4 * layer + 100 * 64 + 64
    assert [(lyr.attn, lyr.window, lyr.rope) for lyr in s.layers] == [("sliding", 4096, True)] * 3 + \
        [("global", None, False)]
    assert (s.head_dim, s.logits_scaling, s.rope.theta) == (8, 16.0, 1e4)  # logit_scale 0.0625: logits / 16
    w = spec(sliding_window=16, sliding_window_pattern=2)
    # n = 100: 2 sliding layers x 16 + 2 global x 100 tokens, 2 heads x 8 x (K, V) x 2 B = 64 B each
    assert int(kv_bytes(w, 100, kv_dtype="bf16")[0]) == (2 * 16 + 2 * 100) * 64
    assert param_counts(spec(attention_bias=True))["total_params"] == 4 * (layer + 64 + 16 + 16 + 64) + 100 * 64 + 64


def test_elementwise_traffic_one_layernorm_two_adds():
    """fp32 (s = 4), n = 20, h = 64. Unfused: the LayerNorm (10 passes of 4 B per element + 8 x 4 per token +
    the weight) and two adds (read 2h, write h each). Fused (an engine): the norm read + written (2h) and the two
    adds (3h each), 8h per layer against a sequential pre-norm layer's 2 x 4h."""
    s = spec()
    t, h = 20, 64
    ln = t * (h * 40 + 32) + 4 * h
    c = cost(s, t, layer=0, dtype="fp32", elementwise="unfused").bytes["misc/elementwise"][0]
    seq = cost(s.replace(parallel_block=False, norms_per_layer=2), t, layer=0, dtype="fp32",
               elementwise="unfused").bytes["misc/elementwise"][0]
    assert seq - c == ln  # the sequential twin runs a second LayerNorm, the same adds
    fused = cost(s, t, layer=0, dtype="fp32", elementwise="fused").bytes["misc/elementwise"][0]
    fused_seq = cost(s.replace(parallel_block=False, layer_norm=False, norms_per_layer=2), t, layer=0, dtype="fp32",
                     elementwise="fused").bytes["misc/elementwise"][0]
    assert fused - fused_seq == 4 * t * (8 * h - 2 * 4 * h)


def test_activation_steps_by_hand():
    """One bf16 token (s = 2, h = 64), tiled, layer 0 (RoPE over 8 dims: tables 2 x 8 x 2 B = 32 B resident).
    The input LayerNorm: x, the normed copy's fp32 transients (8 B per element) and the row mean (4 B); the
    MLP: x, the normed input and the attention output (3 x 64 x 2) with act(gate), up, their product (3 x 96 x
    2); no second norm step."""
    st = activation_steps(spec(), 1, dtype="bf16", family="tiled", layer=0)
    assert st["attn/input_norm"][0] == 64 * 2 + 64 * 8 + 4 + 32
    assert st["mlp/act"][0] == 3 * 64 * 2 + 3 * 96 * 2 + 32
    assert "mlp/norm" not in st
    assert st["residual"][0] == 4 * 64 * 2 + 32  # x, x + attn, the MLP output, the sum


def test_engine_activation_holds_the_attention_output_beside_the_mlp():
    s = spec()
    par = Parallel()
    seq = s.replace(parallel_block=False, norms_per_layer=2)
    # the MLP step (x, normed x, gate/up 2 x 96, act 96, down 64) is the larger one; Cohere's adds h
    assert fused_step_bytes_per_token(s, s.layers[0], par) - fused_step_bytes_per_token(seq, seq.layers[0], par) \
        == 2 * 64


@pytest.mark.parametrize("fields,match", [
    (dict(head_dim=16), "head_dim 16: transformers' Cohere2 uses hidden_size // num_attention_heads = 8"),
    (dict(position_embedding_type="rope"), "position_embedding_type 'rope'"),
    (dict(order_of_interleaved_layers="global_attn_first"), "order_of_interleaved_layers"),
    (dict(use_gated_activation=False), "use_gated_activation"),
    (dict(rotary_pct=0.5), "rotary_pct 0.5"),
    (dict(use_embedding_sharing=False), "use_embedding_sharing and tie_word_embeddings disagree"),
    (dict(layer_switch=2, sliding_window_pattern=4), "layer_switch 2 and sliding_window_pattern 4 disagree"),
    (dict(logit_scale=0), "logit_scale"),
    (dict(use_qk_norm=True), "does not understand .*use_qk_norm"),
])
def test_refused_in_one_line(fields, match):
    with pytest.raises(LcprofError, match=match):
        spec(**fields)


def test_the_original_releases_fields_are_read():
    """Command R7B's own spellings, each what transformers hard-codes, load; layer_switch alone is the pattern."""
    s = spec(order_of_interleaved_layers="local_attn_first", position_embedding_type="rope_gptj", rotary_pct=1.0,
             use_gated_activation=True, use_embedding_sharing=True, head_dim=8, cache_implementation="hybrid")
    assert s.parallel_block
    assert [lyr.attn for lyr in spec(layer_switch=2).layers] == ["sliding", "global"] * 2
