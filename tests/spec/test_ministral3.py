"""Ministral 3: Mistral's layer with Llama 4's per-position query scaling on every layer. What the fields
change, by hand; the scaling's cost against a twin without it; refusals. The byte-exact agreement with the
measured layer is tests/measure/test_tensor_audit.py ("qscale"); transformers' own layer is
tests/measure/test_transformers_impl.py ("ministral3")."""

from __future__ import annotations

import pytest

from lcprof.cost.model import activation_steps, cost
from lcprof.errors import LcprofError
from lcprof.spec import param_counts, spec_from_config

# hidden 64, 4 heads of 16, 2 KV heads, FFN 96, 2 layers, vocab 100
BASE = dict(model_type="ministral3", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, intermediate_size=96, vocab_size=100, max_position_embeddings=8192)


def spec(**kw):
    return spec_from_config(dict(BASE, **kw), name="t", where="t")


def test_defaults_are_ministral3configs():
    """No rope parameters: YaRN x16 from 16384 with beta 0.1, theta 1e6; head_dim 128 when the config names none
    (Ministral3Config's default, not hidden / heads); one window for every layer, none by default."""
    s = spec()
    assert s.query_scaling == (0.1, 16384)
    assert (s.rope.type, s.rope.factor, s.rope.original_max_position, s.rope.theta) == ("yarn", 16.0, 16384, 1e6)
    omitted = spec_from_config({k: v for k, v in BASE.items() if k != "head_dim"}, name="t")
    assert omitted.head_dim == 128 and spec(head_dim=None).head_dim == 16  # null: hidden / heads
    assert {lyr.attn for lyr in s.layers} == {"global"}
    assert {(lyr.attn, lyr.window) for lyr in spec(sliding_window=32).layers} == {("sliding", 32)}
    layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 96 + 2 * 64
    assert param_counts(s)["total_params"] == 2 * layer + 2 * 100 * 64 + 64  # untied by default


def test_query_scaling_bytes_by_hand():
    """fp32 (s = 4), n = 20 tokens, q 4 x 16 = 64 wide. Unfused: q x scale into a new q (read 4, write 4 per
    element), per position the int64 position (8), / original (read 8, write 4), floor, 1 +, log, beta x, 1 +
    (read 4, write 4 each) and the product's read (4): 20 x (64 x 8 + 8 + 12 + 40 + 4). Fused: in place, 2 x 64
    x 4 per token. bf16 adds the cast (read 4, write 2) per position."""
    s = spec()
    twin = s.replace(query_scaling=None)

    def ew(sp, mode, dtype="fp32"):
        return float(cost(sp, 20, layer=0, dtype=dtype, elementwise=mode).bytes["misc/elementwise"][0])
    assert ew(s, "unfused") - ew(twin, "unfused") == 20 * (64 * 8 + 8 + 12 + 40 + 4)
    assert ew(s, "fused") - ew(twin, "fused") == 20 * 2 * 64 * 4
    assert ew(s, "unfused", "bf16") - ew(twin, "unfused", "bf16") == 20 * (64 * 4 + 8 + 12 + 40 + 6 + 2)


def test_activation_step_by_hand():
    """One bf16 token, tiled, layer 0: the step holds the rotated q, k, v and x and its normed copy
    (2 x 64 + 64 + 2 x 32, 2 B each), the scaled q (64 x 2), the per-position scale (2 B) and the RoPE tables
    (2 x 16 x 2 B)."""
    st = activation_steps(spec(), 1, dtype="bf16", family="tiled", layer=0)
    assert st["attn/q_scaling"][0] == 2 * (2 * 64 + 64 + 2 * 32) + 64 * 2 + 2 + 2 * 16 * 2
    assert "attn/q_scaling" not in activation_steps(spec().replace(query_scaling=None), 1, dtype="bf16", layer=0)


@pytest.mark.parametrize("fields,match", [
    (dict(layer_types=["sliding_attention", "full_attention"], sliding_window=8), "ignores it"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                           "rope_theta": 1e4}), "without llama_4_scaling_beta"),
    (dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4, "llama_4_scaling_beta": 0.1}),
     "needs original_max_position_embeddings"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                           "rope_theta": 1e4, "llama_4_scaling_beta": 0.1, "max_position_embeddings": 4096}),
     "differs from max_position_embeddings 8192"),
])
def test_refused_in_one_line(fields, match):
    with pytest.raises(LcprofError, match=match):
        spec(**fields)
