"""Gated DeltaNet hybrids: Qwen3-Next (MoE) and Qwen3.5 (dense ``qwen3_5_text`` and MoE
``qwen3_5_moe_text``, read from the text_config of their multimodal checkpoints).

Layers named ``linear_attention`` (default: all but every ``full_attention_interval``-th) run a Gated
DeltaNet; the others run gated attention: q_proj twice as wide (its second half gates the output),
per-head q/k RMSNorm, partial RoPE (``partial_rotary_factor``, default 0.25). MoE layers follow
Qwen2-MoE (a shared expert with a sigmoid gate).

Defaults: transformers' ``configuration_qwen3_next.py`` and ``configuration_qwen3_5.py``.
"""

from __future__ import annotations

from lcprof.errors import LcprofError
from lcprof.spec.config import common as C
from lcprof.spec.config.families.decoders import attention_shapes
from lcprof.spec.config.family import Family
from lcprof.spec.config.reader import Reader
from lcprof.spec.layers import LayerSpec
from lcprof.spec.mixers import GatedDeltaNetSpec
from lcprof.spec.moe import MoESpec


def build_gdn_hybrid(r: Reader, ctx: dict):
    mt = r.model_type
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    types = C.layer_types(r, n_layers)
    if types is None:
        interval = r.int("full_attention_interval", min=1)
        types = ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(n_layers)]
    else:
        r.touch("full_attention_interval")
    for i, t in enumerate(types):
        if t not in ("linear_attention", "full_attention"):
            raise LcprofError(f"{r.where}: layer {i} is {t!r}: model_type {mt!r} knows linear_attention "
                              "and full_attention")
    gdn = GatedDeltaNetSpec(hidden_size=hidden, num_k_heads=r.int("linear_num_key_heads"),
                            num_v_heads=r.int("linear_num_value_heads"), head_k_dim=r.int("linear_key_head_dim"),
                            head_v_dim=r.int("linear_value_head_dim"), conv_kernel=r.int("linear_conv_kernel_dim"))
    gate = True if mt == "qwen3_next" else r.bool("attn_output_gate")  # Qwen3-Next always gates
    if r.given("use_sliding_window") and r.bool("use_sliding_window"):
        raise LcprofError(f"{r.where}: use_sliding_window true is not supported for {mt}")
    r.touch("use_sliding_window", "sliding_window", "max_window_layers")
    moe = flags = None
    inter = r.int("intermediate_size") if mt != "qwen3_5_moe_text" else 0
    if mt in ("qwen3_next", "qwen3_5_moe_text"):
        n_exp = r.int("num_experts")
        shared = r.int("shared_expert_intermediate_size", min=0)
        moe = MoESpec(n_experts=n_exp, n_active=r.int("num_experts_per_tok"), n_shared=1 if shared else 0,
                      expert_intermediate_size=r.int("moe_intermediate_size"), shared_intermediate_size=shared,
                      shared_gate=bool(shared))
        flags = C.moe_by_sparse_step(r, n_layers, n_exp)
        if mt == "qwen3_5_moe_text" and not all(flags):
            raise LcprofError(f"{r.where}: dense layers in {mt} need an intermediate_size lcprof does not read")
    else:
        r.touch("mlp_only_layers")
        flags = [False] * n_layers
    block = C.rope_block(r)
    rope = C.read_rope(r, C.rotary_dim_of(hd, C.partial_factor(r, block)), theta=C.rope_theta(r, block),
                       block=block, max_pos=max_pos)
    bias = r.bool("attention_bias")
    n_mtp = r.int("mtp_num_hidden_layers", min=0) if r.has("mtp_num_hidden_layers") else 0
    r.touch("mtp_use_dedicated_embeddings")
    state_dtype = r.str("mamba_ssm_dtype", null=True) if r.has("mamba_ssm_dtype") else None
    notes = []
    if n_mtp:
        notes.append(f"{n_mtp} multi-token-prediction layer(s) are not counted: transformers does not load them.")
    layers = [LayerSpec(moe=flags[i], mixers=("gated_deltanet",) if t == "linear_attention" else ("attention",))
              for i, t in enumerate(types)]
    return C.make_spec(
        r, name=ctx["name"], meta=ctx["meta"], layers=layers, notes=ctx["notes"] + notes, model_type=mt,
        hidden_size=hidden, n_heads=heads, n_kv_heads=kv, head_dim=hd, v_head_dim=hd, intermediate_size=inter,
        mlp_gated=True, vocab_size=r.int("vocab_size"), tie_embeddings=r.bool("tie_word_embeddings"),
        max_position_embeddings=max_pos, original_max_position_embeddings=rope.original_max_position, rope=rope,
        moe=moe, qkv_bias=bias, o_bias=bias, qk_norm="head", attn_output_gate=gate, gated_deltanet=gdn,
        state_dtype=state_dtype, torch_dtype=ctx["dtype"], config=ctx["config"], text_model_of=ctx["wrapper"])


_NEXT = dict(num_key_value_heads=2, head_dim=256, rope_theta=10000.0, rope_scaling=None, partial_rotary_factor=0.25,
             attention_bias=False, linear_conv_kernel_dim=4, linear_key_head_dim=128, linear_value_head_dim=128,
             linear_num_key_heads=16, linear_num_value_heads=32, decoder_sparse_step=1, moe_intermediate_size=512,
             shared_expert_intermediate_size=512, num_experts_per_tok=10, num_experts=512, mlp_only_layers=None,
             layer_types=None, full_attention_interval=4, tie_word_embeddings=False, use_sliding_window=False)
_Q35 = dict(_NEXT, num_key_value_heads=4, attn_output_gate=True, rope_parameters=None,
            partial_rotary_factor=0.25, linear_num_value_heads=32)
_Q35_MOE = dict(_Q35, num_key_value_heads=2, num_experts=256, num_experts_per_tok=8, moe_intermediate_size=512,
                shared_expert_intermediate_size=512)
_INERT = frozenset({"norm_topk_prob"})
_REQ = frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "max_position_embeddings"})

FAMILIES = [
    Family("qwen3_next", "src/transformers/models/qwen3_next/configuration_qwen3_next.py", _NEXT, build_gdn_hybrid,
           inert=_INERT, required=_REQ | {"intermediate_size"}),
    Family("qwen3_5_text", "src/transformers/models/qwen3_5/configuration_qwen3_5.py", _Q35, build_gdn_hybrid,
           inert=_INERT, required=_REQ | {"intermediate_size"}, text_of=("qwen3_5",)),
    Family("qwen3_5_moe_text", "src/transformers/models/qwen3_5_moe/configuration_qwen3_5_moe.py", _Q35_MOE,
           build_gdn_hybrid, inert=_INERT, required=_REQ, text_of=("qwen3_5_moe",)),
]
