"""A flat record of a spec's facts, for ``lcprof show``. No torch."""

from __future__ import annotations

import dataclasses
from typing import Any

from lcprof.spec.model import MIXER_FIELDS, ModelSpec
from lcprof.spec.params import param_counts
from lcprof.spec.weights import checkpoint_weights


def describe(spec: ModelSpec) -> dict[str, Any]:
    """Flat record of a spec's facts: shapes, layer schedule, RoPE, MLA/MoE/mixers, parameter counts
    and, when the checkpoint's safetensors headers or index are at hand, its exact weight bytes."""
    pc = param_counts(spec)
    rec: dict[str, Any] = {
        "model": spec.name,
        "model_type": spec.model_type,
        "text_model_of": spec.text_model_of,
        "attention_type": spec.attention_type,
        "n_layers": spec.n_layers,
        "hidden_size": spec.hidden_size,
        "n_heads": spec.n_heads,
        "n_kv_heads": spec.n_kv_heads,
        "head_dim": spec.head_dim,
        "v_head_dim": spec.v_head_dim,
        "mlp": ("gated" if spec.mlp_gated else "plain"),
        "mlp_activation": spec.mlp_activation,
        "intermediate_size": spec.intermediate_size,
        "vocab_size": spec.vocab_size,
        "tie_embeddings": spec.tie_embeddings,
        "max_position_embeddings": spec.max_position_embeddings,
        "original_max_position_embeddings": spec.original_max_position_embeddings,
        "layer_kinds": ", ".join(f"{k} x{v}" for k, v in spec.layer_kinds.items()),
        "token_mixers": ", ".join(f"{k} x{v}" for k, v in spec.mixer_counts.items()),
        "rope_type": spec.rope.type if spec.rope else "none",
        "rope_theta": spec.rope.theta if spec.rope else None,
        "rope_factor": spec.rope.factor if spec.rope else None,
        "rotary_dim": spec.rope.rotary_dim if spec.rope else None,
        "qk_norm": spec.qk_norm + (" (after RoPE)" if spec.qk_norm_after_rope else ""),
        "attn_output_gate": spec.attn_output_gate,
        "attn_temperature_tuning": spec.attn_temperature_tuning,
        "attention_sinks_layers": sum(1 for lyr in spec.layers if lyr.sinks),
    }
    if spec.output_norms:  # OLMo 2/3, EXAONE 4
        rec["norms"] = "on each block's output (none on its input)"
    if spec.parallel_block:  # Cohere 2
        rec["norms"] = ("one LayerNorm per layer, attention and MLP in parallel on its output" if spec.layer_norm
                        else "one per layer, attention and MLP in parallel on its output")
    nope = [i for i, lyr in enumerate(spec.layers) if lyr.has_attention and not lyr.rope]
    if spec.rope is not None and nope:  # SmolLM3, Llama 4: attention layers the rotary leaves alone
        rec["nope_layers"] = f"{len(nope)} of {sum(lyr.has_attention for lyr in spec.layers)}: " + \
            ", ".join(map(str, nope))
    for nm in ("attn_logit_softcap", "final_logit_softcap", "query_pre_attn_scalar", "attn_scale",
               "embedding_multiplier", "logits_scaling"):
        if getattr(spec, nm) is not None:
            rec[nm] = getattr(spec, nm)
    if spec.mup_multipliers:  # Falcon-H1
        rec["mup_multipliers"] = True
    if spec.post_norm_residual or spec.residual_factors is not None:  # MiniMax, Granite 4
        rec["post_norm_residual"] = spec.post_norm_residual
        if spec.residual_factors is not None:
            rec["residual_factors"] = " ".join(f"{nm} {'1' if a is None else f'{a:g}'}/{b:g}" for nm, (a, b) in
                                               zip(("attention", "linear", "mlp"), spec.residual_factors))
    if spec.mla:
        rec.update({f"mla_{k}": v for k, v in dataclasses.asdict(spec.mla).items()})
    if spec.moe:
        rec.update({f"moe_{k}": v for k, v in dataclasses.asdict(spec.moe).items()})
        rec["moe_layers"] = sum(1 for layer in spec.layers if layer.moe)
    for kind, fld in MIXER_FIELDS.items():
        m = getattr(spec, fld)
        if m is not None:
            rec.update({f"{kind}_{k}": v for k, v in m.as_record().items() if k != "hidden_size"})
            rec[f"{kind}_state_elements_per_layer"] = m.state_elements_total
    if spec.indexer is not None:
        rec.update({f"indexer_{k}": v for k, v in spec.indexer.as_record().items() if k != "hidden_size"})
    if spec.state_dtype:
        rec["state_dtype"] = spec.state_dtype
    rec.update(pc)
    if spec.published_params:
        rec["published_params"] = spec.published_params
        rec["params_vs_published"] = pc["total_params"] / spec.published_params - 1.0
    w = checkpoint_weights(spec.checkpoint_dir) if spec.checkpoint_dir else None
    if w is not None:
        for dt, b in sorted(w["bytes_by_dtype"].items()):
            rec[f"checkpoint_{dt}_bytes"] = b
            rec[f"checkpoint_{dt}_elements"] = w["elements_by_dtype"][dt]
        rec["checkpoint_weight_bytes"] = w["total_bytes"]
        rec["checkpoint_index_total_size_bytes"] = w["index_total_size"]
        rec["checkpoint_files"] = f"{w['files_present']}/{w['files']} safetensors files read"
    if spec.ignored_fields:
        rec["ignored_fields"] = ", ".join(spec.ignored_fields)
    rec["notes"] = spec.notes or None
    rec["source"] = spec.source
    return rec
