"""By-hand mutants of the score ops, gpt-oss SwiGLU, MiniMax residuals and one-centred norms (2026-12-02; four
entries re-pointed at the code that replaced them on 2026-12-02, fifth session: residual_products, scale_logits):
each is applied alone to the source, the owning tests run, the source restored. Run from the repo root:
`python3 reports/mutation/run_score_ops_mutants.py`. Results: reports/mutation/score-ops-residuals.md."""
from by_hand import run

TESTS = ["tests/measure/test_score_ops.py", "tests/measure/test_hybrid_layer.py::test_gated_attention_layer_memory_and_traffic", "tests/cost/test_mlp_activation.py", "tests/measure/test_minimax_residual.py",
         "tests/cost/test_norm_order.py"]
AUDIT = ["tests/measure/test_tensor_audit.py", "-k", "sinks or softcap or sliding"]
M = [
 ("lcprof/cost/ops.py", "total = total + 6 * s * P", "total = total + 5 * s * P"),
 ("lcprof/cost/ops.py", "sunk = P + b * H * n", "sunk = P + H * n"),
 ("lcprof/cost/ops.py", "total = total + 2 * s * sunk + softmax * sunk", "total = total + 2 * s * P + softmax * sunk"),
 ("lcprof/cost/ops.py", "total = total + 2 * s * sunk + softmax * sunk", "total = total + 2 * s * sunk + softmax * P"),
 ("lcprof/cost/ops.py", "op.bytes + 6 * s * np.asarray", "op.bytes + 4 * s * np.asarray"),
 ("lcprof/cost/ops.py", "(3 + 2 * spec.residual_products) * s * t * h", "(3 + 2 * spec.residual_products - 1) * s * t * h"),
 ("lcprof/cost/ops.py", "per_block = (5 + 2 * spec.residual_products) * h", "per_block = (4 + 2 * spec.residual_products) * h"),
 ("lcprof/cost/ops.py", "per_block = 5 * h\n", "per_block = 4 * h\n"),
 ("lcprof/cost/ops.py", "weight = 2 * f if one_centred else 2 * s", "weight = 2 * s if one_centred else 2 * s"),
 ("lcprof/cost/model.py", "sunk = pairs + (b * H * n_arr if lyr.sinks else 0.0)", "sunk = pairs"),
 ("lcprof/cost/model.py", "mix_add = b * n_arr * s * h * (3 + post + scaled)", "mix_add = b * n_arr * s * h * (3 + scaled)"),
 ("lcprof/spec/model.py", "return 1 if self.residual_factors[0][0] is None else 2", "return 1"),
 ("lcprof/cost/model.py", "(resid + s * h * (2 + post + scaled))", "(resid + s * h * (2 + scaled))"),
 ("lcprof/cost/model.py", "return width * 8 + 4 * rows if s < 4", "return width * 8 if s < 4"),
 ("lcprof/cost/model.py", "else width * 2 * s\n", "else width * 2 * s + 4\n"),
 ("lcprof/cost/model.py", "H if per_head else 1)", "1)"),
 ("lcprof/spec/layers.py", 'GATED_COMBINES = {"swiglu_oai": (16, 7)}', 'GATED_COMBINES = {"swiglu_oai": (15, 7)}'),
 ("lcprof/spec/layers.py", 'GATED_COMBINES = {"swiglu_oai": (16, 7)}', 'GATED_COMBINES = {"swiglu_oai": (16, 6)}'),
 ("lcprof/measure/layer.py", "g = gate.clamp(max=limit)", "g = gate"),
 ("lcprof/measure/layer.py", "return (u + 1) * glu", "return u * glu"),
 ("lcprof/measure/backends.py", "return t.div_(cap).tanh_().mul_(cap)", "return t.div_(cap).mul_(cap)"),
 ("lcprof/measure/layer.py", 'res = h if self.post_norm else x', 'res = x'),
 ("lcprof/measure/layer.py", 'return res * alpha + out * beta', 'return res * alpha + out'),
 ("lcprof/measure/check.py", "scores = softcap * torch.tanh(scores / softcap)", "pass"),
 ("lcprof/measure/check.py", "keep = torch.sigmoid(lse - sinks", "keep = torch.sigmoid(lse + sinks"),
 ("lcprof/measure/model.py", "logits = soft_cap_(logits, spec.final_logit_softcap)", "logits = logits"),
 ("lcprof/spec/config/families/hybrid.py", "        post = True\n", "        post = False\n"),
 ("lcprof/measure/hf.py", 'kwargs["position_ids"] = (torch.arange(ids.shape[1], device=ids.device) + int(start)).unsqueeze(0)', 'pass'),
]
run(M, lambda path: [TESTS + (["tests/measure/test_transformers_impl.py"] if "hf.py" in path or "hybrid.py" in path
                               else []), AUDIT])
