"""By-hand mutants of the second 2026-12-04 session's code: the four-norm layer's fused traffic (Gemma 2,
GLM-4), LFM2's short convolution in the cost model and the spec, and the constants of the new config families
(Granite 3.x, GLM-4, HunYuan dense, LFM2) and of the rope_theta check: each applied alone to the source, the
owning tests run, the source restored. Run from the root of a copy of the checkout (the runner edits sources
in place): `python3 reports/mutation/run_families_2026_12_04b_mutants.py`.
Results: reports/mutation/families-2026-12-04b.md."""
from by_hand import run

COST = [["tests/spec/test_granite_glm.py", "tests/spec/test_lfm2.py"],
        ["tests/measure/test_tensor_audit.py", "-k", "sandwich or mup or postqk"],
        ["tests/measure/test_hybrid_layer.py", "-k", "lfm2"]]
SPEC = [["tests/spec/test_granite_glm.py", "tests/spec/test_lfm2.py", "tests/spec/test_published_configs.py",
         "tests/spec/test_transformers_agreement.py"]]
O, K = "lcprof/cost/ops.py", "lcprof/cost/kinds/shortconv.py"
DEC, HYB = "lcprof/spec/config/families/decoders.py", "lcprof/spec/config/families/hybrid.py"
M = [
    # the cost model: a four-norm layer's fused traffic; the short conv
    (O, "(per_block + (2 * h if spec.norms_per_layer >= 4 else 0))", "(per_block + (4 * h if spec.norms_per_layer >= 4 else 0))"),
    (K, 's * t * 6 * m.channels)', 's * t * 4 * m.channels)'),
    (K, '    return {"conv": check_tp(m.channels, tp, "short-conv channels") * (m.kernel - 1)}',
     '    return {"conv": check_tp(m.channels, tp, "short-conv channels") * m.kernel}'),
    (K, '"mixer/conv": X + Z + u + s * b * c * (n + K - 1) + cs + u,', '"mixer/conv": X + Z + u + s * b * c * (n + K - 1) + u,'),
    (K, '"mixer/gate": X + Z + u + cs + u,', '"mixer/gate": X + Z + cs + u,'),
    (K, '"mixer/out_proj": X + cs + u + s * t * m.hidden_size}', '"mixer/out_proj": X + u + s * t * m.hidden_size}'),
    (K, "    return [in_proj, conv_op(t, float(batch), m.channels, m.kernel, s), gates, out_proj]",
     "    return [in_proj, conv_op(t, float(batch), m.channels, m.kernel - 1, s), gates, out_proj]"),
    ("lcprof/cost/kinds/__init__.py", 'return dataclasses.replace(mixer, channels=check_tp(mixer.channels, tp, "short-conv channels"))',
     'return mixer'),
    ("lcprof/spec/mixers.py", '        return (Linear("in_proj", h, 3 * c, self.bias), Linear("out_proj", c, h, self.bias))',
     '        return (Linear("in_proj", h, 3 * c, self.bias), Linear("out_proj", c, h, False))'),
    ("lcprof/spec/mixers.py", '            out["conv_bias"] = self.channels', '            out["conv_bias"] = 0'),
    # Granite 3.x
    (DEC, "                residual_multiplier=1.0, attention_multiplier=1.0)\n# GlmConfig",
     "                residual_multiplier=1.0, attention_multiplier=0.5)\n# GlmConfig"),
    (DEC, "                  residual_factors=((None, rm), (None, rm), (None, rm)),\n                  embedding_multiplier",
     "                  residual_factors=None,\n                  embedding_multiplier"),
    (DEC, 'tie=r.bool("tie_word_embeddings"), rope=rope_of(r, hd, max_pos), qkv_bias=bias, o_bias=bias,\n                  mlp_bias=r.bool("mlp_bias"), attn_scale',
     'tie=r.bool("tie_word_embeddings"), rope=rope_of(r, hd, max_pos), qkv_bias=bias, o_bias=False,\n                  mlp_bias=r.bool("mlp_bias"), attn_scale'),
    # GLM-4
    (DEC, "rope_scaling=None, partial_rotary_factor=0.5,\n            attention_bias=True",
     "rope_scaling=None, partial_rotary_factor=1.0,\n            attention_bias=True"),
    (DEC, 'norms_per_layer=4 if r.model_type == "glm4" else 2)', 'norms_per_layer=2)'),
    (DEC, 'qkv_bias=r.bool("attention_bias"),\n                  o_bias=False,', 'qkv_bias=r.bool("attention_bias"),\n                  o_bias=r.bool("attention_bias"),'),
    # HunYuan dense
    (DEC, "    base = theta * alpha ** (hd / (hd - 2))", "    base = theta * alpha ** (hd / (hd - 1))"),
    (DEC, 'qk_norm="head",\n                  qk_norm_after_rope=True,', 'qk_norm="head",\n                  qk_norm_after_rope=False,'),
    (DEC, "_HUNYUAN = dict(num_key_value_heads=None, head_dim=None, rope_theta=10000.0, rope_scaling=None, attention_bias=False,\n                tie_word_embeddings=False,",
     "_HUNYUAN = dict(num_key_value_heads=None, head_dim=None, rope_theta=10000.0, rope_scaling=None, attention_bias=False,\n                tie_word_embeddings=True,"),
    # LFM2
    (HYB, "        inter = int(2 * inter / 3)\n", "        inter = int(3 * inter / 4)\n"),
    (HYB, "            inter = step * ((int(mult * inter) + step - 1) // step)", "            inter = step * (int(mult * inter) // step)"),
    (HYB, "_LFM2 = dict(num_key_value_heads=8, rope_theta=1_000_000.0, rope_scaling=None, tie_word_embeddings=True,",
     "_LFM2 = dict(num_key_value_heads=8, rope_theta=1_000_000.0, rope_scaling=None, tie_word_embeddings=False,"),
    (HYB, "             conv_bias=False, conv_L_cache=3,", "             conv_bias=False, conv_L_cache=4,"),
    (HYB, '    inter = r.int("block_ff_dim") if r.given("block_ff_dim") else r.int("intermediate_size")',
     '    inter = r.int("intermediate_size") if r.given("intermediate_size") else r.int("block_ff_dim")'),
    (HYB, "        idx = set(range(n_layers)) if idxs is None else set(idxs)", "        idx = set() if idxs is None else set(idxs)"),
    # the rope_theta check (both spellings given)
    ("lcprof/spec/config/common.py", "            if top != theta:", "            if False:"),
    ("lcprof/spec/config/common.py", "            if top != f:", "            if False:"),
]
# LFM2-MoE (added after the first run: `--lfm2-moe`)
M += [
    (HYB, "        moe_flags = [i >= n_dense for i in range(n_layers)]", "        moe_flags = [i > n_dense for i in range(n_layers)]"),
    (HYB, "                 conv_bias=False, conv_L_cache=3, num_dense_layers=2, num_experts_per_tok=4, num_experts=32,",
     "                 conv_bias=False, conv_L_cache=3, num_dense_layers=1, num_experts_per_tok=4, num_experts=32,"),
    (HYB, '                      expert_intermediate_size=r.int("moe_intermediate_size"), shared_intermediate_size=0)\n        moe_flags',
     '                      expert_intermediate_size=r.int("intermediate_size"), shared_intermediate_size=0)\n        moe_flags'),
    (HYB, '    if moe is None and r.bool("block_auto_adjust_ff_dim"):', '    if r.bool("block_auto_adjust_ff_dim"):'),
]
LFM2_MOE = list(range(27, 31))


def tests(path):
    return COST if path.startswith(("lcprof/cost", "lcprof/spec/mixers")) else SPEC


if __name__ == "__main__":
    import sys

    run([M[i] for i in (LFM2_MOE if "--lfm2-moe" in sys.argv else range(27))], tests)
