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
from lcprof.measure.execution import Execution, ModelWorkload  # noqa: E402
from lcprof.spec import spec_from_config  # noqa: E402
from support.tiny_models import TINY_HYBRID_CONFIGS  # noqa: E402

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
    # dense with a per-head RMSNorm of q and k before RoPE
    "qwen3": dict(model_type="qwen3", hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                  num_key_value_heads=2, head_dim=16, intermediate_size=96, rope_theta=10000.0, **_BASE),
    # The hybrids' epsilons differ from the mixers' own defaults (Mamba-1 1e-6, Mamba-2 1e-5, Gated
    # DeltaNet 1e-6), so a mixer norm that ignored the config's would show.
    # Qwen3-Next: Gated DeltaNet x 3 (2 key heads, 4 value heads) then gated attention with q/k norms and
    # partial RoPE; MoE with a gated shared expert on layers 1 and 3 (decoder_sparse_step 2), dense on 0, 2
    "qwen3_next": dict(model_type="qwen3_next", hidden_size=32, num_hidden_layers=4, full_attention_interval=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48,
                       linear_conv_kernel_dim=4, linear_key_head_dim=8, linear_num_key_heads=2,
                       linear_num_value_heads=4, linear_value_head_dim=6, moe_intermediate_size=16,
                       shared_expert_intermediate_size=16, num_experts=4, num_experts_per_tok=2,
                       decoder_sparse_step=2, mlp_only_layers=[], norm_topk_prob=True, partial_rotary_factor=0.5,
                       rope_theta=10000.0, **dict(_BASE, rms_norm_eps=1e-5)),
    # Jamba: Mamba-1 (dense MLP), Mamba-1 (MoE), attention (NoPE, dense), Mamba-1 (MoE); top-k not renormalized
    "jamba": dict(model_type="jamba", hidden_size=32, num_hidden_layers=4, attn_layer_offset=2, attn_layer_period=4,
                  expert_layer_offset=1, expert_layer_period=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=48, num_experts=4, num_experts_per_tok=2, mamba_d_conv=4, mamba_d_state=6,
                  mamba_dt_rank=4, mamba_expand=2, mamba_conv_bias=True, mamba_proj_bias=False,
                  **dict(_BASE, rms_norm_eps=1e-5)),
    # Nemotron-H "M-*-": Mamba-2 (2 groups, chunks of 5), ReLU^2 MLP, attention (NoPE), MLP; one norm per block
    "nemotron_h": dict(model_type="nemotron_h", hidden_size=32, num_hidden_layers=4, hybrid_override_pattern="M-*-",
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48,
                       mamba_num_heads=4, mamba_head_dim=8, ssm_state_size=6, n_groups=2, conv_kernel=4,
                       chunk_size=5, mamba_proj_bias=False, use_conv_bias=True, mlp_hidden_act="relu2",
                       mlp_bias=False, attention_bias=False, layer_norm_epsilon=1e-4, vocab_size=256,
                       max_position_embeddings=8192),
    # MiniMax: lightning, lightning, softmax attention (partial RoPE), lightning, every MLP routed; the
    # residual is the normed input, scaled by non-unit factors (a pre-norm or unscaled residual is off by
    # O(1)); blocks of 16 (70 tokens span 5); a lightning layer first, which holds no keys -- transformers
    # counts a decode step's position from it, so the step's position is passed (HFModel(..., start=))
    "minimax": dict(model_type="minimax", hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=8, intermediate_size=16, num_local_experts=4,
                    num_experts_per_tok=2, block_size=16, rope_theta=10000.0,
                    layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention"],
                    full_attn_alpha_factor=3.5, linear_attn_alpha_factor=2.0, mlp_alpha_factor=3.5,
                    linear_attn_beta_factor=0.75, mlp_beta_factor=0.5, **dict(_BASE, rms_norm_eps=1e-5)),
    # Gemma 2: a sliding (W = 24) and a global layer, four norms per layer (one-centred), embeddings x
    # sqrt(64), the query scale 24^-1/2 (not head_dim 16's), attention-logit soft-capping at 2 and
    # final-logit soft-capping at 3 -- small caps, so that a missed one is off by O(1). transformers
    # soft-caps only in its eager attention: compared with eager (EAGER_ONLY)
    "gemma2": dict(model_type="gemma2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, intermediate_size=96, sliding_window=24,
                   query_pre_attn_scalar=24, attn_logit_softcapping=2.0, final_logit_softcapping=3.0, **_BASE),
    # Granite 4.0-H: Mamba-2 (2 groups, chunks of 16), NoPE attention, Mamba-2, Mamba-2; every layer routes
    # 2 of 4 experts plus the shared MLP; muP scalars far from 1 (softmax scale 0.2 for head_dim 8's 0.35,
    # block outputs x 0.5, embeddings x 3, logits / 2), so a missed one is off by O(1)
    "granitemoehybrid": dict(model_type="granitemoehybrid", hidden_size=32, num_hidden_layers=4,
                             layer_types=["mamba", "attention", "mamba", "mamba"], num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=16, shared_intermediate_size=24,
                             num_local_experts=4, num_experts_per_tok=2, mamba_n_heads=4, mamba_d_head=16,
                             mamba_n_groups=2, mamba_d_state=6, mamba_d_conv=4, mamba_expand=2,
                             mamba_chunk_size=16, position_embedding_type="nope", attention_multiplier=0.2,
                             residual_multiplier=0.5, embedding_multiplier=3.0, logits_scaling=2.0,
                             **dict(_BASE, rms_norm_eps=1e-5)),
    # GLM-4.5: 8 heads of 16 (128 wide, hidden 64), q/k/v biases, per-head q/k norms, RoPE on half of each
    # head; layer 0 dense, layer 1 routes 2 of 4 sigmoid-scored experts scaled by 2.5 plus a shared one
    "glm4_moe": dict(model_type="glm4_moe", hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                     num_key_value_heads=2, head_dim=16, intermediate_size=96, partial_rotary_factor=0.5,
                     attention_bias=True, use_qk_norm=True, n_routed_experts=4, num_experts_per_tok=2,
                     moe_intermediate_size=16, n_shared_experts=1, first_k_dense_replace=1,
                     routed_scaling_factor=2.5, norm_topk_prob=True, rope_theta=10000.0,
                     num_nextn_predict_layers=0, **_BASE),
    # Kimi Linear: KDA (4 heads of 8, dense MLP), KDA (MoE), MLA without RoPE (no q LoRA; MoE), KDA (MoE); 2 of
    # 4 sigmoid-scored experts scaled by 2.5 plus a shared one; the schedule as the checkpoint writes it
    "kimi_linear": dict(model_type="kimi_linear", hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=4, intermediate_size=48, q_lora_rank=None, kv_lora_rank=16,
                        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, mla_use_nope=True,
                        num_experts=4, num_experts_per_token=2, num_shared_experts=1, moe_intermediate_size=16,
                        first_k_dense_replace=1, moe_layer_freq=1, moe_router_activation_func="sigmoid",
                        moe_renormalize=True, routed_scaling_factor=2.5, model_max_length=8192, vocab_size=256,
                        rms_norm_eps=1e-5, linear_attn_config={"kda_layers": [1, 2, 4], "full_attn_layers": [3],
                                                               "head_dim": 8, "num_heads": 4,
                                                               "short_conv_kernel_size": 4}),
    # SmolLM3: layer 0 RoPE and global, layer 1 NoPE and sliding (W = 24, use_sliding_window); q/k/v/o and the
    # MLP biased (attention_bias, mlp_bias): a missed bias, a rotated NoPE layer or a full-width NoPE layer
    # would each be off by O(1) past 24 tokens
    "smollm3": dict(model_type="smollm3", hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                    num_key_value_heads=2, intermediate_size=96, no_rope_layers=[1, 0], use_sliding_window=True,
                    sliding_window=24, attention_bias=True, mlp_bias=True, rope_theta=10000.0, **_BASE),
    # Seed-OSS: q/k/v biased (attention_bias), o_proj not (attention_out_bias false), the MLP biased
    "seed_oss": dict(model_type="seed_oss", hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                     num_key_value_heads=2, head_dim=16, intermediate_size=96, attention_bias=True,
                     attention_out_bias=False, mlp_bias=True, rope_theta=10000.0, **_BASE),
    # gpt-oss: a sliding (W = 24) then a full layer, a sink logit per head, q/k/v/o biased; every MLP routes 2
    # of 4 experts with biased, interleaved gate/up projections and the clamped SwiGLU (limit 1.5, well inside
    # the unit-variance activations, alpha 1.702); the router biased, softmax over the top-k logits
    "gpt_oss": dict(model_type="gpt_oss", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, intermediate_size=48, num_local_experts=4,
                    num_experts_per_tok=2, sliding_window=24, attention_bias=True, swiglu_limit=1.5,
                    layer_types=["sliding_attention", "full_attention"], rope_theta=10000.0, **_BASE),
    # MiniMax-M2: RMSNorms over all of q (4 heads of 16) and all of k (2 heads), RoPE on half of each head
    # (rotary_dim 8); every MLP routes 2 of 4 sigmoid-scored experts, renormalized
    "minimax_m2": dict(model_type="minimax_m2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, intermediate_size=48, num_local_experts=4,
                       num_experts_per_tok=2, rotary_dim=8, rope_theta=10000.0, **_BASE),
    # OLMo 2: every layer global, norms on the blocks' outputs only, q/k normed over all heads, q/k/v/o biased
    "olmo2": dict(model_type="olmo2", hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                  num_key_value_heads=2, intermediate_size=96, attention_bias=True, rope_theta=10000.0, **_BASE),
    # OLMo 3: layer 0 sliding (W = 24), layer 1 full; the tests run past the window. rope_theta is Olmo3Config's
    # default 5e5: transformers 5.25 gives a stated top-level rope_theta to the full layers only (its sliding
    # layers keep the default), where OLMo's own code and lcprof use one theta
    "olmo3": dict(model_type="olmo3", hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                  num_key_value_heads=2, intermediate_size=96, sliding_window=24,
                  layer_types=["sliding_attention", "full_attention"], **_BASE),
    # EXAONE 4: layer 0 sliding (W = 24) with RoPE, layer 1 full without RoPE; per-head q/k norms
    "exaone4": dict(model_type="exaone4", hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                    num_key_value_heads=2, head_dim=16, intermediate_size=96, sliding_window=24,
                    sliding_window_pattern=2, rope_theta=10000.0, **_BASE),
    # Cohere 2: attention and MLP on one LayerNorm'd input; layer 0 sliding (W = 24) with RoPE, layer 1 global
    # without; q/k/v/o biased; logits x 0.25; tied embeddings
    "cohere2": dict(model_type="cohere2", hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                    num_key_value_heads=2, intermediate_size=96, sliding_window=24, sliding_window_pattern=2,
                    attention_bias=True, logit_scale=0.25, rope_theta=10000.0, vocab_size=256,
                    max_position_embeddings=8192, layer_norm_eps=1e-5),
    # Ministral 3: every layer sliding (W = 24); queries x 1 + 0.5 log(1 + floor(position / 16)) after YaRN x4
    # from 16 positions: the scale steps at 16 and 32 within the tests' 48 tokens
    "ministral3": dict(model_type="ministral3", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, intermediate_size=96, sliding_window=24,
                       rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                        "original_max_position_embeddings": 16, "llama_4_scaling_beta": 0.5},
                       **_BASE),
    # Granite 3.x: muP scalars far from 1 (softmax scale 0.2 for head_dim 8's 0.35, block outputs x 0.5,
    # embeddings x 3, logits / 2), q/k/v/o and the MLP biased: a missed one is off by O(1)
    "granite": dict(model_type="granite", hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                    num_key_value_heads=2, intermediate_size=96, attention_bias=True, mlp_bias=True,
                    attention_multiplier=0.2, residual_multiplier=0.5, embedding_multiplier=3.0, logits_scaling=2.0,
                    rope_theta=10000.0, **_BASE),
    # GLM-4 (glm-4-9b-chat-hf): 4 heads of 16, RoPE in adjacent pairs on the first 8 dims (partial 0.5), q/k/v
    # biased, fused gate_up; glm4 (GLM-4-0414) also norms each block's output before its residual add
    "glm": dict(model_type="glm", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                head_dim=16, intermediate_size=96, partial_rotary_factor=0.5, rope_theta=10000.0, **_BASE),
    "glm4": dict(model_type="glm4", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, intermediate_size=96, partial_rotary_factor=0.5,
                 rope_theta=10000.0, **_BASE),
    # HunYuan dense: q/k normed per head after RoPE; NTK-alpha RoPE (alpha 50 on head_dim 16: base 1e4 x
    # 50^(16/14) = 8.8e5, so a plain base would rotate the wrong angles); q/k/v/o biased
    "hunyuan_v1_dense": dict(model_type="hunyuan_v1_dense", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=16, intermediate_size=96, attention_bias=True,
                             rope_theta=10000.0, rope_scaling={"type": "dynamic", "alpha": 50.0, "factor": 1.0},
                             **_BASE),
    # LFM2 and LFM2-MoE: the measurement tests' tiny configs (tests/support/tiny_models.py), vocabulary 256 --
    # conv, attention (per-head q/k norms), conv, conv; LFM2-MoE's layers 1-3 routing 2 of 4 sigmoid-scored experts
    "lfm2": dict(TINY_HYBRID_CONFIGS["lfm2"], vocab_size=256),
    "lfm2_moe": dict(TINY_HYBRID_CONFIGS["lfm2-moe"], vocab_size=256),
}
HYBRIDS = ("qwen3_next", "jamba", "nemotron_h", "minimax", "granitemoehybrid", "kimi_linear", "lfm2", "lfm2_moe")
#: transformers computes these models' attention only in eager (its SDPA path drops Gemma 2's soft-capping;
#: its gpt-oss has no SDPA path at all: the sinks)
EAGER_ONLY = ("gemma2", "gpt_oss")


