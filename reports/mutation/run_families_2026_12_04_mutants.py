"""By-hand mutants of the 2026-12-04 session's code: the output norms (OLMo 2/3, EXAONE 4) and the parallel
block with its LayerNorm (Cohere 2) in the cost model and the planner, and the constants of the new and fixed
config families (SmolLM3, Seed-OSS, OLMo, EXAONE 4, Cohere 2, gpt-oss's RoPE default, MiMo-V2-Flash's window):
each is applied alone to the source, the owning tests run, the source restored. Run from the root of a copy
of the checkout (the runner edits sources in place): `python3 reports/mutation/run_families_2026_12_04_mutants.py`.
Results: reports/mutation/families-2026-12-04.md."""
from by_hand import run

COST = ["tests/measure/test_tensor_audit.py", "tests/spec/test_output_norms.py", "tests/spec/test_cohere2.py",
        "tests/spec/test_ministral3.py",
        "-k", "olmo or exaone or parallel or qscale or output or cohere or Cohere or engine or traffic or steps or scaling"]
SPEC = ["tests/spec/test_output_norms.py", "tests/spec/test_cohere2.py", "tests/spec/test_smollm3_seed_oss.py",
        "tests/spec/test_ministral3.py", "tests/spec/test_qwen3_vl.py",
        "tests/spec/test_published_configs.py", "tests/spec/test_transformers_agreement.py"]
