"""Parameter counts from a spec's shapes, exact against the modules transformers builds.

Counted: every ``nn.Parameter`` of the model (``model.parameters()``), not buffers (DeepSeek-V3's
``e_score_correction_bias``, rotary tables, Falcon-H1's muP vector) and not weights transformers
does not load (multi-token-prediction layers, vision towers of multimodal checkpoints). No torch.
"""

from __future__ import annotations

from lcprof.spec.layers import LayerSpec
from lcprof.spec.mixers import Linear
from lcprof.spec.model import MIXER_FIELDS, ModelSpec


def attention_linears(spec: ModelSpec, layer: LayerSpec) -> tuple[Linear, ...]:
    """The attention mixer's projections of one layer (MLA: its down/up projections), and the
    DSA indexer's when the layer is sparse."""
    h = spec.hidden_size
    if spec.mla is not None:
        m, H = spec.mla, spec.n_heads
        out = []
        if m.q_lora_rank:
            out += [Linear("q_a_proj", h, m.q_lora_rank), Linear("q_b_proj", m.q_lora_rank, H * m.qk_head_dim)]
        else:
            out.append(Linear("q_proj", h, H * m.qk_head_dim))
        out += [Linear("kv_a_proj_with_mqa", h, m.cache_dim),
                Linear("kv_b_proj", m.kv_lora_rank, H * (m.qk_nope_head_dim + m.v_head_dim)),
                Linear("o_proj", H * m.v_head_dim, h)]
    else:
        d = spec.attn_dims(layer)
        q_out = d.n_heads * d.head_dim * (2 if spec.attn_output_gate else 1)
        out = [Linear("q_proj", h, q_out, spec.qkv_bias),
               Linear("k_proj", h, d.n_kv_heads * d.head_dim, spec.qkv_bias),
               Linear("v_proj", h, d.n_kv_heads * d.v_head_dim, spec.qkv_bias),
               Linear("o_proj", d.n_heads * d.v_head_dim, h, spec.o_bias)]
    if layer.attn == "sparse" and spec.indexer is not None:
        out += list(spec.indexer.linears())
    return tuple(out)


def attention_other_params(spec: ModelSpec, layer: LayerSpec) -> dict[str, int]:
    """Norms, sinks and the indexer's norm of one attention layer."""
    out: dict[str, int] = {}
    if spec.mla is not None:
        m = spec.mla
        if m.q_lora_rank:
            out["q_a_layernorm"] = m.q_lora_rank
        out["kv_a_layernorm"] = m.kv_lora_rank
    else:
        d = spec.attn_dims(layer)
        if spec.qk_norm == "head":
            out["q_norm"] = d.head_dim
            out["k_norm"] = d.head_dim
        elif spec.qk_norm == "full":
            out["q_norm"] = d.n_heads * d.head_dim
            out["k_norm"] = d.n_kv_heads * d.head_dim
    if layer.sinks:
        out["sinks"] = spec.attn_dims(layer).n_heads
    if layer.attn == "sparse" and spec.indexer is not None:
        out.update({f"indexer.{k}": v for k, v in spec.indexer.other_params().items()})
    return out


def attention_layer_params(spec: ModelSpec, layer: LayerSpec) -> int:
    return (sum(lin.params for lin in attention_linears(spec, layer))
            + sum(attention_other_params(spec, layer).values()))


def _mlp_matrices(h: int, width: int, gated: bool, bias: bool) -> int:
    mats = 3 if gated else 2
    b = ((2 * width if gated else width) + h) if bias else 0  # (gate,) up biases, down bias
    return mats * h * width + b


def mlp_layer_params(spec: ModelSpec, layer: LayerSpec) -> tuple[int, int]:
    """(total, active per token) parameters of one layer's MLP."""
    h = spec.hidden_size
    if not layer.mlp:
        return 0, 0
    if layer.moe and spec.moe is not None:
        e = spec.moe
        router = h * e.n_experts + (e.n_experts if e.router_bias else 0)
        expert = _mlp_matrices(h, e.expert_intermediate_size, e.gated, e.expert_bias)
        shared = e.n_shared * _mlp_matrices(h, e.shared_intermediate_size, e.gated, False)
        gate = h if (e.shared_gate and e.n_shared) else 0
        return router + e.n_experts * expert + shared + gate, router + e.n_active * expert + shared + gate
    dense = _mlp_matrices(h, spec.intermediate_size, spec.mlp_gated, spec.mlp_bias)
    return dense, dense


def mixer_layer_params(spec: ModelSpec, layer: LayerSpec) -> int:
    """Parameters of a layer's linear-time mixers (Mamba, Mamba-2, Gated DeltaNet, lightning)."""
    return sum(getattr(spec, MIXER_FIELDS[m]).params for m in layer.mixers if m != "attention")


def param_counts(spec: ModelSpec) -> dict[str, int]:
    """Parameter counts: embeddings, lm_head, attention, linear mixers, mlp, norms, total and
    active-per-token; ``kv_proj_params`` are the K/V projections (replicated under TP beyond the
    KV heads). Counted from the spec's shapes (an independent check against published totals)."""
    h = spec.hidden_size
    attn = mixers = mlp_total = mlp_active = kv_proj = 0
    for layer in spec.layers:
        if layer.has_attention:
            attn += attention_layer_params(spec, layer)
            if spec.mla is None:
                d = spec.attn_dims(layer)
                kv_proj += h * d.n_kv_heads * (d.head_dim + d.v_head_dim)
        mixers += mixer_layer_params(spec, layer)
        t, a = mlp_layer_params(spec, layer)
        mlp_total += t
        mlp_active += a
    norm_w = 2 * h if spec.norm_bias else h
    norms = spec.n_layers * spec.norms_per_layer * norm_w + norm_w
    emb = spec.vocab_size * h
    head = 0 if spec.tie_embeddings else spec.vocab_size * h
    common = emb + head + attn + mixers + norms
    return {
        "embedding_params": emb,
        "lm_head_params": head,
        "attention_params": attn,
        "mixer_params": mixers,
        "mlp_params": mlp_total,
        "norm_params": norms,
        "kv_proj_params": kv_proj,
        "total_params": common + mlp_total,
        "active_params": common + mlp_active,
    }
