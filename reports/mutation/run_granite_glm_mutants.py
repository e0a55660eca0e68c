"""By-hand mutants of the Granite 4.0-H and GLM-4.5 families, the scaled residual's products, the logits'
scaling, flash-attn's soft-capping and the report's page-width fixes (2026-12-02, fifth session): each is
applied alone to the source, the owning tests run, the source restored. Run from the repo root:
`python3 reports/mutation/run_granite_glm_mutants.py`. Results: reports/mutation/granite-glm.md."""
from by_hand import run

TESTS = ["tests/cost/test_hybrid_kinds.py", "tests/measure/test_granite.py", "tests/spec/test_published_configs.py", "tests/measure/test_minimax_residual.py",
         "tests/measure/test_score_ops.py", "tests/explain/test_report.py", "tests/explain/test_report_browser.py",
         "tests/measure/test_transformers_impl.py", "-k", "granite or glm or minimax or Granite or GLM or residual or "
         "flash or environment or report or score or published or every or falcon"]
M = [
    ("lcprof/cost/ops.py", "per_block = (5 + 2 * spec.residual_products) * h", "per_block = (5 + spec.residual_products) * h"),
    ("lcprof/cost/ops.py", "(3 + 2 * spec.residual_products) * s * t * h", "(3 + spec.residual_products) * s * t * h"),
    ("lcprof/spec/model.py", "return 1 if self.residual_factors[0][0] is None else 2", "return 2"),
    ("lcprof/cost/ops.py", "(2 if spec.logits_scaling is not None else 0)", "(1 if spec.logits_scaling is not None else 0)"),
    ("lcprof/measure/model.py", "logits = logits / spec.logits_scaling", "pass"),
    ("lcprof/measure/model.py", "return x * spec.embedding_multiplier", "return x"),
    ("lcprof/measure/layer.py", "return res + out * beta", "return res + out"),
    ("lcprof/measure/layer.py", "spec.attn_scale if spec.attn_scale is not None else \\", "None or \\"),
    ("lcprof/spec/config/families/hybrid.py", "moe=bool(n_exp)) for k in kinds]", "moe=False) for k in kinds]"),
    ("lcprof/spec/config/families/hybrid.py", "n_shared=1 if shared else 0,", "n_shared=0,"),
    ("lcprof/spec/config/families/hybrid.py", "rope = rope_of_full(r, hd, max_pos)", "rope = None"),
    ("lcprof/spec/config/families/hybrid.py", "mlp_w = shared  #", "mlp_w = inter  #"),
    ("lcprof/spec/config/families/hybrid.py", "residual_factors=((None, rm), (None, rm), (None, rm))", "residual_factors=None"),
    ("lcprof/spec/config/families/hybrid.py", "attn_scale=attn_scale,", "attn_scale=None,"),
    ("lcprof/spec/config/families/deepseek.py", "flags = [i >= first for i in range(n_layers)]", "flags = [i > first for i in range(n_layers)]"),
    ("lcprof/spec/config/families/deepseek.py", 'qkv_bias=r.bool("attention_bias"), o_bias=False,', 'qkv_bias=r.bool("attention_bias"), o_bias=r.bool("attention_bias"),'),
    ("lcprof/spec/config/families/deepseek.py", 'qk_norm="head" if r.bool("use_qk_norm") else "none"', 'qk_norm="none"'),
    ("lcprof/measure/layer.py", 'default = "sigmoid" if spec.model_type == "glm4_moe" else "softmax"', 'default = "softmax"'),
    ("lcprof/measure/backends.py", 'kwargs["softcap"] = float(softcap)', "pass"),
    ("lcprof/measure/backends.py", "        if not takes:\n", "        if False:\n"),
    ("lcprof/explain/report.py", "if len(text) <= ENV_VALUES_LISTED:", "if True:"),
    ("lcprof/explain/report.py", 'm.group(2).replace("_", "_<wbr>")', "m.group(2)"),
    ("lcprof/explain/report.py", "padding:2px 6px}th{", "padding:2px 6px;white-space:nowrap}th{"),
    # Falcon-H1's muP multipliers
    ("lcprof/cost/ops.py", "per_token += 2 * (2 * h + d.n_kv_heads * d.head_dim)", "per_token += 2 * (2 * h)"),
    ("lcprof/cost/ops.py", "per_token += 2 * (2 * h + width)", "per_token += 2 * (h + width)"),
    ("lcprof/cost/ops.py", "        once += width\n", "        once += 0\n"),
    ("lcprof/cost/ops.py", "per_token += 2 * (spec.mlp_width(layer) + h)", "per_token += 2 * spec.mlp_width(layer)"),
    ("lcprof/cost/ops.py", "per_block = 5 * h if (spec.norm_bias or spec.mup_multipliers) else 4 * h",
     "per_block = 5 * h if spec.norm_bias else 4 * h"),
    ("lcprof/spec/config/families/hybrid.py", "mup_multipliers=True,", "mup_multipliers=False,"),
    ("lcprof/spec/config/families/hybrid.py", "logits_scaling=1.0 / lm)", "logits_scaling=lm)"),
]
run(M, lambda path: TESTS)