O = "lcprof/cost/ops.py"
D = "lcprof/cost/model.py"
M = [
    # the cost model: output norms
    (O, "per_block = 5 * h  # residual is the normed input; OLMo's", "per_block = 4 * h  # residual is the normed input; OLMo's"),
    (D, "        steps: dict[str, float] = {}\n        base = x_in\n", "        steps: dict[str, float] = {}\n        base = x_in + s * h\n"),
    (D, 'steps_n["attn/out_norm"] = b * n_arr * (x_in + s * h + _block_norm_extra(spec, h, s))',
     'steps_n["attn/out_norm"] = b * n_arr * (x_in + _block_norm_extra(spec, h, s))'),
    (D, '        steps = {"mlp/act": act}\n', '        steps = {"mlp/act": act + b * n_arr * s * h}\n'),
    (D, "if spec.norms_per_layer >= 4 or spec.output_norms:  # Gemma 2, OLMo", "if spec.norms_per_layer >= 4:  # Gemma 2, OLMo"),
    # the cost model: the parallel block and its LayerNorm
    (O, "return 1 if (spec.parallel_block and blocks == 2) else blocks", "return blocks"),
    (O, "        total = 8 * h\n", "        total = 9 * h\n"),
    (O, "    per_elem = 10 * f + (2 * (s + f) if s < 4 else 0)", "    per_elem = 10 * f + (2 * (s + f) if s < 2 else 0)"),
    (O, "    return tokens * (width * per_elem + 8 * f) + s * width\n", "    return tokens * (width * per_elem + 7 * f) + s * width\n"),
    (D, "    return width * 8 + 4\n", "    return width * 8 + 8\n"),
    (D, "return _layer_norm_extra(h, s) if spec.layer_norm else", "return _norm_extra(h, s) if spec.layer_norm else"),
    (D, '        steps = {"mlp/act": act + b * n_arr * s * h}  # beside x', '        steps = {"mlp/act": act}  # beside x'),
    ("lcprof/plan/activation.py", "        base = base + h\n", "        base = base + 0\n"),
    # config families
    ("lcprof/spec/config/families/decoders.py", "_SMOLLM3 = dict(num_key_value_heads=4, rope_theta=2_000_000.0,",
     "_SMOLLM3 = dict(num_key_value_heads=4, rope_theta=1_000_000.0,"),
    ("lcprof/spec/config/families/decoders.py", 'no_rope_layers=None, no_rope_layer_interval=4, layer_types=None,',
     'no_rope_layers=None, no_rope_layer_interval=3, layer_types=None,'),
    ("lcprof/spec/config/families/decoders.py", 'if (use and sw is not None and not nrl[i]) else "full_attention"',
     'if (use and sw is not None and nrl[i]) else "full_attention"'),
    ("lcprof/spec/config/families/decoders.py", "tie=r.bool(\"tie_word_embeddings\"), rope=rope_of(r, hd, max_pos), qkv_bias=bias, o_bias=bias,\n                  mlp_bias",
     "tie=r.bool(\"tie_word_embeddings\"), rope=rope_of(r, hd, max_pos), qkv_bias=bias, o_bias=False,\n                  mlp_bias"),
    ("lcprof/spec/config/families/decoders.py", "_SEED_OSS = dict(num_key_value_heads=8, head_dim=128,", "_SEED_OSS = dict(num_key_value_heads=8, head_dim=None,"),
    ("lcprof/spec/config/families/decoders.py", 'qkv_bias=r.bool("attention_bias"), o_bias=r.bool("attention_out_bias"),',
     'qkv_bias=r.bool("attention_bias"), o_bias=r.bool("attention_bias"),'),
    ("lcprof/spec/config/families/decoders.py", '_GPT_OSS_YARN = {"rope_type": "yarn", "factor": 32.0,', '_GPT_OSS_YARN = {"rope_type": "yarn", "factor": 16.0,'),
    ("lcprof/spec/config/families/hybrid.py", "    w = size + 1 if size is not None else", "    w = size if size is not None else"),
    ("lcprof/spec/config/families/reordered.py", '_OLMO3 = dict(_OLMO2, rope_theta=500000.0,', '_OLMO3 = dict(_OLMO2, rope_theta=10000.0,'),
    ("lcprof/spec/config/families/reordered.py", 'types = ["sliding_attention" if (i + 1) % 4 else "full_attention" for i in range(n_layers)]',
     'types = ["sliding_attention" if (i + 1) % 3 else "full_attention" for i in range(n_layers)]'),
    ("lcprof/spec/config/families/reordered.py", 'rope=_rope(r, hd, max_pos, notes), qkv_bias=bias, o_bias=bias, qk_norm="full",',
     'rope=_rope(r, hd, max_pos, notes), qkv_bias=bias, o_bias=bias, qk_norm="head",'),
    ("lcprof/spec/config/families/reordered.py", "    rope_flags = [sw is None or k == \"sliding\" for k, _ in kinds]",
     "    rope_flags = [True for k, _ in kinds]"),
    ("lcprof/spec/config/families/reordered.py", 'if pat[i % len(pat)] == "L" else "full_attention"', 'if pat[i % len(pat)] != "G" and i else "full_attention"'),
    ("lcprof/spec/config/families/reordered.py", "_EXAONE4 = dict(num_key_value_heads=32, head_dim=None, rope_theta=10000.0, rope_scaling=None, sliding_window=4096,\n                sliding_window_pattern=4,",
     "_EXAONE4 = dict(num_key_value_heads=32, head_dim=None, rope_theta=10000.0, rope_scaling=None, sliding_window=4096,\n                sliding_window_pattern=6,"),
    ("lcprof/spec/config/families/cohere.py", "        p = pattern or 4\n", "        p = pattern or 6\n"),
    ("lcprof/spec/config/families/cohere.py", 'rope_flags=[k == "sliding" for k, _ in kinds]', 'rope_flags=[True for k, _ in kinds]'),
    ("lcprof/spec/config/families/cohere.py", "logits_scaling=1.0 / scale,", "logits_scaling=scale,"),
    ("lcprof/spec/config/families/cohere.py", "tie=tie, rope=rope_of(r, hd, max_pos), qkv_bias=bias, o_bias=bias, norms_per_layer=1,",
     "tie=tie, rope=rope_of(r, hd, max_pos), qkv_bias=bias, o_bias=bias, norms_per_layer=2,"),
    ("lcprof/spec/config/families/cohere.py", "_COHERE2 = dict(vocab_size=256000, logit_scale=0.0625,", "_COHERE2 = dict(vocab_size=256000, logit_scale=0.25,"),
    # Ministral 3's query scaling (added after the first run: `--ministral3`)
    (O, "    return tokens * width * 2 * s + positions * (8 + 12 + 5 * 8 + cast + s)",
     "    return tokens * width * 2 * s + positions * (8 + 12 + 5 * 8 + cast)"),
    (O, "    cast = 4 + s if s < 4 else 0\n", "    cast = 4 if s < 4 else 0\n"),
    (O, "if spec.query_temperature_at(layer) or spec.query_scaling:  # Llama 4's NoPE layers, Ministral 3's",
     "if spec.query_temperature_at(layer):  # Llama 4's NoPE layers, Ministral 3's"),
    (D, 'steps_n["attn/q_scaling"] = live_n + b * n_arr * scaled_q + n_arr * s', 'steps_n["attn/q_scaling"] = live_n + n_arr * s'),
    ("lcprof/spec/config/families/decoders.py", '"original_max_position_embeddings": 16384, "beta_fast": 32.0, "beta_slow": 1.0,\n                    "mscale_all_dim": 1.0, "mscale": 1.0, "llama_4_scaling_beta": 0.1}',
     '"original_max_position_embeddings": 16384, "beta_fast": 32.0, "beta_slow": 1.0,\n                    "mscale_all_dim": 1.0, "mscale": 1.0, "llama_4_scaling_beta": 0.2}'),
    ("lcprof/spec/config/families/decoders.py", "_MINISTRAL3 = dict(num_key_value_heads=8, head_dim=128,", "_MINISTRAL3 = dict(num_key_value_heads=8, head_dim=None,"),
]
MINISTRAL3 = list(range(32, 38))
M += [
    # Qwen3-VL's text model (added last: `--qwen3-vl`)
    ("lcprof/spec/config/families/decoders.py", "_QWEN3_VL = dict(num_key_value_heads=32, head_dim=128, rope_theta=500000.0,",
     "_QWEN3_VL = dict(num_key_value_heads=32, head_dim=128, rope_theta=1000000.0,"),
    ("lcprof/spec/config/families/decoders.py", "tie=r.bool(\"tie_word_embeddings\"), rope=rope_of(r, hd, max_pos), moe=moe, qkv_bias=bias, o_bias=bias,\n                  qk_norm=\"head\")",
     "tie=r.bool(\"tie_word_embeddings\"), rope=rope_of(r, hd, max_pos), moe=moe, qkv_bias=bias, o_bias=bias,\n                  qk_norm=\"none\")"),
    ("lcprof/spec/config/families/decoders.py", "expert_intermediate_size=r.int(\"moe_intermediate_size\"), shared_intermediate_size=0)\n        flags = C.moe_by_sparse_step(r, n_layers, n_exp)\n    bias = r.bool(\"attention_bias\")\n    return finish(r, ctx, kinds=[(\"global\", None)] * n_layers, moe_flags=flags,",
     "expert_intermediate_size=r.int(\"moe_intermediate_size\"), shared_intermediate_size=0)\n        flags = [True] * n_layers\n    bias = r.bool(\"attention_bias\")\n    return finish(r, ctx, kinds=[(\"global\", None)] * n_layers, moe_flags=flags,"),
]
QWEN3_VL = list(range(38, 41))


def tests(path):
    return COST if path.startswith(("lcprof/cost", "lcprof/plan")) else SPEC


if __name__ == "__main__":
    import sys

    pick = MINISTRAL3 if "--ministral3" in sys.argv else QWEN3_VL if "--qwen3-vl" in sys.argv else range(32)
    run([M[i] for i in pick], tests)
