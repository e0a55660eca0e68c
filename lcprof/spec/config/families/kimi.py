"""Kimi Linear (``kimi_linear``: Kimi-Linear-48B-A3B): Kimi Delta Attention layers with a few
MLA layers, and DeepSeek-V3's MoE.

Layers listed in ``linear_attn_config.kda_layers`` (1-based, as the checkpoint writes them) run
KDA (``lcprof.spec.mixers.KimiDeltaSpec``: q/k/v projections and their short conv, a low-rank
per-channel decay, beta, a low-rank sigmoid output gate, o_norm); those in ``full_attn_layers``
run MLA without RoPE (``mla_use_nope``: transformers' ``KimiLinearAttention`` never rotates, vLLM
asserts it; the qk_rope_head_dim part of the key stays in the latent cache, shared by the heads,
unrotated). The lists must cover every layer once. A config written by transformers itself may
give ``layer_types`` (linear_attention / full_attention) and ``linear_num_heads``,
``linear_head_dim``, ``linear_conv_kernel_dim`` instead.

MoE: layer i routes when i >= first_k_dense_replace and i % moe_layer_freq == 0 (or per
``mlp_layer_types``): num_experts of width moe_intermediate_size, top num_experts_per_token, plus
num_shared_experts shared ones of the same width; the router's sigmoid/softmax, grouping, scaling
and renormalization choose experts and weight them, which changes no shape. The context length is
``model_max_length`` (transformers maps max_position_embeddings onto it).

Refused, naming the field: MLA with RoPE (``mla_use_nope`` false), MLA's output gate
(``mla_use_output_gate`` true), KDA's full-rank gate or gate lower bound (Kimi K3's fields), a
schedule that leaves a layer out or lists one twice.

Defaults: transformers' ``configuration_kimi_linear.py``.
"""

from __future__ import annotations

from lcprof.errors import LcprofError
from lcprof.spec.config import common as C
from lcprof.spec.config.families.deepseek import mla_shapes
from lcprof.spec.config.family import Family
from lcprof.spec.config.reader import Reader
from lcprof.spec.layers import LayerSpec
from lcprof.spec.mixers import KimiDeltaSpec
from lcprof.spec.moe import MoESpec

#: linear_attn_config keys lcprof reads; any other is refused (Kimi K3 adds gates lcprof does not count)
_LINEAR_KEYS = ("full_attn_layers", "kda_layers", "head_dim", "num_heads", "short_conv_kernel_size")


def _schedule(r: Reader, n_layers: int, lac: dict | None) -> list[bool]:
    """Per layer: True for KDA, False for MLA."""
    where = f"{r.where}: linear_attn_config"
    if lac is not None and ("kda_layers" in lac or "full_attn_layers" in lac):
        lists = {}
        for key in ("kda_layers", "full_attn_layers"):
            v = lac.get(key)
            if not isinstance(v, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in v):
                raise LcprofError(f"{where}.{key} must be a list of 1-based layer numbers, got {v!r}")
            lists[key] = v
        kda, full = lists["kda_layers"], lists["full_attn_layers"]
        every = sorted(kda + full)
        if every != list(range(1, n_layers + 1)):
            raise LcprofError(f"{where}: kda_layers and full_attn_layers must list each of layers 1..{n_layers} "
                              f"once (1-based); they list {len(kda)} + {len(full)} entries "
                              f"covering {sorted(set(every))[:3]}...")
        kset = set(kda)
        flags = [i + 1 in kset for i in range(n_layers)]
        # both given: transformers builds layer_types, vLLM the lists; they must name the same schedule
        types = C.layer_types(r, n_layers) if r.given("layer_types") else None
        if types is not None and types != ["linear_attention" if f else "full_attention" for f in flags]:
            raise LcprofError(f"{r.where}: layer_types and linear_attn_config's kda_layers/full_attn_layers name "
                              "different schedules (transformers reads the first, vLLM the second)")
        return flags
    types = C.layer_types(r, n_layers)
    if types is None:
        raise LcprofError(f"{r.where}: kimi_linear needs its schedule: linear_attn_config.kda_layers and "
                          "full_attn_layers, or layer_types")
    for i, t in enumerate(types):
        if t not in ("linear_attention", "full_attention"):
            raise LcprofError(f"{r.where}: layer {i} is {t!r}: kimi_linear knows linear_attention and full_attention")
    return [t == "linear_attention" for t in types]


