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
    "sliding": dict(model_type="gemma2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, intermediate_size=96, sliding_window=24,
                    hidden_activation="gelu_pytorch_tanh", **_BASE),
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
    # plain (non-gated) GELU MLP, partial rotary (GPT-NeoX layout)
    "plain": dict(model_type="gpt_neox", hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                  intermediate_size=128, partial_rotary_factor=0.5, hidden_act="gelu", **_BASE),
    # Phi-3-128k style LongRoPE (short/long factors switch at the original length)
    "longrope": dict(model_type="phi3", hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                     num_key_value_heads=4, intermediate_size=96, max_position_embeddings=4096,
                     original_max_position_embeddings=256, vocab_size=1000,
                     rope_scaling={"type": "longrope", "short_factor": [1.0, 1.1, 1.2, 1.3, 1.5, 2.0, 2.5, 3.0],
                                   "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 48.0]}),
}


def tiny_spec(name: str):
    return spec_from_config(dict(TINY_CONFIGS[name]), name=f"tiny-{name}")
