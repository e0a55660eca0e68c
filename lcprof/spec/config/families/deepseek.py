"""DeepSeek-style MoE: with multi-head latent attention (MLA) in DeepSeek-V2/V3, Kimi-K2, and the
sparse-attention (DSA) models DeepSeek-V3.2 and GLM-5, whose every layer keeps the top
``index_topk`` keys chosen by a lightning indexer; with GQA in DeepSeekMoE and GLM-4.5/4.6/4.7.

Defaults: transformers' ``configuration_deepseek_v3.py`` (DeepSeek-V3, Kimi-K2 and DeepSeek-V3.2
share it), ``configuration_glm_moe_dsa.py``, ``configuration_glm4_moe.py``; DeepSeek-V2's MLA and
MoE shapes are required.
"""

from __future__ import annotations

from lcprof.errors import LcprofError
from lcprof.spec.attention import MLASpec
from lcprof.spec.config import common as C
from lcprof.spec.config.family import Family
from lcprof.spec.config.reader import Reader
from lcprof.spec.layers import LayerSpec
from lcprof.spec.mixers import IndexerSpec
from lcprof.spec.moe import MoESpec

#: Routing choices (which experts, how their weights are normalized) and training-only fields:
#: same parameters and FLOPs whatever their values.
_ROUTING = frozenset({"topk_method", "n_group", "topk_group", "routed_scaling_factor", "scoring_func",
                      "norm_topk_prob", "ep_size", "aux_loss_alpha", "seq_aux", "rope_interleave",
                      "indexer_rope_interleave"})


def build_deepseek_moe(r: Reader, ctx: dict):
    """DeepSeekMoE (model_type ``deepseek``, deepseek-moe-16b's own modeling code): Llama attention
    (MHA/GQA with RoPE) and DeepSeek's MoE -- n_routed_experts of width moe_intermediate_size plus
    n_shared_experts, in layers i >= first_k_dense_replace with i % moe_layer_freq == 0."""
    from lcprof.spec.config.families.decoders import attention_shapes, finish, rope_of

    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    flags = C.moe_by_first_dense(r, n_layers)
    moe_w = r.int("moe_intermediate_size")
    moe = MoESpec(n_experts=r.int("n_routed_experts"), n_active=r.int("num_experts_per_tok"),
                  n_shared=r.int("n_shared_experts", min=0, null=True) or 0, expert_intermediate_size=moe_w,
                  shared_intermediate_size=moe_w)
    bias = r.bool("attention_bias")
    return finish(r, ctx, kinds=[("global", None)] * n_layers, moe_flags=flags, hidden=hidden, heads=heads, kv=kv,
                  hd=hd, inter=r.int("intermediate_size"), vocab=r.int("vocab_size"), max_pos=max_pos,
                  tie=r.bool("tie_word_embeddings"), rope=rope_of(r, hd, max_pos), moe=moe, qkv_bias=bias,
                  o_bias=bias)


def build_glm4_moe(r: Reader, ctx: dict):
    """GLM-4.5 / 4.6 / 4.7 (transformers' ``Glm4MoeForCausalLM``): GQA with head_dim given apart
    from hidden / heads, biases on q/k/v only (``attention_bias``; o_proj never has one), per-head
    q/k RMSNorm when ``use_qk_norm``, RoPE on the first ``partial_rotary_factor`` of each head
    (rotate-half, not interleaved); layer i routes when i >= first_k_dense_replace (there is no
    moe_layer_freq in this family) -- n_routed_experts of width moe_intermediate_size, top
    num_experts_per_tok, plus one shared MLP of width moe_intermediate_size x n_shared_experts."""
    from lcprof.spec.config.families.decoders import attention_shapes, finish, rope_of

    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    first = r.int("first_k_dense_replace", min=0)
    flags = [i >= first for i in range(n_layers)]
    moe_w = r.int("moe_intermediate_size")
    n_shared = r.int("n_shared_experts", min=0, null=True) or 0
    moe = MoESpec(n_experts=r.int("n_routed_experts"), n_active=r.int("num_experts_per_tok"), n_shared=n_shared,
                  expert_intermediate_size=moe_w, shared_intermediate_size=moe_w) if any(flags) else None
    if moe is None:
        r.touch("n_routed_experts", "num_experts_per_tok")
    n_mtp = r.int("num_nextn_predict_layers", min=0)
    notes = [f"{n_mtp} multi-token-prediction layer(s) (num_nextn_predict_layers) are not counted: "
             "transformers does not load them."] if n_mtp else []
    return finish(r, ctx, kinds=[("global", None)] * n_layers, moe_flags=flags, hidden=hidden, heads=heads, kv=kv,
                  hd=hd, inter=r.int("intermediate_size"), vocab=r.int("vocab_size"), max_pos=max_pos,
                  tie=r.bool("tie_word_embeddings"), rope=rope_of(r, hd, max_pos), moe=moe,
                  qkv_bias=r.bool("attention_bias"), o_bias=False,
                  qk_norm="head" if r.bool("use_qk_norm") else "none", notes=notes)