def build_kimi_linear(r: Reader, ctx: dict):
    hidden, n_layers, heads, mla = mla_shapes(r)
    if not r.bool("mla_use_nope"):
        raise LcprofError(f"{r.where}: mla_use_nope false (RoPE in the MLA layers) is not supported: transformers' "
                          "KimiLinearAttention never rotates and vLLM requires mla_use_nope true")
    if r.has("mla_use_output_gate") and r.bool("mla_use_output_gate"):
        raise LcprofError(f"{r.where}: mla_use_output_gate true (a gated MLA output, Kimi K3) is not supported "
                          "by lcprof yet")
    # NoPE: the rope settings rotate nothing; head_dim is a legacy field (72 in the 48B config)
    r.touch("rope_theta", "rope_scaling", "rope_parameters", "head_dim")
    if r.given("max_position_embeddings"):
        max_pos = r.int("max_position_embeddings")
        r.touch("model_max_length")
    else:
        max_pos = r.int("model_max_length")

    lac = r.dict("linear_attn_config")
    if lac is not None:
        extra = sorted(k for k in lac if k not in _LINEAR_KEYS and not (
            (k == "gate_lower_bound" and lac[k] is None) or (k == "use_full_rank_gate" and lac[k] is False)))
        if extra:
            raise LcprofError(f"{r.where}: linear_attn_config.{extra[0]} = {lac[extra[0]]!r} changes KDA's gate "
                              "(Kimi K3) and is not supported by lcprof yet")

    def linear(key: str, top: str) -> int:
        if lac is not None and key in lac:
            r.touch(top)
            return r.as_int(f"linear_attn_config.{key}", lac[key])
        return r.int(top)

    kda_flags = _schedule(r, n_layers, lac)
    kda = None
    if any(kda_flags):
        kda = KimiDeltaSpec(hidden_size=hidden, n_heads=linear("num_heads", "linear_num_heads"),
                            head_dim=linear("head_dim", "linear_head_dim"),
                            conv_kernel=linear("short_conv_kernel_size", "linear_conv_kernel_dim"))
    else:
        r.touch("linear_num_heads", "linear_head_dim", "linear_conv_kernel_dim")

    flags = C.moe_by_layer_types_or_first_dense(r, n_layers)
    r.str("moe_router_activation_func", ("sigmoid", "softmax"))
    moe = None
    if any(flags):
        moe_w = r.int("moe_intermediate_size")
        moe = MoESpec(n_experts=r.int("num_experts"), n_active=r.int("num_experts_per_token"),
                      n_shared=r.int("num_shared_experts", min=0, null=True) or 0, expert_intermediate_size=moe_w,
                      shared_intermediate_size=moe_w)
    else:
        r.touch("num_experts", "num_experts_per_token", "num_shared_experts", "moe_intermediate_size")
    n_mtp = r.int("num_nextn_predict_layers", min=0) if r.has("num_nextn_predict_layers") else 0
    notes = ["The MLA layers run without RoPE (mla_use_nope): no rotary op is counted."]
    if n_mtp:
        notes.append(f"{n_mtp} multi-token-prediction layer(s) (num_nextn_predict_layers) are not counted: "
                     "transformers does not load them.")
    layers = [LayerSpec(mixers=("kda",), moe=flags[i]) if kda_flags[i]
              else LayerSpec(attn="global", rope=False, moe=flags[i]) for i in range(n_layers)]
    return C.make_spec(
        r, name=ctx["name"], meta=ctx["meta"], layers=layers, notes=ctx["notes"] + notes, model_type=r.model_type,
        hidden_size=hidden, n_heads=heads, n_kv_heads=heads, head_dim=mla.qk_head_dim, v_head_dim=mla.v_head_dim,
        intermediate_size=r.int("intermediate_size"), mlp_gated=True, vocab_size=r.int("vocab_size"),
        tie_embeddings=r.bool("tie_word_embeddings"), max_position_embeddings=max_pos, rope=None, mla=mla,
        moe=moe, kda=kda, torch_dtype=ctx["dtype"], config=ctx["config"], text_model_of=ctx["wrapper"])


#: Routing choices (which experts, how their weights are combined): same parameters and FLOPs.
_ROUTING = frozenset({"moe_renormalize", "routed_scaling_factor", "use_grouped_topk", "num_expert_group",
                      "topk_group", "topk_method"})

# transformers' KimiLinearConfig (DeepSeek-V3's, with Kimi-Linear-48B's sizes)
_KIMI = dict(num_key_value_heads=None, q_lora_rank=None, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
             v_head_dim=128, attention_bias=False, mla_use_nope=True, num_experts=256, num_experts_per_token=8,
             num_shared_experts=1, moe_intermediate_size=1024, first_k_dense_replace=1, moe_layer_freq=1,
             moe_router_activation_func="sigmoid", mlp_layer_types=None, layer_types=None, linear_attn_config=None,
             linear_head_dim=128, linear_num_heads=32, linear_conv_kernel_dim=4, tie_word_embeddings=False,
             rope_theta=10000.0, rope_scaling=None)
_REQ = frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size"})

FAMILIES = [
    Family("kimi_linear", "src/transformers/models/kimi_linear/configuration_kimi_linear.py", _KIMI,
           build_kimi_linear, inert=_ROUTING, required=_REQ),
]