def hf_spec(name: str):
    return spec_from_config(dict(HF_TINY[name]), name=f"hf-{name}")


def test_every_mapped_type_has_a_tiny_config():
    assert set(HF_TINY) == set(SUPPORTED)


@pytest.mark.parametrize("name,impl", [(nm, "eager" if nm in EAGER_ONLY else "sdpa") for nm in sorted(HF_TINY)
                                       if nm not in HYBRIDS]
                         + [("llama", "eager"), ("mistral", "eager"), ("deepseek_v3", "eager")])
def test_layer_matches(name, impl):
    """Layer 1 (the MoE layer of deepseek_v3): both implementations within fp32 tolerance of the float64
    lcprof layer, each within 2x the other's error, and 1e-5 of each other."""
    r = agree_layer(hf_spec(name), 1, 48, dtype="fp32", attn_implementation=impl)
    assert r["ok"], r["reason"]
    assert r["transformers_rel_err"] < 1e-5 and r["lcprof_rel_err"] < 1e-5 and r["hf_vs_lcprof"] < 1e-5


@pytest.mark.parametrize("name,layer", [(nm, i) for nm in HYBRIDS for i in range(4)])
def test_hybrid_layer_matches(name, layer):
    """Every layer of each hybrid (Gated DeltaNet, Mamba-1, Mamba-2, gated attention, NoPE attention,
    MLP-only, dense and MoE MLPs), 70 tokens (past Gated DeltaNet's 64-token chunk and 14 of
    Nemotron-H's 5-token chunks), both within fp32 tolerance and 1e-5 of each other."""
    r = agree_layer(hf_spec(name), layer, 70, dtype="fp32", attn_implementation="sdpa")
    assert r["ok"], r["reason"]
    assert r["transformers_rel_err"] < 1e-5 and r["lcprof_rel_err"] < 1e-5 and r["hf_vs_lcprof"] < 1e-5


