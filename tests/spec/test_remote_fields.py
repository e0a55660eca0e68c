"""Fields that published checkpoints carry from their own remote code and that transformers' classes do not read
(Phi-4-mini's, Qwen3-Coder's): accepted at the values under which the remote code and transformers build the same
model, refused in one line otherwise -- never silently dropped."""

from __future__ import annotations

import pytest

from lcprof.errors import LcprofError
from lcprof.spec import param_counts, spec_from_config

PHI3 = dict(model_type="phi3", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=96, vocab_size=100, max_position_embeddings=8192)
QWEN3_MOE = dict(model_type="qwen3_moe", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, intermediate_size=96, vocab_size=100, max_position_embeddings=8192,
                 moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2)
QWEN3 = {k: v for k, v in QWEN3_MOE.items() if k not in ("moe_intermediate_size", "num_experts", "num_experts_per_tok")}
QWEN3["model_type"] = "qwen3"


def spec(base, **kw):
    return spec_from_config(dict(base, **kw), name="t", where="t")


def test_accepted_values_change_nothing():
    """Phi-4-mini's full_attn_mod 1, interpolate_factor 1, lm_head_bias / mlp_bias false; Qwen3-Coder's
    qkv_bias false (= attention_bias), use_qk_norm true, shared_expert_intermediate_size 0: the same counts as
    without them."""
    for base, extra in ((PHI3, dict(full_attn_mod=1, interpolate_factor=1, lm_head_bias=False, mlp_bias=False)),
                        (QWEN3_MOE, dict(qkv_bias=False, use_qk_norm=True, shared_expert_intermediate_size=0)),
                        (QWEN3, dict(qkv_bias=False, use_qk_norm=True))):
        assert param_counts(spec(base, **extra)) == param_counts(spec(base))
    # the Qwen3-MoE layer by hand: q, o 2 x 64 x 64; k, v 2 x 64 x 32; q/k norms 2 x 16; router 64 x 4; 4 experts
    # of 3 x 64 x 16; 2 norms; untied 100 x 64 tables, final norm
    layer = 2 * 64 * 64 + 2 * 64 * 32 + 2 * 16 + 64 * 4 + 4 * 3 * 64 * 16 + 2 * 64
    assert param_counts(spec(QWEN3_MOE, qkv_bias=False))["total_params"] == 2 * layer + 2 * 100 * 64 + 64


@pytest.mark.parametrize("base,fields,match", [
    (PHI3, dict(lm_head_bias=True), "lm_head_bias true"),
    (PHI3, dict(mlp_bias=True), "mlp_bias true"),
    (PHI3, dict(full_attn_mod=2), "full_attn_mod 2"),
    (PHI3, dict(interpolate_factor=4), "interpolate_factor 4"),
    (QWEN3_MOE, dict(use_qk_norm=False), "use_qk_norm false"),
    (QWEN3_MOE, dict(qkv_bias=True), "qkv_bias True with attention_bias False"),
    (QWEN3_MOE, dict(shared_expert_intermediate_size=64), "no shared expert"),
    (QWEN3, dict(use_qk_norm=False), "use_qk_norm false"),
])
def test_other_values_are_refused_naming_the_field(base, fields, match):
    with pytest.raises(LcprofError, match=match):
        spec(base, **fields)
