"""By-hand mutants of Kimi Linear: the KDA mixer's spec, cost model, activation steps and measured layer, the
kimi_linear config family, KDA's tensor-parallel layout and MLA's latent-norm epsilon (2026-12-03, sixth
session): each is applied alone to the source, the owning tests run, the source restored. Run from the repo
root: `python3 reports/mutation/run_kimi_linear_mutants.py`. Results: reports/mutation/kimi-linear.md."""
from by_hand import run

TESTS = ["tests/measure/test_mixers.py", "tests/spec/test_kimi_linear.py", "tests/spec/test_published_configs.py",
         "tests/plan/test_weights.py", "tests/measure/test_hybrid_layer.py", "tests/measure/test_transformers_impl.py",
         "tests/cost/test_presets.py", "-k", "kda or kimi or Kimi or mixer or published or every or tensors_split"]
K = "lcprof/cost/kinds/kda.py"
S = "lcprof/spec/mixers.py"
F = "lcprof/spec/config/families/kimi.py"
X = "lcprof/measure/mixers/kda.py"
M = [
    # cost model: chunking and pair counts
    (K, "CHUNK = 64\n", "CHUNK = 32\n"),
    (K, "SUB = 16\n", "SUB = 8\n"),
    (K, "return full * sub * sub + rem * rem", "return full * sub * sub + rem"),
    (K, "below = full * (q * q - _diag_pairs(q, sub)) / 2 +", "below = full * (q * q - _diag_pairs(q, sub)) / 4 +"),
    (K, 'chunked(pair * (tri - n - below))', 'chunked(pair * (tri - below))'),
    (K, "solve = b * H * 2 * d * (sq - n)", "solve = b * H * d * (sq - n)"),
    (K, 'chunked(2 * b * H * d * sq), chunked(2 * b * H * d * tri)', 'chunked(2 * b * H * d * tri), chunked(2 * b * H * d * tri)'),
    (K, 'Op("mixer/state_read", 2 * sd, 2 * sd, zero)', 'Op("mixer/state_read", sd, sd, zero)'),
    # bytes
    (K, "s * t * w + 4 * w + 4 * H + 4 * t * w", "s * t * w + 4 * w + 4 * H + 2 * t * w"),
    (K, "core_io = s * t * 4 * w + 4 * t * w + 4 * t * H", "core_io = s * t * 4 * w + 4 * t * H + 4 * t * H"),
    (K, "2 * ss * b * H * d * d", "ss * b * H * d * d"),
    (K, '"mixer/norm", zero, zero, s * t * 3 * w + s * d', '"mixer/norm", zero, zero, s * t * 2 * w + s * d'),
    # activation steps
    (K, "diag = 2 * ci * ci * d + ci * ci", "diag = ci * ci * d + ci * ci"),
    (K, "below = (2 * ci * d + i0 * d + ci * i0) if j", "below = (ci * d + i0 * d + ci * i0) if j"),
    (K, "pairs = loop + 3 * qk1 + qk1 + 2 * sq", "pairs = loop + 3 * qk1 + 2 * sq"),
    (K, "base0 + FB + beta + gw + 2 * c * H])", "base0 + FB + beta + gw])"),
    (K, 'st["mixer/chunk_state"] = np.where(chunked, loop + 3 * qk1 + bh * d + c * S_el, 0.0)',
     'st["mixer/chunk_state"] = np.where(chunked, loop + 3 * qk1 + c * S_el, 0.0)'),
    (K, 'st["mixer/g_proj"] = post + s * t * d + s * t * w', 'st["mixer/g_proj"] = post + s * t * w'),
    # the spec's shapes and state
    (S, '"A_log": self.n_heads, "dt_bias": self.width,', '"A_log": self.n_heads, "dt_bias": self.n_heads,'),
    (S, "        return 3 * self.width\n", "        return 2 * self.width\n"),
    (S, '"recurrent": self.n_heads * self.head_dim * self.head_dim}', '"recurrent": self.n_heads * self.head_dim}'),
    (S, 'Linear("g_a_proj", h, d), Linear("g_b_proj", d, w)', 'Linear("g_b_proj", d, w)'),
    # the measured layer
    (X, "g.mul_(-torch.exp(self.A_log.to(sc))[:, None])", "g.mul_(-torch.exp(self.A_log.to(sc))[:1, None])"),
    (X, "er = (gam[:, :, i0:i1] - ref).exp_()", "er = (gam[:, :, i0:i1] - ref)"),
    (X, 'gate="sigmoid")', 'gate="silu")'),
    ("lcprof/measure/layer.py", "            latent_eps = 1e-6\n", "            latent_eps = eps\n"),
    # the config family
    (F, "flags = [i + 1 in kset for i in range(n_layers)]", "flags = [i in kset for i in range(n_layers)]"),
    (F, "n_shared=r.int(\"num_shared_experts\", min=0, null=True) or 0,", "n_shared=0,"),
    (F, "flags = C.moe_by_layer_types_or_first_dense(r, n_layers)", "flags = [True] * n_layers"),
    (F, "if not r.bool(\"mla_use_nope\"):", "if False:"),
    (F, '(k == "use_full_rank_gate" and lac[k] is False)', '(k == "use_full_rank_gate")'),
    (F, '        max_pos = r.int("model_max_length")\n', '        max_pos = 131072\n'),
    # KDA under tensor parallelism (vLLM's layout)
    ("lcprof/cost/weights.py", '_REPLICATED_LINEARS = {("kda", "f_a_proj"), ("kda", "g_a_proj")}',
     '_REPLICATED_LINEARS = {("kda", "f_a_proj")}'),
    ("lcprof/cost/weights.py", '_ROW_PARALLEL = ("out_proj", "x_proj", "o_proj")', '_ROW_PARALLEL = ("out_proj", "x_proj")'),
    ("lcprof/cost/kinds/__init__.py", 'return dataclasses.replace(mixer, n_heads=check_tp(mixer.n_heads, tp, "KDA heads"))',
     'return mixer'),
    # KDA's recurrent state in float32 whatever is asked (vLLM's kda_state_dtype), added after the first record
    (K, 'return "fp32" if dtype_bytes(dtype) <= 4 else dtype_name(dtype)', "return dtype_name(dtype)"),
    ("lcprof/cost/kinds/__init__.py", "state_dtype if fixed is None else fixed(dtype))", "state_dtype)"),
    (K, "    ss = ss if state_dtype is not None else c\n", "    ss = ss if state_dtype is not None else s\n"),
    (X, "S.to(state_dtype or sc))", "S.to(state_dtype or x.dtype))"),
]
RERUN = [8, 9, 10, 11, 13, 15, 26, 28, 34]  # after the first run: the survivors, the unapplied, the rewritten
FP32_STATE = [35, 36, 37, 38]  # the float32 KDA state, added last (`--fp32-state`)

if __name__ == "__main__":
    import sys

    pick = RERUN if "--rerun" in sys.argv else FP32_STATE if "--fp32-state" in sys.argv else range(len(M))
    run([M[i] for i in pick], lambda path: TESTS)
