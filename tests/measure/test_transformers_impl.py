"""transformers as an implementation (lcprof.measure.hf): its decoder layers and model classes, given
lcprof's seeded weights, compute what lcprof's compute -- layer by layer and whole model, prefill and
decode -- for every mapped model type; unmapped parameters are refused; the sweep times both."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from lcprof.errors import LcprofError  # noqa: E402
from lcprof.measure.hf import SUPPORTED, HFModel, agree_layer, agree_model, hf_config  # noqa: E402
from lcprof.measure.model import Model  # noqa: E402
from lcprof.measure.model_sweep import run_model_sweep  # noqa: E402
from lcprof.spec import spec_from_config  # noqa: E402

_BASE = dict(vocab_size=256, max_position_embeddings=8192, rms_norm_eps=1e-6)
#: tiny configs of model types transformers has, one per family lcprof measures
HF_TINY = {
    # dense GQA (4 query heads per KV head)
    "llama": dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                  num_key_value_heads=2, intermediate_size=96, **_BASE),
    # every layer sliding, W = 24 (the tests run past it)
    "mistral": dict(model_type="mistral", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, intermediate_size=96, sliding_window=24, **_BASE),
    # q/k/v bias
    "qwen2": dict(model_type="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                  num_key_value_heads=2, intermediate_size=96, **_BASE),
    # fused qkv and gate_up projections, LongRoPE switching factors at 32 tokens
    "phi3": dict(model_type="phi3", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, intermediate_size=96, max_position_embeddings=4096,
                 original_max_position_embeddings=32, vocab_size=256, rms_norm_eps=1e-5,
                 rope_scaling={"type": "longrope", "short_factor": [1.0, 1.1, 1.2, 1.3, 1.5, 2.0, 2.5, 3.0],
                               "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 48.0]}),
    # routed MoE, 4 experts, 2 per token
    "mixtral": dict(model_type="mixtral", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, intermediate_size=48, num_local_experts=4,
                    num_experts_per_tok=2, **_BASE),
    # MLA (q LoRA) + MoE with a shared expert from layer 1, sigmoid routing scaled by 2.5
    "deepseek_v3": dict(model_type="deepseek_v3", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=4, intermediate_size=96, q_lora_rank=24, kv_lora_rank=32,
                        qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=8,
                        num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=16,
                        first_k_dense_replace=1, scoring_func="sigmoid", norm_topk_prob=True,
                        routed_scaling_factor=2.5, n_group=1, topk_group=1, rope_theta=10000.0, **_BASE),
}


def hf_spec(name: str):
    return spec_from_config(dict(HF_TINY[name]), name=f"hf-{name}")


def test_every_mapped_type_has_a_tiny_config():
    assert set(HF_TINY) == set(SUPPORTED)


@pytest.mark.parametrize("name,impl", [(nm, "sdpa") for nm in sorted(HF_TINY)]
                         + [("llama", "eager"), ("mistral", "eager"), ("deepseek_v3", "eager")])
def test_layer_matches(name, impl):
    """Layer 1 (the MoE layer of deepseek_v3): both implementations within fp32 tolerance of the float64
    lcprof layer, each within 2x the other's error, and 1e-5 of each other."""
    r = agree_layer(hf_spec(name), 1, 48, dtype="fp32", attn_implementation=impl)
    assert r["ok"], r["reason"]
    assert r["transformers_rel_err"] < 1e-5 and r["lcprof_rel_err"] < 1e-5 and r["hf_vs_lcprof"] < 1e-5


@pytest.mark.parametrize("name", sorted(HF_TINY))
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_whole_model_matches(name, phase):
    """Logits of the last token (prefill of 48; decode at position 48 after each implementation's own
    prefill): past Mistral's window of 24 and Phi-3's original length of 32."""
    r = agree_model(hf_spec(name), 48, dtype="fp32", attn_implementation="sdpa", phase=phase)
    assert r["ok"], r["reason"]
    assert r["hf_vs_lcprof"] < 1e-5


def test_float64_says_the_math_is_the_same():
    """In float64 transformers is off lcprof's reference only by its float32 RoPE tables and norms
    (~1e-7); a different formula (a wrong RoPE, a missed scale) would be off by O(1)."""
    for name in ("llama", "phi3", "deepseek_v3"):
        r = agree_model(hf_spec(name), 40, dtype="fp32", attn_implementation="eager")
        assert r["transformers_rel_err"] < 1e-5
    ours = Model(hf_spec("llama"), dtype=torch.float64).eval()
    theirs = HFModel(ours, "eager", dtype=torch.float64)
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        from lcprof.measure.check import reference_attention, rel_error

        ours.set_attention(reference_attention)
        assert rel_error(theirs(ids), ours(ids)) < 1e-6


def test_bf16_within_twice_the_other():
    r = agree_model(hf_spec("llama"), 48, dtype="bf16", attn_implementation="sdpa")
    assert r["ok"], r["reason"]
    assert 1e-4 < r["transformers_rel_err"] < 2e-2  # bf16 really is inexact; both comparably


def test_unmodelled_parameters_and_types_are_refused():
    qwen3 = dict(HF_TINY["qwen2"], model_type="qwen3", head_dim=8)
    spec = spec_from_config(qwen3, name="hf-qwen3")
    with pytest.raises(LcprofError, match="model_type 'qwen3'.*not mapped"):
        hf_config(spec)
    import lcprof.measure.hf as H

    old = H.SUPPORTED
    try:
        H.SUPPORTED = old + ("qwen3",)
        with pytest.raises(LcprofError, match="parameters lcprof's layer does not model: .*q_norm"):
            HFModel(Model(spec), "eager")
    finally:
        H.SUPPORTED = old


def test_sweep_times_both_and_pairs_them(tmp_path):
    """The same points through lcprof and transformers: ok rows, checked, paired per n."""
    from lcprof.explain.compare_model import impl_ratio_table

    spec = hf_spec("mistral")
    frames = []
    for impl in ("lcprof", "transformers"):
        for target in ("model", "layer:1"):
            df = run_model_sweep(spec, "32", phases="prefill,decode", impl=impl, target=target, backends="sdpa",
                                 budget_s=0.01, min_reps=2, out=tmp_path / f"{impl}-{target}.csv")
            assert (df["status"] == "ok").all(), df["reason"].tolist()
            assert (df["check_rel_err"] < 1e-4).all()
            frames.append(df)
    import pandas as pd

    table = impl_ratio_table(pd.concat(frames, ignore_index=True))
    assert len(table) == 4  # (model, layer:1) x (prefill, decode)
    for _, r in table.iterrows():
        assert r["lcprof_over_transformers"] == pytest.approx(r["lcprof_time_s"] / r["transformers_time_s"])


def test_transformers_refuses_dense_equivalent_moe():
    with pytest.raises(LcprofError, match="routes MoE tokens"):
        run_model_sweep(hf_spec("mixtral"), "16", impl="transformers", moe_timing="dense-equivalent")