@pytest.mark.parametrize("name", sorted(HF_TINY))
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_whole_model_matches(name, phase):
    """Logits of the last token (prefill of 48; decode at position 48 after each implementation's own
    prefill): past Mistral's window of 24 and Phi-3's original length of 32."""
    r = agree_model(hf_spec(name), 48, dtype="fp32", attn_implementation="eager" if name in EAGER_ONLY else "sdpa",
                    phase=phase)
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


@pytest.mark.parametrize("name", HYBRIDS + ("qwen3",))
def test_hybrids_in_float64(name):
    """Both models in float64, lcprof with the reference attention, 2 sequences: prefill of 40 and one
    decode step after each implementation's own prefill (transformers' cache holds the conv windows and
    recurrent states). transformers keeps its norms and its Gated DeltaNet core in float32, so the two
    differ by ~1e-7, not 1e-15; any difference of formula found here was >= 6e-5 (module docstring)."""
    from lcprof.measure.check import reference_attention, rel_error

    spec = hf_spec(name)
    moe = "routed" if spec.moe is not None else "dense-equivalent"
    ours = Model(spec, dtype=torch.float64, moe_timing=moe).eval()
    ours.set_attention(reference_attention)
    theirs = HFModel(ours, "eager", dtype=torch.float64)
    ids = torch.randint(0, 256, (2, 41), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert rel_error(theirs(ids[:, :40]), ours(ids[:, :40])) < 2e-6
        step_theirs = theirs(ids[:, 40:], theirs.prefill_cache(ids[:, :40]), start=40)
        step_ours = ours(ids[:, 40:], ours.prefill_caches(ids, 40), start=40)
        assert rel_error(step_theirs, step_ours) < 2e-6


def test_bf16_within_twice_the_other():
    r = agree_model(hf_spec("llama"), 48, dtype="bf16", attn_implementation="sdpa")
    assert r["ok"], r["reason"]
    assert 1e-4 < r["transformers_rel_err"] < 2e-2  # bf16 really is inexact; both comparably


def test_unmodelled_parameters_and_types_are_refused():
    from support.tiny_models import tiny_spec

    with pytest.raises(LcprofError, match="model_type 'gpt_neox'.*not mapped"):  # LayerNorm with biases
        hf_config(tiny_spec("plain"))
    # a transformers parameter lcprof's layer has no tensor for (here one added by hand) is named
    from lcprof.measure.hf import copy_weights

    ours = Model(hf_spec("llama"))
    theirs = HFModel(ours, "eager")
    theirs.hf.model.layers[1].self_attn.register_parameter("extra", torch.nn.Parameter(torch.zeros(3)))
    with pytest.raises(LcprofError, match="parameters lcprof's layer does not model: model.layers.1.self_attn.extra"):
        copy_weights(ours, theirs.hf)
    # transformers' gpt-oss has no SDPA attention (its sinks): refused in one line, not its ValueError
    with pytest.raises(LcprofError, match="GptOssForCausalLM has no sdpa attention: use eager"):
        HFModel(Model(hf_spec("gpt_oss"), moe_timing="routed"), "sdpa")
    # Nemotron-H's MoE block ("E") is not mapped: one line naming it
    moe = dict(HF_TINY["nemotron_h"], hybrid_override_pattern="M-*E", n_routed_experts=4, num_experts_per_tok=2,
               n_shared_experts=1, moe_intermediate_size=16, moe_shared_expert_intermediate_size=16)
    with pytest.raises(LcprofError, match="MoE blocks .'E'. are not mapped"):
        HFModel(Model(spec_from_config(moe, name="hf-nemotron-moe"), moe_timing="routed"), "eager")


def test_hybrid_decode_from_a_random_cache_is_refused():
    theirs = HFModel(Model(hf_spec("jamba"), moe_timing="routed"), "sdpa")
    with pytest.raises(LcprofError, match="attention-only models; .* has mamba layers"):
        theirs.decode_cache(1, 16)


def test_sweep_times_both_and_pairs_them(tmp_path):
    """The same points through lcprof and transformers: ok rows, checked, paired per n."""
    from lcprof.explain.compare_model import impl_ratio_table

    spec = hf_spec("mistral")
    frames = []
    for impl in ("lcprof", "transformers"):
        for target in ("model", "layer:1"):
            df = run_model_sweep(ModelWorkload(spec, "32", phases="prefill,decode", impl=impl, target=target, backends="sdpa"), Execution(budget_s=0.01, min_reps=2), out=tmp_path / f"{impl}-{target}.csv")
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
        run_model_sweep(ModelWorkload(hf_spec("mixtral"), "16", impl="transformers", moe_timing="dense-equivalent"))


def test_minimax_lightning_mixer_matches_transformers():
    """MiniMax's lightning attention alone (the whole decoder layer is compared in
    test_hybrid_layer_matches): lcprof's mixer of layer 1 of 4 -- slopes scaled by 1 - 1/3 (+1e-5), output
    norm eps 1e-6 whatever the config's -- against transformers' MiniMaxLightningAttention with the
    same weights, float64, 40 tokens in blocks of 16."""
    from transformers import AutoConfig
    from transformers.models.minimax.modeling_minimax import MiniMaxLightningAttention

    from lcprof.measure.check import rel_error
    from lcprof.measure.layer import DecoderLayer

    cfg = dict(model_type="minimax", hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, head_dim=8, intermediate_size=16, num_local_experts=4, num_experts_per_tok=2,
               layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention"],
               block_size=16, rope_theta=10000.0, **dict(_BASE, rms_norm_eps=1e-5))
    spec = spec_from_config(dict(cfg), name="hf-minimax")
    ours = DecoderLayer(spec, 1).to(torch.float64).mixer
    hf_cfg = AutoConfig.for_model("minimax", **{k: v for k, v in cfg.items() if k != "model_type"})
    theirs = MiniMaxLightningAttention(hf_cfg, 1).to(torch.float64)
    with torch.no_grad():
        for name in ("qkv_proj", "output_gate", "out_proj"):
            getattr(theirs, name).weight.copy_(getattr(ours, name).weight)
        theirs.norm.weight.copy_(ours.norm_weight)
        x = torch.randn(2, 40, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        mine = ours(x)[0]
        # transformers runs the output norm in float32: ~6e-8 off; slopes unscaled or eps 1e-5 are >= 1e-5 off
        assert rel_error(theirs(x, position_embeddings=None, attention_mask=None)[0], mine) < 1e-6