def mla_shapes(r: Reader) -> tuple[int, int, int, MLASpec]:
    """(hidden, layers, heads, MLASpec) of a DeepSeek-layout MLA config: as many KV heads as heads,
    no attention bias (refused otherwise)."""
    hidden = r.int("hidden_size")
    n_layers = r.int("num_hidden_layers")
    heads = r.int("num_attention_heads")
    kv = r.int("num_key_value_heads", null=True)
    if kv is not None and kv != heads:
        raise LcprofError(f"{r.where}: MLA with num_key_value_heads {kv} != num_attention_heads {heads} "
                          "is not a DeepSeek layout")
    if r.bool("attention_bias"):
        raise LcprofError(f"{r.where}: attention_bias true is not supported for MLA (published configs are false)")
    mla = MLASpec(q_lora_rank=r.int("q_lora_rank", null=True), kv_lora_rank=r.int("kv_lora_rank"),
                  qk_nope_head_dim=r.int("qk_nope_head_dim"), qk_rope_head_dim=r.int("qk_rope_head_dim"),
                  v_head_dim=r.int("v_head_dim"))
    return hidden, n_layers, heads, mla


def build_mla(r: Reader, ctx: dict):
    mt = r.model_type
    hidden, n_layers, heads, mla = mla_shapes(r)
    if r.given("qk_head_dim") and r.int("qk_head_dim") != mla.qk_head_dim:
        raise LcprofError(f"{r.where}: qk_head_dim {r.int('qk_head_dim')} != qk_nope_head_dim + qk_rope_head_dim "
                          f"= {mla.qk_head_dim}")
    r.touch("qk_head_dim", "head_dim")  # GLM-5's head_dim is its rope dim; MLA's dims are the ones above
    max_pos = r.int("max_position_embeddings")
    block = C.rope_block(r)
    rope = C.read_rope(r, mla.qk_rope_head_dim, theta=C.rope_theta(r, block), block=block, max_pos=max_pos)

    # MoE layers
    flags = C.moe_by_layer_types_or_first_dense(r, n_layers)
    n_routed = r.int("n_routed_experts", null=True)
    if n_routed is None:  # transformers' DeepseekV2: no routed experts -> a dense MLP in every layer
        flags = [False] * n_layers
        r.touch("n_shared_experts", "moe_intermediate_size", "num_experts_per_tok")
        moe = None
    elif any(flags):
        n_shared = r.int("n_shared_experts", min=0, null=True) or 0
        moe_w = r.int("moe_intermediate_size")
        moe = MoESpec(n_experts=n_routed, n_active=r.int("num_experts_per_tok"), n_shared=n_shared,
                      expert_intermediate_size=moe_w, shared_intermediate_size=moe_w)
    else:
        r.touch("n_shared_experts", "moe_intermediate_size", "num_experts_per_tok")
        moe = None

    # sparse attention (DSA)
    indexer = None
    attn, top_k = "global", None
    if mt in ("deepseek_v32", "glm_moe_dsa"):
        if mla.q_lora_rank is None:
            raise LcprofError(f"{r.where}: the DSA indexer reads the query latent: q_lora_rank is required")
        top_k = r.int("index_topk")
        indexer = IndexerSpec(hidden_size=hidden, q_lora_rank=mla.q_lora_rank, n_heads=r.int("index_n_heads"),
                              head_dim=r.int("index_head_dim"), top_k=top_k, rope_dim=mla.qk_rope_head_dim)
        attn = "sparse"
        if r.given("indexer_types"):
            types = r.list("indexer_types", length=n_layers)
            if any(t != "full" for t in types):
                raise LcprofError(f"{r.where}: indexer_types with shared indexers (IndexShare) is not supported "
                                  "by lcprof yet")
        r.touch("indexer_types")
    n_mtp = r.int("num_nextn_predict_layers", min=0) if r.has("num_nextn_predict_layers") else 0
    notes = []
    if n_mtp:
        notes.append(f"{n_mtp} multi-token-prediction layer(s) (num_nextn_predict_layers) are not counted: "
                     "transformers does not load them.")
    layers = [LayerSpec(attn=attn, top_k=top_k, moe=flags[i]) for i in range(n_layers)]
    return C.make_spec(
        r, name=ctx["name"], meta=ctx["meta"], layers=layers, notes=ctx["notes"] + notes, model_type=mt,
        hidden_size=hidden, n_heads=heads, n_kv_heads=heads, head_dim=mla.qk_head_dim, v_head_dim=mla.v_head_dim,
        intermediate_size=r.int("intermediate_size"), mlp_gated=True, vocab_size=r.int("vocab_size"),
        tie_embeddings=r.bool("tie_word_embeddings"), max_position_embeddings=max_pos,
        original_max_position_embeddings=rope.original_max_position, rope=rope, mla=mla, moe=moe,
        indexer=indexer, torch_dtype=ctx["dtype"], config=ctx["config"], text_model_of=ctx["wrapper"])


