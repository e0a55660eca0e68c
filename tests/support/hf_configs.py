"""Tiny HuggingFace-style configs, built by hand (the foundation tests).

Every spec the tests use goes through ``spec_from_config`` (the same loader as presets and user
files), so a test also exercises the config path.
"""

from __future__ import annotations

from lcprof.spec import spec_from_config


def llama_config(*, hidden=64, layers=2, heads=4, kv_heads=4, inter=128, vocab=100, max_pos=1 << 20,
                 head_dim=None, **extra) -> dict:
    """A llama-family config (gated MLP, no biases, untied embeddings)."""
    cfg = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": inter,
        "vocab_size": vocab,
        "max_position_embeddings": max_pos,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    cfg.update(extra)
    return cfg


def llama_spec(**kw):
    return spec_from_config(llama_config(**kw), name=kw.pop("name", "tiny"))


def mla_config(*, hidden=64, layers=2, heads=4, q_lora_rank=None, kv_lora_rank=32, nope=16, rope=8, v=16,
               inter=128, vocab=100, max_pos=1 << 20, **extra) -> dict:
    """A DeepSeek-V2-style MLA config (no MoE unless ``extra`` adds it)."""
    cfg = {
        "model_type": "deepseek_v2",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "intermediate_size": inter,
        "vocab_size": vocab,
        "max_position_embeddings": max_pos,
        "q_lora_rank": q_lora_rank,
        "kv_lora_rank": kv_lora_rank,
        "qk_nope_head_dim": nope,
        "qk_rope_head_dim": rope,
        "v_head_dim": v,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }
    cfg.update(extra)
    return cfg
