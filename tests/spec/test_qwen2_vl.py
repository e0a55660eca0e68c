"""Qwen2-VL / Qwen2.5-VL: the text model read from a flat config (the Hub's form: text fields at the top level
beside vision_config) or from a text_config; Qwen2's layer, M-RoPE, the sliding rule. By hand; the published
checkpoint, when committed, in test_published_configs.py."""

from __future__ import annotations

import pytest

from lcprof.cost.model import kv_bytes
from lcprof.errors import LcprofError
from lcprof.spec import param_counts, spec_from_config

# hidden 64, 8 heads of 8, 2 KV heads, FFN 96, 4 layers, vocab 100; M-RoPE sections 1 + 1 + 2 = 4 pairs = 8 dims
TEXT = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, intermediate_size=96,
            vocab_size=100, max_position_embeddings=8192, rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]})
FLAT = dict(TEXT, model_type="qwen2_5_vl", vision_config={"depth": 2, "hidden_size": 32}, image_token_id=5,
            video_token_id=6, vision_start_token_id=7, vision_end_token_id=8, vision_token_id=9)


def test_flat_and_nested_configs_read_the_same_text_model():
    """q/k/v biased (64 + 16 + 16 per layer), o not; untied; the vision fields not counted (noted)."""
    flat = spec_from_config(dict(FLAT), name="t")
    nested = spec_from_config({"model_type": "qwen2_5_vl", "vision_config": {"depth": 2},
                               "text_config": dict(TEXT, model_type="qwen2_5_vl_text")}, name="t")
    layer = 2 * 64 * 64 + 2 * 64 * 16 + (64 + 16 + 16) + 3 * 64 * 96 + 2 * 64
    for s in (flat, nested):
        assert param_counts(s)["total_params"] == 4 * layer + 2 * 100 * 64 + 64
        assert s.text_model_of == "qwen2_5_vl" and s.rope.theta == 1e6 and s.rope.rotary_dim == 8
        assert s.qkv_bias and not s.o_bias
    assert "top-level text fields" in flat.notes and "text_config" in nested.notes
    assert spec_from_config(dict(FLAT, model_type="qwen2_vl"), name="t").text_model_of == "qwen2_vl"


def test_sliding_only_with_use_sliding_window():
    """sliding_window alone slides nothing; with use_sliding_window layers i >= max_window_layers slide.
    KV per layer per token: 2 heads x 8 x (K, V) x 2 B = 64 B; at n = 100, W = 16, max_window_layers 2:
    2 x 100 + 2 x 16 tokens."""
    assert {lyr.attn for lyr in spec_from_config(dict(FLAT, sliding_window=16), name="t").layers} == {"global"}
    s = spec_from_config(dict(FLAT, sliding_window=16, use_sliding_window=True, max_window_layers=2), name="t")
    assert [lyr.attn for lyr in s.layers] == ["global", "global", "sliding", "sliding"]
    assert int(kv_bytes(s, 100, kv_dtype="bf16")[0]) == (2 * 100 + 2 * 16) * 64


@pytest.mark.parametrize("fields,match", [
    (dict(rope_scaling={"type": "mrope", "mrope_section": [1, 1, 1]}), "mrope_section covers 3 pairs"),
    (dict(attention_bias=False), "does not understand .*attention_bias"),
    (dict(audio_config={"d": 1}), "does not understand .*audio_config"),
])
def test_refused_in_one_line(fields, match):
    with pytest.raises(LcprofError, match=match):
        spec_from_config(dict(FLAT, **fields), name="t")