_V3 = dict(num_key_value_heads=None, n_shared_experts=1, n_routed_experts=256, q_lora_rank=1536,
           kv_lora_rank=512, qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128, num_experts_per_tok=8,
           first_k_dense_replace=3, moe_layer_freq=1, moe_intermediate_size=2048, rope_theta=10000.0,
           rope_scaling=None, attention_bias=False, tie_word_embeddings=False)
_V2 = dict(num_key_value_heads=None, n_routed_experts=None, n_shared_experts=None, moe_intermediate_size=None,
           num_experts_per_tok=None, first_k_dense_replace=0, moe_layer_freq=1,
           rope_theta=10000.0, rope_scaling=None, attention_bias=False, tie_word_embeddings=False)
_V32 = dict(_V3, index_n_heads=64, index_head_dim=128, index_topk=2048)
_GLM = dict(_V32, num_key_value_heads=None, q_lora_rank=2048, qk_nope_head_dim=192, v_head_dim=256,
            index_n_heads=32, rope_scaling=None)
_V2_REQ = frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size",
                     "max_position_embeddings", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "q_lora_rank"})
_SRC = "src/transformers/models/{0}/configuration_{0}.py"

_V1 = dict(num_key_value_heads=None, head_dim=None, n_shared_experts=None, first_k_dense_replace=0, moe_layer_freq=1,
           rope_theta=10000.0, rope_scaling=None, attention_bias=False, tie_word_embeddings=False)
_V1_REQ = frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size",
                     "max_position_embeddings", "n_routed_experts", "moe_intermediate_size", "num_experts_per_tok"})

# transformers' Glm4MoeConfig (head_dim: the attention's getattr falls back to hidden // heads)
_GLM4_MOE = dict(num_key_value_heads=8, head_dim=None, rope_theta=10000.0, rope_scaling=None,
                 partial_rotary_factor=0.5, attention_bias=False, use_qk_norm=False, moe_intermediate_size=1408,
                 num_experts_per_tok=8, n_shared_experts=1, n_routed_experts=128, first_k_dense_replace=1,
                 num_nextn_predict_layers=1, tie_word_embeddings=False)

FAMILIES = [
    Family("deepseek", "configuration_deepseek.py shipped with deepseek-ai/deepseek-moe-16b-base (trust_remote_code)",
           _V1, build_deepseek_moe, inert=_ROUTING, required=_V1_REQ),
    Family("deepseek_v2", _SRC.format("deepseek_v2"), _V2, build_mla, inert=_ROUTING, required=_V2_REQ),
    Family("deepseek_v3", _SRC.format("deepseek_v3"), _V3, build_mla, inert=_ROUTING),
    Family("kimi_k2", _SRC.format("deepseek_v3") + " (Kimi-K2 ships DeepSeek-V3's modeling code)", _V3, build_mla,
           inert=_ROUTING),
    Family("deepseek_v32", _SRC.format("deepseek_v32"), _V32, build_mla, inert=_ROUTING),
    Family("glm_moe_dsa", _SRC.format("glm_moe_dsa"), _GLM, build_mla, inert=_ROUTING),
    Family("glm4_moe", _SRC.format("glm4_moe"), _GLM4_MOE, build_glm4_moe, inert=_ROUTING),
]
