"""OLMo 2/3 and EXAONE 4: norms on each block's output. What each field changes, by hand; what the cost
model charges for the reordered norms (engine traffic, activation steps) against a pre-norm twin; refusals.
The byte-exact agreement with the measured layer is tests/measure/test_tensor_audit.py ("olmo", "exaone")."""

from __future__ import annotations

import pytest

from lcprof.cost.model import activation_steps, cost, kv_bytes
from lcprof.errors import LcprofError
from lcprof.spec import param_counts, spec_from_config

# hidden 64, 8 heads of 8, 2 KV heads, FFN 96, 4 layers, vocab 100
BASE = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, intermediate_size=96,
            vocab_size=100, max_position_embeddings=8192)
OLMO2, OLMO3, EXAONE = (dict(BASE, model_type=mt) for mt in ("olmo2", "olmo3", "exaone4"))


def spec(cfg, **kw):
    return spec_from_config(dict(cfg, **kw), name="t", where="t")


def test_olmo_parameters_by_hand():
    """Per layer: q, o 64 x 64; k, v 64 x 16; MLP 3 x 64 x 96; 2 norms of 64; q_norm over all of q (64) and
    k_norm over all of k (16). Untied embedding and LM head, final norm."""
    layer = 2 * 64 * 64 + 2 * 64 * 16 + 3 * 64 * 96 + 2 * 64 + 64 + 16
    assert param_counts(spec(OLMO2))["total_params"] == 4 * layer + 2 * 100 * 64 + 64
    assert param_counts(spec(OLMO3))["total_params"] == 4 * layer + 2 * 100 * 64 + 64
    # attention_bias: q, k, v and o biased (64 + 16 + 16 + 64)
    assert param_counts(spec(OLMO2, attention_bias=True))["total_params"] == 4 * (layer + 160) + 2 * 100 * 64 + 64
    # EXAONE 4 norms q and k per head: two norms of head_dim 8
    layer_ex = layer - (64 + 16) + 2 * 8
    assert param_counts(spec(EXAONE))["total_params"] == 4 * layer_ex + 2 * 100 * 64 + 64


def test_schedules_and_rope():
    s = spec(OLMO3)  # Olmo3Config: sliding on 3 of every 4 layers, window 4096, theta 5e5
    assert [(lyr.attn, lyr.window) for lyr in s.layers] == [("sliding", 4096)] * 3 + [("global", None)]
    assert all(lyr.rope for lyr in s.layers) and s.rope.theta == 5e5 and s.qk_norm == "full" and s.output_norms
    assert {lyr.attn for lyr in spec(OLMO2).layers} == {"global"} and spec(OLMO2).rope.theta == 1e4
    # EXAONE 4: pattern 4 by default; with a window the full layers have no RoPE
    e = spec(EXAONE, sliding_window=16)
    assert [(lyr.attn, lyr.window, lyr.rope) for lyr in e.layers] == [("sliding", 16, True)] * 3 + [("global", None, False)]
    assert [lyr.attn for lyr in spec(EXAONE, sliding_window_pattern="LG").layers] == ["sliding", "global"] * 2
    assert [lyr.attn for lyr in spec(EXAONE, sliding_window_pattern=2).layers] == ["sliding", "global"] * 2
    # no window: every layer global, every layer rotated (EXAONE 4.0 1.2B)
    assert {(lyr.attn, lyr.rope) for lyr in spec(EXAONE, sliding_window=None).layers} == {("global", True)}
    # KV at n = 100, W = 16: 3 sliding layers x 16 + 1 global x 100 tokens, 2 heads x 8 x (K, V) x 2 B = 64 B each
    assert int(kv_bytes(e, 100, kv_dtype="bf16")[0]) == (3 * 16 + 100) * 64


def test_olmo3_rope_parameters_per_layer_type():
    """transformers 5 writes OLMo 3's RoPE per layer type; YaRN on the full layers only (a note says lcprof's
    one RoPE is theirs)."""
    rp = {"full_attention": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 1024,
                             "rope_theta": 5e5},
          "sliding_attention": {"rope_type": "default", "rope_theta": 5e5}}
    s = spec(OLMO3, rope_parameters=rp)
    assert (s.rope.type, s.rope.factor, s.rope.theta) == ("yarn", 8.0, 5e5)
    assert "full layers yarn" in s.notes
    with pytest.raises(LcprofError, match="per-layer-type entries and also 'factor'"):
        spec(OLMO3, rope_parameters=dict(rp, factor=2.0))


def test_engine_traffic_norm_and_add_apart():
    """vLLM's Olmo2 layer runs the norm on the block's output, then the add: read + write h, then read 2h +
    write h -- 5h per block against the fused add + RMSNorm's 4h of a pre-norm layer. fp32 (s = 4), n = 20,
    two blocks: 2 x 1 x 4 x 20 x 64 B more. Unfused the two move the same bytes (a norm and an add each)."""
    olmo = spec(OLMO2)
    pre = olmo.replace(output_norms=False)

    def ew(sp, mode):
        return float(cost(sp, 20, layer=0, dtype="fp32", elementwise=mode).bytes["misc/elementwise"][0])
    assert ew(olmo, "fused") - ew(pre, "fused") == 2 * 1 * 4 * 20 * 64
    assert ew(olmo, "unfused") == ew(pre, "unfused")


def test_activation_steps_by_hand():
    """One bf16 token (s = 2, h = 64), tiled, OLMo 2 layer 0 (RoPE over head_dim 8: tables 2 x 8 x 2 B = 32 B
    resident). No input norm steps; the MLP reads x + mix itself: act(gate), up and their product (3 x 96 x 2)
    beside x and x + mix (2 x 64 x 2), against a pre-norm twin's extra normed copy (64 x 2)."""
    olmo = spec(OLMO2)
    steps = activation_steps(olmo, 1, dtype="bf16", family="tiled", layer=0)
    pre = activation_steps(olmo.replace(output_norms=False), 1, dtype="bf16", family="tiled", layer=0)
    assert "attn/input_norm" not in steps and "mlp/norm" not in steps and "attn/input_norm" in pre
    assert steps["mlp/act"][0] == 2 * 64 * 2 + 3 * 96 * 2 + 32 == pre["mlp/act"][0] - 64 * 2
    # the attention output normed before the add: x, the output, the norm's fp32 copy, square, scaled x and
    # product (8 + 2 + 2 B per element on top of the input): 64 x (2 + 2 + 12) + 32
    assert steps["attn/out_norm"][0] == 64 * (2 + 2 + 12) + 32
    # the MLP output normed before the add: x, x + mix, the output and the norm's transients
    assert steps["mlp/out_norm"][0] == 2 * 64 * 2 + 64 * 2 + 64 * 12 + 32 and "mlp/out_norm" not in pre


@pytest.mark.parametrize("cfg,fields,match", [
    (EXAONE, dict(sliding_window_pattern="LXG", sliding_window=16), "sliding_window_pattern"),
    (EXAONE, dict(sliding_window_pattern=0, sliding_window=16), "sliding_window_pattern"),
    (EXAONE, dict(attention_bias=True), "does not understand .*attention_bias"),
    (OLMO3, dict(layer_types=["sliding_attention"] * 4, sliding_window=None), "sliding_window is not set"),
    (OLMO2, dict(sliding_window=4096), "does not understand .*sliding_window"),
])
def test_refused_in_one_line(cfg, fields, match):
    with pytest.raises(LcprofError, match=match):
        spec(cfg, **fields)
