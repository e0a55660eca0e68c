"""Tiny model configs (the measurement tests): every attention and MLP variant lcprof models,
small enough that a float64 reference and FlopCounterMode run in milliseconds on the CPU."""

from __future__ import annotations

from lcprof.spec import spec_from_config

_BASE = dict(vocab_size=1000, max_position_embeddings=8192, rms_norm_eps=1e-6)

TINY_CONFIGS = {
    # MHA, gated SiLU MLP
    "mha": dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, intermediate_size=96, **_BASE),
    # GQA (4 query heads per KV head) with q/k/v bias (Qwen2 layout)
    "gqa": dict(model_type="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                num_key_value_heads=2, intermediate_size=96, **_BASE),
    # layer 0 sliding (W=24), layer 1 global, Gemma-2 style extra norms and GeGLU
    # (no soft-capping: "softcap" has it, and SDPA cannot run it)
    "sliding": dict(model_type="gemma2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, intermediate_size=96, sliding_window=24,
                    hidden_activation="gelu_pytorch_tanh", attn_logit_softcapping=None,
                    final_logit_softcapping=None, **_BASE),
    # Gemma 2 as published: attention-logit soft-capping (50) and final-logit soft-capping (30)
    # on a sliding layer (W=24) and a global one
    "softcap": dict(model_type="gemma2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, intermediate_size=96, sliding_window=24,
                    attn_logit_softcapping=50.0, final_logit_softcapping=30.0, **_BASE),
    # layer 0 chunked (C=16), layer 1 global
    "chunked": dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, intermediate_size=96, attention_chunk_size=16,
                    layer_types=["chunked_attention", "full_attention"], **_BASE),
    # Mixtral-style MoE: 4 experts, 2 active, no shared expert
    "moe": dict(model_type="mixtral", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=48, num_local_experts=4, num_experts_per_tok=2, **_BASE),
    # DeepSeek-V2-style MLA (q LoRA, YaRN rope) + MoE with shared experts from layer 1
    "mla": dict(model_type="deepseek_v2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=96, q_lora_rank=24, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
                v_head_dim=12, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                moe_intermediate_size=16, first_k_dense_replace=1, rope_theta=10000.0,
                rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048,
                              "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
                **_BASE),
    # gpt-oss: a sink logit per head on every layer, sliding (W=24) and full layers, biased q/k/v/o,
    # routed experts (4, 2 active)
    "sinks": dict(model_type="gpt_oss", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, intermediate_size=48, num_local_experts=4,
                  num_experts_per_tok=2, sliding_window=24, attention_bias=True,
                  layer_types=["sliding_attention", "full_attention"], **_BASE),
    # plain (non-gated) GELU MLP, partial rotary (GPT-NeoX layout)
    "plain": dict(model_type="gpt_neox", hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                  intermediate_size=128, partial_rotary_factor=0.5, hidden_act="gelu", **_BASE),
    # SmolLM3: layer 0 RoPE + global, layer 1 NoPE + sliding (W=24); q/k/v/o and MLP biases
    "nope": dict(model_type="smollm3", hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                 num_key_value_heads=2, intermediate_size=96, no_rope_layers=[1, 0], use_sliding_window=True,
                 sliding_window=24, attention_bias=True, mlp_bias=True, rope_theta=10000.0, **_BASE),
    # MiniMax-M2: one RMSNorm over all of q and one over all of k, RoPE on half of each head, every MLP
    # routed (4 experts, 2 active, sigmoid scores)
    "fullqk": dict(model_type="minimax_m2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, intermediate_size=48, num_local_experts=4,
                   num_experts_per_tok=2, rotary_dim=8, rope_theta=10000.0, **_BASE),
    # OLMo 3: norms on each block's output only; q and k normed over all heads; layer 0 sliding (W=24), 1 full
    "olmo": dict(model_type="olmo3", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=96, sliding_window=24,
                 layer_types=["sliding_attention", "full_attention"], rope_theta=10000.0, **_BASE),
    # EXAONE 4: output norms, per-head q/k norms; layer 0 sliding (W=24) with RoPE, layer 1 full without
    "exaone": dict(model_type="exaone4", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, intermediate_size=96, sliding_window=24, sliding_window_pattern=2,
                   rope_theta=10000.0, **_BASE),
    # Cohere 2: attention and MLP on one LayerNorm'd input; layer 0 sliding (W=24) with RoPE, layer 1 global
    # without; logits x 0.25
    "parallel": dict(model_type="cohere2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, intermediate_size=96, sliding_window=24, sliding_window_pattern=2,
                     logit_scale=0.25, rope_theta=10000.0, vocab_size=1000, max_position_embeddings=8192,
                     layer_norm_eps=1e-5),
    # Ministral 3: every layer sliding (W=24); each query scaled by 1 + 0.5 log(1 + floor(position / 16)) after
    # YaRN (x4 from 16 positions): the scale changes every 16 positions
    "qscale": dict(model_type="ministral3", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, intermediate_size=96, sliding_window=24,
                   rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                    "original_max_position_embeddings": 16, "llama_4_scaling_beta": 0.5}, **_BASE),
    # GLM-4-0414: four plain RMSNorms per layer (before and after each block), q/k/v biased but not o, RoPE on
    # half of each head, fused gate_up MLP
    "sandwich": dict(model_type="glm4", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=16, intermediate_size=96, partial_rotary_factor=0.5,
                     rope_theta=10000.0, **_BASE),
    # Granite 3.x: muP scalars on an attention-only model (softmax scale, block outputs x 0.5 before each
    # residual add, embeddings x 3, logits / 2), q/k/v/o and MLP biases
    "mup": dict(model_type="granite", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=96, attention_bias=True, mlp_bias=True,
                attention_multiplier=0.2, residual_multiplier=0.5, embedding_multiplier=3.0, logits_scaling=2.0,
                rope_theta=10000.0, **_BASE),
    # HunYuan dense: per-head q/k RMSNorms after RoPE, NTK-alpha RoPE
    "postqk": dict(model_type="hunyuan_v1_dense", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, intermediate_size=96,
                   rope_scaling={"type": "dynamic", "alpha": 50.0, "factor": 1.0}, rope_theta=10000.0, **_BASE),
    # Phi-3-128k style LongRoPE (short/long factors switch at the original length)
    "longrope": dict(model_type="phi3", hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                     num_key_value_heads=4, intermediate_size=96, max_position_embeddings=4096,
                     original_max_position_embeddings=256, vocab_size=1000,
                     rope_scaling={"type": "longrope", "short_factor": [1.0, 1.1, 1.2, 1.3, 1.5, 2.0, 2.5, 3.0],
                                   "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 48.0]}),
}


def tiny_spec(name: str):
    return spec_from_config(dict(TINY_CONFIGS[name]), name=f"tiny-{name}")


#: Tiny hybrid configs (the published configs' fields, dims shrunk): every linear-time mixer kind
#: lcprof measures, with and without an MLP, MLP-only layers and an attention layer among them.
TINY_HYBRID_CONFIGS = {
    # Nemotron-H: "M-*E" = Mamba-2 (no MLP), MLP only (relu2), attention (no MLP), MoE only
    "nemotron-h": dict(model_type="nemotron_h", hidden_size=32, num_hidden_layers=4, hybrid_override_pattern="M-*-",
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48,
                       mamba_num_heads=4, mamba_head_dim=8, ssm_state_size=6, n_groups=2, conv_kernel=4,
                       chunk_size=5, expand=1, mamba_proj_bias=False, use_conv_bias=True, mlp_hidden_act="relu2",
                       mlp_bias=False, attention_bias=False, layer_norm_epsilon=1e-5, rms_norm_eps=1e-5,
                       vocab_size=1000, max_position_embeddings=8192),
    # Qwen3-Next: Gated DeltaNet layers with a (small) MoE MLP; the attention layer is gated (refused)
    "qwen3-next": dict(model_type="qwen3_next", hidden_size=32, num_hidden_layers=4, full_attention_interval=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48,
                       linear_conv_kernel_dim=4, linear_key_head_dim=8, linear_num_key_heads=2,
                       linear_num_value_heads=4, linear_value_head_dim=6, moe_intermediate_size=16,
                       shared_expert_intermediate_size=16, num_experts=4, num_experts_per_tok=2,
                       decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True, partial_rotary_factor=0.25,
                       rope_theta=10000.0, **_BASE),
    # Jamba: Mamba-1 layers (dense and MoE MLP), one attention layer (NoPE)
    "jamba": dict(model_type="jamba", hidden_size=32, num_hidden_layers=4, attn_layer_offset=2, attn_layer_period=4,
                  expert_layer_offset=1, expert_layer_period=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=48, num_experts=4, num_experts_per_tok=2, mamba_d_conv=4, mamba_d_state=6,
                  mamba_dt_rank=4, mamba_expand=2, mamba_conv_bias=True, mamba_proj_bias=False, **_BASE),
    # MiniMax (transformers' minimax): lightning layers and one softmax-attention layer, every MLP routed
    # (4 experts, 2 active); the residual is the normed input, scaled (alpha 3.5, beta 1 as in
    # MiniMax-M1's layernorm_*_alpha; the MLP's beta 0.5 so that no factor is a no-op); blocks of 16
    "minimax": dict(model_type="minimax", hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=8, intermediate_size=16, num_local_experts=4,
                    num_experts_per_tok=2, block_size=16, rope_theta=10000.0,
                    layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention"],
                    full_attn_alpha_factor=3.5, linear_attn_alpha_factor=3.5, mlp_alpha_factor=3.5,
                    mlp_beta_factor=0.5, **dict(_BASE, rms_norm_eps=1e-5)),
    # Granite 4.0-H (granitemoehybrid): Mamba-2, NoPE attention, Mamba-2, Mamba-2, each followed by 2 of 4
    # experts plus the shared MLP; muP scalars: block outputs x 0.5 before the residual add, softmax scale
    # 0.2, embeddings x 3, logits / 2
    "granite": dict(model_type="granitemoehybrid", hidden_size=32, num_hidden_layers=4,
                    layer_types=["mamba", "attention", "mamba", "mamba"], num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=16, shared_intermediate_size=24, num_local_experts=4, num_experts_per_tok=2,
                    mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=2, mamba_d_state=6, mamba_d_conv=4,
                    mamba_expand=2, mamba_chunk_size=16, position_embedding_type="nope", attention_multiplier=0.2,
                    residual_multiplier=0.5, embedding_multiplier=3.0, logits_scaling=2.0,
                    **dict(_BASE, rms_norm_eps=1e-5)),
    # Kimi Linear: KDA (dense MLP), KDA (MoE), MLA without RoPE (MoE), KDA (MoE): 2 of 4 sigmoid-scored experts
    # scaled by 2.5 plus a shared one; 4 KDA heads of 8
    "kimi-linear": dict(model_type="kimi_linear", hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=4, intermediate_size=48, q_lora_rank=None, kv_lora_rank=16,
                        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, mla_use_nope=True, num_experts=4,
                        num_experts_per_token=2, num_shared_experts=1, moe_intermediate_size=16,
                        first_k_dense_replace=1, moe_layer_freq=1, moe_router_activation_func="sigmoid",
                        moe_renormalize=True, routed_scaling_factor=2.5, model_max_length=8192, vocab_size=1000,
                        rms_norm_eps=1e-5, linear_attn_config={"kda_layers": [1, 2, 4], "full_attn_layers": [3],
                                                               "head_dim": 8, "num_heads": 4,
                                                               "short_conv_kernel_size": 4}),
    # LFM2: short conv, attention (per-head q/k norms), short conv, short conv; 3-tap convs with biases on the
    # conv and its projections; MLP width int(2 x 144 / 3) = 96
    "lfm2": dict(model_type="lfm2", hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=144, block_multiple_of=32, conv_L_cache=3, conv_bias=True,
                 layer_types=["conv", "full_attention", "conv", "conv"], rope_theta=10000.0, vocab_size=1000,
                 max_position_embeddings=8192, norm_eps=1e-5),
    # LFM2-MoE: conv with a dense MLP of 48, then attention, conv, conv routing 2 of 4 sigmoid-scored experts
    "lfm2-moe": dict(model_type="lfm2_moe", hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, intermediate_size=48, moe_intermediate_size=16, num_experts=4,
                     num_experts_per_tok=2, num_dense_layers=1, routed_scaling_factor=2.5, conv_L_cache=3,
                     layer_types=["conv", "full_attention", "conv", "conv"], rope_theta=10000.0, vocab_size=1000,
                     max_position_embeddings=8192, norm_eps=1e-5),
    # Falcon-Mamba: Mamba-1 only, no MLP, unweighted B/C/dt norms
    "falcon-mamba": dict(model_type="falcon_mamba", hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                         state_size=6, conv_kernel=4, time_step_rank=4, use_bias=False, use_conv_bias=True,
                         expand=2, layer_norm_epsilon=1e-5, vocab_size=1000),
}


def tiny_hybrid_spec(name: str):
    return spec_from_config(dict(TINY_HYBRID_CONFIGS[name]), name=f"tiny-{name}")
