"""Qwen3-VL's text model from its wrapper (qwen3_vl, qwen3_vl_moe): shapes, MoE placement and refusals by hand.
The published Qwen3-VL-8B config is in test_published_configs.py."""

from __future__ import annotations

import pytest

from lcprof.errors import LcprofError
from lcprof.spec import param_counts, spec_from_config

TEXT = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, head_dim=8,
            intermediate_size=96, vocab_size=100, max_position_embeddings=8192,
            rope_scaling={"mrope_interleaved": True, "mrope_section": [2, 1, 1], "rope_type": "default"})


def wrapped(mt="qwen3_vl", text_type="qwen3_vl_text", tie=None, **text):
    cfg = {"model_type": mt, "image_token_id": 1, "vision_config": {"depth": 2},
           "text_config": dict(TEXT, model_type=text_type, **text)}
    if tie is not None:
        cfg["tie_word_embeddings"] = tie
    return spec_from_config(cfg, name="t", where="t")


def test_dense_text_model_by_hand():
    """Per layer: q, o 64 x 64; k, v 64 x 16; MLP 3 x 64 x 96; 2 norms; per-head q/k norms 2 x 8. The wrapper's
    tie_word_embeddings decides the LM head (False by default: a second 100 x 64 table)."""
    layer = 2 * 64 * 64 + 2 * 64 * 16 + 3 * 64 * 96 + 2 * 64 + 2 * 8
    s = wrapped()
    assert param_counts(s)["total_params"] == 4 * layer + 2 * 100 * 64 + 64
    assert param_counts(wrapped(tie=True))["total_params"] == 4 * layer + 100 * 64 + 64
    assert s.rope.theta == 5e5 and s.rope.rotary_dim == 8 and s.qk_norm == "head" and s.text_model_of == "qwen3_vl"


def test_moe_placement():
    """num_experts 4, top 2 of width 32 on layers with (i + 1) % 2 == 0 outside mlp_only_layers [3]: layer 1 only."""
    s = wrapped("qwen3_vl_moe", "qwen3_vl_moe_text", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                decoder_sparse_step=2, mlp_only_layers=[3], norm_topk_prob=True)
    assert [lyr.moe for lyr in s.layers] == [False, True, False, False]
    assert (s.moe.n_experts, s.moe.n_active, s.moe.n_shared, s.moe.expert_intermediate_size) == (4, 2, 0, 32)


@pytest.mark.parametrize("fields,match", [
    (dict(use_sliding_window=True, sliding_window=16), "does not understand .*sliding_window"),
    (dict(rope_scaling={"mrope_section": [2, 1, 0], "rope_type": "default"}), "mrope_section covers 3 pairs"),
])
def test_refused_in_one_line(fields, match):
    with pytest.raises(LcprofError, match=match):
        wrapped(**fields)
