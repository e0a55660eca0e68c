"""Softmax-attention decoders with RoPE: Llama, Mistral, Mixtral, Qwen2/2-MoE/3/3-MoE, Qwen2-VL/2.5-VL's text, Phi-3,
Gemma 2/3, Llama 4, gpt-oss, MiniMax-M2, SmolLM3, Seed-OSS, Ministral 3, Qwen3-VL's text model,
Granite 3.x, GLM-4 (glm, glm4), HunYuan dense.

Each ``*_DEFAULTS`` table is transformers' configuration class for that model_type
(``src/transformers/models/<type>/configuration_<type>.py``): the value a field takes when the
config.json omits it. Shapes (``CORE``) are required instead (see ``family.CORE``).
"""

from __future__ import annotations

from lcprof.errors import LcprofError
from lcprof.spec.config import common as C
from lcprof.spec.config.family import CORE, Family
from lcprof.spec.config.reader import Reader
from lcprof.spec.layers import LayerSpec
from lcprof.spec.moe import MoESpec


# ----------------------------------------------------------------------------------------------
# shared pieces
# ----------------------------------------------------------------------------------------------

def attention_shapes(r: Reader) -> tuple[int, int, int, int, int]:
    """(hidden, layers, heads, kv heads, head_dim); head_dim defaults to hidden // heads, which must
    then divide evenly."""
    hidden = r.int("hidden_size")
    n_layers = r.int("num_hidden_layers")
    heads = r.int("num_attention_heads")
    kv = r.int("num_key_value_heads", null=True) if ("num_key_value_heads" in r.cfg or
                                                     "num_key_value_heads" in r.defaults) else None
    kv = heads if kv is None else kv
    hd = r.int("head_dim", null=True) if ("head_dim" in r.cfg or "head_dim" in r.defaults) else None
    if hd is None:
        if hidden % heads:
            raise LcprofError(f"{r.where}: hidden_size {hidden} is not a multiple of "
                              f"num_attention_heads {heads} (and no head_dim is given)")
        hd = hidden // heads
    if heads % kv:
        raise LcprofError(f"{r.where}: {heads} query heads are not a multiple of {kv} KV heads")
    return hidden, n_layers, heads, kv, hd


def rope_of(r: Reader, head_dim: int, max_pos: int, *, rotary_dim: int | None = None, block: dict | None = None):
    """The RoPE of the config's rope block, or of ``block`` (a family's default block, already adjusted)."""
    block = C.rope_block(r) if block is None else block
    theta = C.rope_theta(r, block)
    if rotary_dim is None:
        rotary_dim = C.rotary_dim_of(head_dim, C.partial_factor(r, block))
    if rotary_dim <= 0:
        raise LcprofError(f"{r.where}: the rotary dimension is {rotary_dim}: nothing would be rotated")
    return C.read_rope(r, rotary_dim, theta=theta, block=block, max_pos=max_pos)


def kinds_from_layer_types(r: Reader, types: list[str], *, sliding: int | None = None,
                           chunk: int | None = None) -> list[tuple[str, int | None]]:
    """(mask, window) per layer from layer_types (full/sliding/chunked attention)."""
    out: list[tuple[str, int | None]] = []
    for i, t in enumerate(types):
        if t in ("full_attention", "global", "attention"):
            out.append(("global", None))
        elif t in ("sliding_attention", "sliding"):
            if sliding is None:
                raise LcprofError(f"{r.where}: layer_types names sliding layers but sliding_window is not set")
            out.append(("sliding", sliding))
        elif t in ("chunked_attention", "chunked"):
            if chunk is None:
                raise LcprofError(f"{r.where}: layer_types names chunked layers but attention_chunk_size is not set")
            out.append(("chunked", chunk))
        else:
            raise LcprofError(f"{r.where}: layer {i} is {t!r}: lcprof does not know that layer type for "
                              f"model_type {r.model_type!r} (known: full_attention, sliding_attention"
                              f"{', chunked_attention' if chunk is not None else ''})")
    return out


def finish(r: Reader, ctx: dict, *, kinds, moe_flags=None, rope_flags=None, hidden, heads, kv, hd,
           inter, vocab, max_pos, tie, rope, moe=None, gated=True, **extra):
    n = len(kinds)
    moe_flags = moe_flags or [False] * n
    rope_flags = rope_flags or [True] * n
    sinks = extra.pop("sinks", None) or [False] * n
    layers = [LayerSpec(attn=k, window=w, moe=bool(moe_flags[i]), rope=bool(rope_flags[i]), sinks=bool(sinks[i]))
              for i, (k, w) in enumerate(kinds)]
    return C.make_spec(
        r, name=ctx["name"], meta=ctx["meta"], layers=layers, notes=ctx["notes"] + extra.pop("notes", []),
        model_type=r.model_type, hidden_size=hidden, n_heads=heads, n_kv_heads=kv, head_dim=hd, v_head_dim=hd,
        intermediate_size=inter, mlp_gated=gated, vocab_size=vocab, tie_embeddings=tie,
        max_position_embeddings=max_pos, rope=rope, moe=moe,
        original_max_position_embeddings=extra.pop("original_max_position_embeddings",
                                                   rope.original_max_position if rope else None),
        torch_dtype=ctx["dtype"], config=ctx["config"], text_model_of=ctx["wrapper"], **extra)


def qwen_sliding(r: Reader, n_layers: int) -> list[tuple[str, int | None]]:
    """Qwen2/Qwen3 (and their MoE): layer_types when given, else sliding for layer i >=
    max_window_layers when use_sliding_window (transformers' Qwen2Config.__post_init__)."""
    use = r.bool("use_sliding_window")
    sw = r.int("sliding_window", null=True)
    mwl = r.int("max_window_layers", min=0)
    types = C.layer_types(r, n_layers)
    if types is not None:
        return kinds_from_layer_types(r, types, sliding=sw if use else None)
    if use and sw is not None:
        return [("sliding", sw) if i >= mwl else ("global", None) for i in range(n_layers)]
    return [("global", None)] * n_layers


# ----------------------------------------------------------------------------------------------
# builders
# ----------------------------------------------------------------------------------------------

def no_rope_flags(r: Reader, n_layers: int) -> list[int]:
    """``no_rope_layers`` (1 RoPE, 0 NoPE per layer), or, when it is not given, every
    ``no_rope_layer_interval``-th layer NoPE (Llama 4's and SmolLM3's configuration classes)."""
    nrl = r.int_list("no_rope_layers", length=n_layers, null=True)
    if nrl is None:
        interval = r.int("no_rope_layer_interval", min=1)
        return [int((i + 1) % interval != 0) for i in range(n_layers)]
    r.touch("no_rope_layer_interval")  # only the default list is built from it
    if any(v not in (0, 1) for v in nrl):
        raise r.fail("no_rope_layers", "a list of 0/1", nrl)
    return nrl


def llama_masks(r: Reader, n_layers: int) -> tuple[list[tuple[str, int | None]], list[bool]]:
    """(mask, window) and RoPE flag per layer of a llama-shaped config. Published Llama configs have
    none of these fields (every layer global with RoPE); lcprof also reads ``layer_types``,
    ``sliding_window``, ``attention_chunk_size`` and ``no_rope_layers`` here, with the meaning the
    families that publish them give them (Mistral, Gemma, Llama 4), for what-if configs."""
    sw = r.int("sliding_window", null=True)
    chunk = r.int("attention_chunk_size", null=True)
    nrl = r.int_list("no_rope_layers", length=n_layers, null=True)
    types = C.layer_types(r, n_layers)
    if types is not None:
        kinds = kinds_from_layer_types(r, types, sliding=sw, chunk=chunk)
    elif chunk is not None:  # Llama 4's rule: RoPE layers chunked, every 4th (NoPE) global
        nrl = nrl or [int((i + 1) % 4 != 0) for i in range(n_layers)]
        kinds = [("chunked", chunk) if nrl[i] else ("global", None) for i in range(n_layers)]
    elif sw is not None:
        kinds = [("sliding", sw)] * n_layers
    else:
        kinds = [("global", None)] * n_layers
    rope_flags = [bool(x) for x in nrl] if nrl is not None else [True] * n_layers
    return kinds, rope_flags


def build_llama(r: Reader, ctx: dict):
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    bias = r.bool("attention_bias")
    kinds, rope_flags = llama_masks(r, n_layers)
    return finish(r, ctx, kinds=kinds, rope_flags=rope_flags, hidden=hidden, heads=heads, kv=kv, hd=hd,
                  inter=r.int("intermediate_size"), vocab=r.int("vocab_size"), max_pos=max_pos,
                  tie=r.bool("tie_word_embeddings"), rope=rope_of(r, hd, max_pos),
                  qkv_bias=bias, o_bias=bias, mlp_bias=r.bool("mlp_bias"))


def build_mistral(r: Reader, ctx: dict):
    """Mistral / Mixtral: one sliding window (or none) for every layer; Mixtral routes every MLP."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    sw = r.int("sliding_window", null=True)
    kinds = [("sliding", sw) if sw is not None else ("global", None)] * n_layers
    inter = r.int("intermediate_size")
    moe = None
    flags = None
    if r.model_type == "mixtral":
        moe = MoESpec(n_experts=r.int("num_local_experts"), n_active=r.int("num_experts_per_tok"), n_shared=0,
                      expert_intermediate_size=inter, shared_intermediate_size=0)
        flags = [True] * n_layers
    return finish(r, ctx, kinds=kinds, moe_flags=flags, hidden=hidden, heads=heads, kv=kv, hd=hd, inter=inter,
                  vocab=r.int("vocab_size"), max_pos=max_pos, tie=r.bool("tie_word_embeddings"),
                  rope=rope_of(r, hd, max_pos), moe=moe)


def _qwen3_extra_fields(r: Reader) -> None:
    """Fields Qwen3-Coder's configs carry that transformers' Qwen3 / Qwen3-MoE classes do not read: accepted at the
    values under which they describe what transformers builds (q/k always normed, biases from attention_bias,
    no shared expert), refused otherwise."""
    if r.has("use_qk_norm") and not r.bool("use_qk_norm"):
        raise LcprofError(f"{r.where}: use_qk_norm false: transformers' Qwen3 norms q and k whatever it says")
    if r.has("qkv_bias") and r.bool("qkv_bias") != r.bool("attention_bias"):
        raise LcprofError(f"{r.where}: qkv_bias {r.bool('qkv_bias')} with attention_bias {r.bool('attention_bias')}: "
                          "transformers' Qwen3 biases q/k/v by attention_bias alone")
    if r.has("shared_expert_intermediate_size") and r.int("shared_expert_intermediate_size", min=0, null=True):
        raise LcprofError(f"{r.where}: shared_expert_intermediate_size {r.int('shared_expert_intermediate_size')}: "
                          f"transformers' {r.model_type} has no shared expert")


def build_qwen(r: Reader, ctx: dict):
    """Qwen2 (q/k/v bias), Qwen2-MoE (shared expert with a sigmoid gate), Qwen3 (per-head q/k
    RMSNorm, attention_bias on q/k/v/o), Qwen3-MoE (no shared expert)."""
    mt = r.model_type
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    kinds = qwen_sliding(r, n_layers)
    inter = r.int("intermediate_size")
    moe = flags = None
    if mt in ("qwen2_moe", "qwen3_moe"):
        n_exp = r.int("num_experts")
        shared = r.int("shared_expert_intermediate_size", min=0) if mt == "qwen2_moe" else 0
        moe = MoESpec(n_experts=n_exp, n_active=r.int("num_experts_per_tok"), n_shared=1 if shared else 0,
                      expert_intermediate_size=r.int("moe_intermediate_size"), shared_intermediate_size=shared,
                      shared_gate=bool(shared))
        flags = C.moe_by_sparse_step(r, n_layers, n_exp)
    if mt.startswith("qwen2"):
        qkv_bias, o_bias, qk_norm = True, False, "none"  # transformers' Qwen2 always biases q/k/v
        if r.given("qkv_bias"):
            qkv_bias = r.bool("qkv_bias")
    else:
        qkv_bias = o_bias = r.bool("attention_bias")
        qk_norm = "head"
        _qwen3_extra_fields(r)
    return finish(r, ctx, kinds=kinds, moe_flags=flags, hidden=hidden, heads=heads, kv=kv, hd=hd, inter=inter,
                  vocab=r.int("vocab_size"), max_pos=max_pos, tie=r.bool("tie_word_embeddings"),
                  rope=rope_of(r, hd, max_pos), moe=moe, qkv_bias=qkv_bias, o_bias=o_bias, qk_norm=qk_norm)


def build_qwen3_vl(r: Reader, ctx: dict):
    """Qwen3-VL's text model (qwen3_vl_text, qwen3_vl_moe_text, read from a qwen3_vl / qwen3_vl_moe wrapper's
    text_config): Qwen3's layer -- per-head q/k RMSNorm, attention_bias on q/k/v/o -- with every layer global
    (the configs have no sliding fields; Qwen3VLMoeTextConfig sets sliding_window None), interleaved M-RoPE
    (mrope_section; text positions rotate as plain RoPE); the MoE on every decoder_sparse_step-th layer outside
    mlp_only_layers, no shared expert."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    moe = flags = None
    if r.model_type == "qwen3_vl_moe_text":
        n_exp = r.int("num_experts")
        moe = MoESpec(n_experts=n_exp, n_active=r.int("num_experts_per_tok"), n_shared=0,
                      expert_intermediate_size=r.int("moe_intermediate_size"), shared_intermediate_size=0)
        flags = C.moe_by_sparse_step(r, n_layers, n_exp)
    bias = r.bool("attention_bias")
    return finish(r, ctx, kinds=[("global", None)] * n_layers, moe_flags=flags, hidden=hidden, heads=heads, kv=kv,
                  hd=hd, inter=r.int("intermediate_size"), vocab=r.int("vocab_size"), max_pos=max_pos,
                  tie=r.bool("tie_word_embeddings"), rope=rope_of(r, hd, max_pos), moe=moe, qkv_bias=bias, o_bias=bias,
                  qk_norm="head")


def build_qwen2_vl(r: Reader, ctx: dict):
    """Qwen2-VL's and Qwen2.5-VL's text model (qwen2_vl_text, qwen2_5_vl_text: a wrapper's text_config, or the
    text fields of a flat qwen2_vl / qwen2_5_vl config): Qwen2's layer -- q/k/v always biased, o never --, M-RoPE
    (mrope_section; text positions rotate as plain RoPE), sliding layers i >= max_window_layers only with
    use_sliding_window (Qwen2_5_VLTextConfig.__post_init__)."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    return finish(r, ctx, kinds=qwen_sliding(r, n_layers), hidden=hidden, heads=heads, kv=kv, hd=hd,
                  inter=r.int("intermediate_size"), vocab=r.int("vocab_size"), max_pos=max_pos,
                  tie=r.bool("tie_word_embeddings"), rope=rope_of(r, hd, max_pos), qkv_bias=True, o_bias=False)


def build_phi3(r: Reader, ctx: dict):
    """Phi-3: fused qkv and gate_up projections (same parameters as separate ones), no biases; a
    published sliding_window applies to every layer (transformers' Phi3 mask)."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    sw = r.int("sliding_window", null=True)
    kinds = [("sliding", sw) if sw is not None else ("global", None)] * n_layers
    orig = r.int("original_max_position_embeddings", null=True)
    if r.has("attention_bias") and r.bool("attention_bias"):
        raise LcprofError(f"{r.where}: attention_bias true: transformers' Phi3 builds its projections without "
                          "bias whatever this field says")
    # Phi-4-mini's remote-code fields (its own configuration_phi3.py): transformers' Phi3 reads none of them, so
    # only the values under which the remote code computes what transformers does are accepted
    for key in ("mlp_bias", "lm_head_bias"):
        if r.has(key) and r.bool(key):
            raise LcprofError(f"{r.where}: {key} true: transformers' Phi3 builds no such bias (Phi-4's remote code "
                              "would): lcprof cannot tell which the user runs")
    for key in ("full_attn_mod", "interpolate_factor"):
        if r.has(key) and r.raw(key) is not None and r.float(key) != 1:
            raise LcprofError(f"{r.where}: {key} {r.raw(key)!r}: only 1 is read the same by transformers' Phi3 (which "
                              "ignores it) and Phi-4's remote code")
    return finish(r, ctx, kinds=kinds, hidden=hidden, heads=heads, kv=kv, hd=hd, inter=r.int("intermediate_size"),
                  vocab=r.int("vocab_size"), max_pos=max_pos, tie=r.bool("tie_word_embeddings"),
                  rope=rope_of(r, hd, max_pos), original_max_position_embeddings=orig)


def build_gemma(r: Reader, ctx: dict):
    """Gemma 2 (even layers sliding, logit soft-capping) and Gemma 3 (every sixth layer global,
    per-head q/k RMSNorm): four RMSNorms per layer, GeGLU MLP, queries scaled by
    query_pre_attn_scalar**-0.5, embeddings tied by default."""
    mt = r.model_type
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    sw = C.window(r, "sliding_window")
    if r.given("sliding_window_size") and r.int("sliding_window_size") != sw:  # an older spelling
        raise LcprofError(f"{r.where}: sliding_window_size {r.int('sliding_window_size')} != sliding_window {sw}")
    r.touch("sliding_window_size", "cache_implementation")
    types = C.layer_types(r, n_layers)
    if types is None:
        if mt == "gemma2":
            types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n_layers)]
        else:
            pattern = r.int("sliding_window_pattern", min=1) if r.given("sliding_window_pattern") else 6
            types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)]
    r.touch("sliding_window_pattern")
    kinds = kinds_from_layer_types(r, types, sliding=sw)
    bias = r.bool("attention_bias")
    notes = []
    extra = {}
    if mt == "gemma3_text":
        extra["qk_norm"] = "head"
        r.float("rope_local_base_freq", gt=1.0)
        notes.append("Sliding layers use RoPE base rope_local_base_freq; the global ones rope_theta.")
    return finish(r, ctx, kinds=kinds, hidden=hidden, heads=heads, kv=kv, hd=hd, inter=r.int("intermediate_size"),
                  vocab=r.int("vocab_size"), max_pos=max_pos, tie=r.bool("tie_word_embeddings"),
                  rope=rope_of(r, hd, max_pos), qkv_bias=bias, o_bias=bias, norms_per_layer=4,
                  attn_logit_softcap=r.float("attn_logit_softcapping", gt=0, null=True),
                  final_logit_softcap=r.float("final_logit_softcapping", gt=0, null=True),
                  query_pre_attn_scalar=r.float("query_pre_attn_scalar", gt=0, null=True), notes=notes, **extra)


def build_llama4(r: Reader, ctx: dict):
    """Llama 4 text model: RoPE layers attend within chunks of attention_chunk_size, NoPE layers
    (no_rope_layers[i] == 0, default every 4th) attend globally; MoE layers (moe_layers, default
    every interleave_moe_layer_step-th) route top-k of num_local_experts experts of width
    intermediate_size plus one shared expert of that width; dense layers use intermediate_size_mlp;
    use_qk_norm is an L2 norm without weights."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    chunk = r.int("attention_chunk_size", null=True)
    nrl = no_rope_flags(r, n_layers)
    types = C.layer_types(r, n_layers)
    if types is None:
        types = ["chunked_attention" if (nrl[i] and chunk is not None) else "full_attention" for i in range(n_layers)]
    kinds = kinds_from_layer_types(r, types, chunk=chunk)
    step = r.int("interleave_moe_layer_step", min=1)
    moe_layers = r.int_list("moe_layers", null=True)
    if moe_layers is None:
        moe_layers = list(range(step - 1, n_layers, step))
    flags = [i in set(moe_layers) for i in range(n_layers)]
    inter = r.int("intermediate_size")
    moe = MoESpec(n_experts=r.int("num_local_experts"), n_active=r.int("num_experts_per_tok"), n_shared=1,
                  expert_intermediate_size=inter, shared_intermediate_size=inter)
    dense = r.int("intermediate_size_mlp")
    bias = r.bool("attention_bias")
    r.touch("floor_scale", "attn_scale", "for_llm_compressor")  # the temperature's constants: no cost
    # Meta's published configs say 4 (an int); transformers tests its truth, so a bool or a count >= 0
    tt = r.raw("attn_temperature_tuning")
    temperature = tt if isinstance(tt, bool) else r.as_int("attn_temperature_tuning", tt, min=0) > 0
    notes = ["NoPE layers scale their queries by attention temperature tuning (elementwise, no parameters)."
             ] if temperature else []
    return finish(r, ctx, kinds=kinds, moe_flags=flags, rope_flags=[bool(x) for x in nrl], hidden=hidden,
                  heads=heads, kv=kv, hd=hd, inter=dense, vocab=r.int("vocab_size"), max_pos=max_pos,
                  tie=r.bool("tie_word_embeddings"), rope=rope_of(r, hd, max_pos), moe=moe, qkv_bias=bias,
                  o_bias=bias, qk_norm="l2" if r.bool("use_qk_norm") else "none", attn_temperature_tuning=temperature,
                  notes=notes)


def build_gpt_oss(r: Reader, ctx: dict):
    """gpt-oss: sliding (even) and full layers, a learned sink logit per head, biases on q/k/v/o,
    the router and every expert projection; every layer routes top-k of num_local_experts experts of
    width intermediate_size."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    sw = r.int("sliding_window", null=True)
    types = C.layer_types(r, n_layers)
    if types is None:
        types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n_layers)]
    kinds = kinds_from_layer_types(r, types, sliding=sw)
    top_k = r.int("num_experts_per_tok")
    if r.given("experts_per_token") and r.int("experts_per_token") != top_k:
        raise LcprofError(f"{r.where}: experts_per_token and num_experts_per_tok disagree")
    r.touch("experts_per_token", "initial_context_length")
    # the experts' clamped SwiGLU (GptOssExperts._apply_gate): its limit and alpha are values, not costs,
    # but must be numbers; hidden_act ("silu") is not what the experts run
    if r.given("swiglu_limit"):
        r.float("swiglu_limit", gt=0)
    if r.given("swiglu_alpha"):
        r.float("swiglu_alpha", gt=0)
    inter = r.int("intermediate_size")
    moe = MoESpec(n_experts=r.int("num_local_experts"), n_active=top_k, n_shared=0, expert_intermediate_size=inter,
                  shared_intermediate_size=0, router_bias=True, expert_bias=True)
    bias = r.bool("attention_bias")
    block, notes = C.rope_block(r), []
    if block is None:  # GptOssConfig.__post_init__: a config without rope parameters gets YaRN x32 from 4096
        block = dict(_GPT_OSS_YARN)
        notes.append("No rope_scaling given: transformers' GptOssConfig default, YaRN x32 from 4096 positions.")
    rope = rope_of(r, hd, max_pos, block=block)
    return finish(r, ctx, kinds=kinds, moe_flags=[True] * n_layers, hidden=hidden, heads=heads, kv=kv, hd=hd,
                  inter=inter, vocab=r.int("vocab_size"), max_pos=max_pos, tie=r.bool("tie_word_embeddings"),
                  rope=rope, moe=moe, qkv_bias=bias, o_bias=bias, sinks=[True] * n_layers,
                  mlp_activation="swiglu_oai", notes=notes)


def build_minimax_m2(r: Reader, ctx: dict):
    """MiniMax-M2: full attention with RMSNorm over the whole q and k widths (qk_norm_type
    per_layer), partial RoPE (rotary_dim), every layer routes top-k of num_local_experts experts;
    the router's score-correction bias is a buffer; multi-token-prediction modules are not loaded."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    rot = r.int("rotary_dim", null=True) if r.has("rotary_dim") else None
    if rot is not None and rot > hd:
        raise LcprofError(f"{r.where}: rotary_dim {rot} exceeds head_dim {hd}")
    qk = "none"
    if r.bool("use_qk_norm"):
        qk = {"per_layer": "full", "per_head": "head"}[r.str("qk_norm_type", ("per_layer", "per_head"))]
    else:
        r.touch("qk_norm_type")
    shared = r.int("shared_intermediate_size", min=0)
    if shared:
        raise LcprofError(f"{r.where}: shared_intermediate_size {shared}: shared experts of MiniMax-M2 are not "
                          "supported by lcprof (published configs have 0)")
    inter = r.int("intermediate_size")
    moe = MoESpec(n_experts=r.int("num_local_experts"), n_active=r.int("num_experts_per_tok"), n_shared=0,
                  expert_intermediate_size=inter, shared_intermediate_size=0)
    r.str("scoring_func", ("sigmoid", "softmax"))  # routing choice only: same parameters and FLOPs
    r.touch("use_routing_bias", "use_mtp", "mtp_transformer_layers", "num_mtp_modules")
    notes = ["Multi-token-prediction modules (use_mtp) are not counted: transformers does not load them."]
    return finish(r, ctx, kinds=[("global", None)] * n_layers, moe_flags=[True] * n_layers, hidden=hidden,
                  heads=heads, kv=kv, hd=hd, inter=inter, vocab=r.int("vocab_size"), max_pos=max_pos,
                  tie=r.bool("tie_word_embeddings"), rope=rope_of(r, hd, max_pos, rotary_dim=rot), moe=moe,
                  qk_norm=qk, notes=notes)


def build_smollm3(r: Reader, ctx: dict):
    """SmolLM3: Llama's layer with RoPE left off the layers ``no_rope_layers`` marks 0 (by default
    every ``no_rope_layer_interval``-th); with ``use_sliding_window`` and a ``sliding_window``, those
    NoPE layers attend within the window (transformers' ``SmolLM3Config.__post_init__``: a layer slides
    only when it has no RoPE); ``attention_bias`` biases q, k, v and o alike."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    nrl = no_rope_flags(r, n_layers)
    use = r.bool("use_sliding_window")
    sw = r.int("sliding_window", null=True)
    types = C.layer_types(r, n_layers)
    if types is None:
        types = ["sliding_attention" if (use and sw is not None and not nrl[i]) else "full_attention"
                 for i in range(n_layers)]
    elif not use and any(t in ("sliding_attention", "sliding") for t in types):
        # SmolLM3Attention gives a sliding layer its window only when use_sliding_window is set
        raise LcprofError(f"{r.where}: layer_types names sliding layers but use_sliding_window is false "
                          "(transformers' SmolLM3 would run them as full attention): set one or the other")
    kinds = kinds_from_layer_types(r, types, sliding=sw)
    bias = r.bool("attention_bias")
    return finish(r, ctx, kinds=kinds, rope_flags=[bool(x) for x in nrl], hidden=hidden, heads=heads, kv=kv,
                  hd=hd, inter=r.int("intermediate_size"), vocab=r.int("vocab_size"), max_pos=max_pos,
                  tie=r.bool("tie_word_embeddings"), rope=rope_of(r, hd, max_pos), qkv_bias=bias, o_bias=bias,
                  mlp_bias=r.bool("mlp_bias"))


def build_ministral3(r: Reader, ctx: dict):
    """Ministral 3: Mistral's layer (one sliding_window, or none, for every layer; transformers ignores
    layer_types here, so lcprof refuses it) and, after RoPE, every query times 1 + beta * log(1 +
    floor(position / original)) -- the rope parameters' llama_4_scaling_beta and
    original_max_position_embeddings. Without rope parameters transformers' Ministral3Config gives YaRN x16
    from 16384 with beta 0.1."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    if r.given("layer_types"):
        raise LcprofError(f"{r.where}: layer_types: transformers' Ministral3 ignores it (one sliding_window for "
                          "every layer); state sliding_window alone")
    r.touch("layer_types")
    sw = r.int("sliding_window", null=True)
    kinds = [("sliding", sw) if sw is not None else ("global", None)] * n_layers
    block, notes = C.rope_block(r), []
    if block is None:
        block = dict(_MINISTRAL3_YARN)
        notes.append("No rope parameters given: transformers' Ministral3Config default, YaRN x16 from 16384, "
                     "Llama 4 scaling beta 0.1.")
    if block.get("llama_4_scaling_beta") is None:
        raise LcprofError(f"{r.where}: rope parameters without llama_4_scaling_beta: transformers' Ministral3 "
                          "scales every query by it")
    beta = r.as_float("rope_parameters.llama_4_scaling_beta", block["llama_4_scaling_beta"], ge=0.0)
    if block.get("max_position_embeddings") not in (None, max_pos):
        raise LcprofError(f"{r.where}: rope parameters' max_position_embeddings {block['max_position_embeddings']} "
                          f"differs from max_position_embeddings {max_pos}")
    block = {k: v for k, v in block.items() if k not in ("llama_4_scaling_beta", "max_position_embeddings")}
    rope = rope_of(r, hd, max_pos, block=block)
    if rope.original_max_position is None:
        raise LcprofError(f"{r.where}: the Llama 4 scaling needs original_max_position_embeddings in the rope "
                          "parameters")
    return finish(r, ctx, kinds=kinds, hidden=hidden, heads=heads, kv=kv, hd=hd, inter=r.int("intermediate_size"),
                  vocab=r.int("vocab_size"), max_pos=max_pos, tie=r.bool("tie_word_embeddings"), rope=rope,
                  query_scaling=(beta, rope.original_max_position), notes=notes)


def build_seed_oss(r: Reader, ctx: dict):
    """Seed-OSS: Llama's layer, every layer global with RoPE; ``attention_bias`` biases q, k and v,
    ``attention_out_bias`` o_proj, ``mlp_bias`` the three MLP projections (transformers' SeedOss)."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    return finish(r, ctx, kinds=[("global", None)] * n_layers, hidden=hidden, heads=heads, kv=kv, hd=hd,
                  inter=r.int("intermediate_size"), vocab=r.int("vocab_size"), max_pos=max_pos,
                  tie=r.bool("tie_word_embeddings"), rope=rope_of(r, hd, max_pos),
                  qkv_bias=r.bool("attention_bias"), o_bias=r.bool("attention_out_bias"),
                  mlp_bias=r.bool("mlp_bias"))



def build_granite(r: Reader, ctx: dict):
    """Granite 3.x (transformers' GraniteForCausalLM): Llama's layer, every layer global with RoPE,
    ``attention_bias`` on q/k/v/o, ``mlp_bias`` on the three MLP projections, and muP scalars that
    transformers always applies whatever their values: the softmax scale is attention_multiplier, each
    block's output times residual_multiplier before its residual add (one more elementwise op), the
    embeddings times embedding_multiplier, the logits divided by logits_scaling (as Granite 4.0-H)."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    bias = r.bool("attention_bias")
    rm = r.float("residual_multiplier", gt=0.0)
    return finish(r, ctx, kinds=[("global", None)] * n_layers, hidden=hidden, heads=heads, kv=kv, hd=hd,
                  inter=r.int("intermediate_size"), vocab=r.int("vocab_size"), max_pos=max_pos,
                  tie=r.bool("tie_word_embeddings"), rope=rope_of(r, hd, max_pos), qkv_bias=bias, o_bias=bias,
                  mlp_bias=r.bool("mlp_bias"), attn_scale=r.float("attention_multiplier", gt=0.0),
                  residual_factors=((None, rm), (None, rm), (None, rm)),
                  embedding_multiplier=r.float("embedding_multiplier", gt=0.0),
                  logits_scaling=r.float("logits_scaling", gt=0.0))


def build_glm(r: Reader, ctx: dict):
    """GLM-4 (``glm``: glm-4-9b-chat converted to transformers; ``glm4``: the GLM-4-0414 models): GQA with
    ``attention_bias`` on q/k/v (never o), RoPE on the first partial_rotary_factor (default 0.5) of each
    head, rotating adjacent pairs (a permutation of the weights: same cost), fused gate_up MLP, every layer
    global. ``glm4`` adds a norm after attention and after the MLP (post_self_attn_layernorm,
    post_mlp_layernorm), four RMSNorms per layer, as Gemma 2's, but plain ones (x * w)."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    return finish(r, ctx, kinds=[("global", None)] * n_layers, hidden=hidden, heads=heads, kv=kv, hd=hd,
                  inter=r.int("intermediate_size"), vocab=r.int("vocab_size"), max_pos=max_pos,
                  tie=r.bool("tie_word_embeddings"), rope=rope_of(r, hd, max_pos), qkv_bias=r.bool("attention_bias"),
                  o_bias=False, norms_per_layer=4 if r.model_type == "glm4" else 2)


def _hunyuan_rope(r: Reader, hd: int, max_pos: int):
    """HunYuan's RoPE over the whole head: a "dynamic" block with ``alpha`` is NTK-alpha -- a fixed base
    rope_theta x alpha^(head_dim / (head_dim - 2)), whatever the factor and the YaRN-style keys beside it
    (transformers' HunYuanDenseV1RotaryEmbedding ``ntk_alpha``; vLLM's DynamicNTKAlphaRotaryEmbedding)."""
    block = C.rope_block(r)
    if block is None or block.get("alpha") is None:
        return rope_of(r, hd, max_pos, rotary_dim=hd), None
    kind = block.get("rope_type", block.get("type"))
    if kind != "dynamic":
        raise LcprofError(f"{r.where}: rope scaling alpha with rope_type {kind!r}: HunYuan reads alpha only for "
                          "\"dynamic\" (NTK-alpha)")
    alpha = r.as_float("rope_scaling.alpha", block["alpha"], gt=0.0)
    theta = C.rope_theta(r, block)
    for key in ("factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"):  # unread by NTK-alpha
        if block.get(key) is not None:
            r.as_float(f"rope_scaling.{key}", block[key])
    extra = sorted(set(block) - {"alpha", "rope_type", "type", "rope_theta", "factor", "beta_fast", "beta_slow",
                                 "mscale", "mscale_all_dim"})
    if extra:
        raise LcprofError(f"{r.where}: NTK-alpha rope scaling with key(s) lcprof does not know: {', '.join(extra)}")
    base = theta * alpha ** (hd / (hd - 2))
    note = (f"RoPE NTK-alpha (rope_scaling alpha {alpha:g}): a fixed base {theta:g} x {alpha:g}^({hd}/{hd - 2}) = "
            f"{base:.6g}.")
    return C.read_rope(r, hd, theta=base, block=None, max_pos=max_pos), note


def build_hunyuan_dense(r: Reader, ctx: dict):
    """HunYuan dense (Hunyuan-0.5B ... 7B, transformers' HunYuanDenseV1ForCausalLM): Llama's layer with a per-head
    RMSNorm of q and of k *after* RoPE (query_layernorm, key_layernorm: transformers builds them whatever
    use_qk_norm says, so false is refused), ``attention_bias`` on q/k/v/o, an unbiased MLP, NTK-alpha RoPE
    over the whole head, every layer global. The checkpoints' remote-code fields: cross-layer attention
    (use_cla, K/V shared by cla_share_factor layers) is refused when on (transformers computes every layer's own
    K/V); attention_head_dim must be head_dim; the classification-head and special-token fields cost nothing."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    if r.given("attention_head_dim") and r.int("attention_head_dim") != hd:
        raise LcprofError(f"{r.where}: attention_head_dim {r.int('attention_head_dim')} differs from head_dim {hd}")
    r.touch("attention_head_dim")
    if not r.bool("use_qk_norm"):
        raise LcprofError(f"{r.where}: use_qk_norm false: transformers' HunYuan norms q and k whatever it says "
                          "(vLLM does not): lcprof cannot tell which the user runs")
    if r.bool("use_cla"):
        raise LcprofError(f"{r.where}: use_cla true: cross-layer attention (K/V shared by cla_share_factor layers) "
                          "is not supported by lcprof")
    r.touch("cla_share_factor")
    if not r.bool("use_rotary_pos_emb"):
        raise LcprofError(f"{r.where}: use_rotary_pos_emb false: transformers' HunYuan applies RoPE whatever it says")
    r.str("norm_type", ("rms",))
    if r.bool("mlp_bias"):
        raise LcprofError(f"{r.where}: mlp_bias true: transformers' HunYuan builds its MLP without biases")
    if r.bool("add_classification_head"):
        raise LcprofError(f"{r.where}: add_classification_head true: a reward/classification head is not a "
                          "causal LM's (lcprof prices generation)")
    r.touch("class_num", "pool_type", "dense_list", "org_vocab_size")
    rope, note = _hunyuan_rope(r, hd, max_pos)
    bias = r.bool("attention_bias")
    return finish(r, ctx, kinds=[("global", None)] * n_layers, hidden=hidden, heads=heads, kv=kv, hd=hd,
                  inter=r.int("intermediate_size"), vocab=r.int("vocab_size"), max_pos=max_pos,
                  tie=r.bool("tie_word_embeddings"), rope=rope, qkv_bias=bias, o_bias=bias, qk_norm="head",
                  qk_norm_after_rope=True, notes=[note] if note else [])


# ----------------------------------------------------------------------------------------------
# defaults tables (transformers' configuration classes)
# ----------------------------------------------------------------------------------------------

_LLAMA = dict(num_key_value_heads=None, head_dim=None, rope_theta=10000.0, rope_scaling=None,
              attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
              # lcprof's what-if fields (see llama_masks): absent from LlamaConfig, None here
              layer_types=None, sliding_window=None, attention_chunk_size=None, no_rope_layers=None)
_MISTRAL = dict(num_key_value_heads=8, head_dim=None, rope_theta=10000.0, rope_scaling=None, sliding_window=4096,
                tie_word_embeddings=False)
_MIXTRAL = dict(_MISTRAL, rope_theta=1e6, sliding_window=None, num_experts_per_tok=2, num_local_experts=8)
_QWEN2 = dict(num_key_value_heads=32, rope_theta=10000.0, rope_scaling=None, use_sliding_window=False,
              sliding_window=4096, max_window_layers=28, tie_word_embeddings=False, layer_types=None)
_QWEN2_MOE = dict(_QWEN2, num_key_value_heads=16, decoder_sparse_step=1, moe_intermediate_size=1408,
                  shared_expert_intermediate_size=5632, num_experts_per_tok=4, num_experts=60, mlp_only_layers=None)
_QWEN3 = dict(_QWEN2, head_dim=128, attention_bias=False)
_QWEN3_MOE = dict(_QWEN3, num_key_value_heads=4, head_dim=None, decoder_sparse_step=1, moe_intermediate_size=768,
                  num_experts_per_tok=8, num_experts=128, mlp_only_layers=None)
# Qwen3VLTextConfig / Qwen3VLMoeTextConfig (default_theta 5e5; the wrapper's tie_word_embeddings, False by
# default, is the one read)
_QWEN3_VL = dict(num_key_value_heads=32, head_dim=128, rope_theta=500000.0, rope_scaling=None, attention_bias=False,
                 tie_word_embeddings=False)
_QWEN3_VL_MOE = dict(_QWEN3_VL, num_key_value_heads=16, head_dim=None, decoder_sparse_step=1, moe_intermediate_size=1408,
                     num_experts_per_tok=4, num_experts=60, mlp_only_layers=None)
# Qwen2VLTextConfig / Qwen2_5_VLTextConfig (default_theta 1e6; the wrapper's tie_word_embeddings, False)
_QWEN2_VL = dict(num_key_value_heads=8, rope_theta=1_000_000.0, rope_scaling=None, use_sliding_window=False,
                 sliding_window=4096, max_window_layers=80, layer_types=None, tie_word_embeddings=False)
_PHI3 = dict(num_key_value_heads=None, rope_theta=10000.0, rope_scaling=None, partial_rotary_factor=1.0,
             original_max_position_embeddings=4096, sliding_window=None, tie_word_embeddings=False)
_GEMMA2 = dict(vocab_size=256000, max_position_embeddings=8192, num_key_value_heads=4, head_dim=256,
               rope_theta=10000.0, rope_scaling=None, attention_bias=False, query_pre_attn_scalar=256,
               sliding_window=4096, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
               tie_word_embeddings=True, layer_types=None)
_GEMMA3 = dict(vocab_size=262208, max_position_embeddings=131072, num_key_value_heads=4, head_dim=256,
               rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, rope_scaling=None, attention_bias=False,
               query_pre_attn_scalar=256, sliding_window=4096, final_logit_softcapping=None,
               attn_logit_softcapping=None, tie_word_embeddings=True, layer_types=None)
_LLAMA4 = dict(max_position_embeddings=4096 * 32, num_key_value_heads=8, head_dim=128, rope_theta=500000.0,
               rope_scaling=None, attention_chunk_size=8192, use_qk_norm=True, num_experts_per_tok=1,
               num_local_experts=16, moe_layers=None, interleave_moe_layer_step=1, no_rope_layers=None,
               no_rope_layer_interval=4, intermediate_size_mlp=16384, attention_bias=False,
               tie_word_embeddings=False, layer_types=None, attn_temperature_tuning=True)
_GPT_OSS_YARN = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                 "original_max_position_embeddings": 4096}
_GPT_OSS = dict(num_key_value_heads=8, head_dim=64, rope_theta=150000.0, rope_scaling=None, sliding_window=128,
                attention_bias=True, num_experts_per_tok=4, num_local_experts=128, tie_word_embeddings=False,
                layer_types=None)
_MINIMAX_M2 = dict(num_key_value_heads=8, head_dim=128, rope_theta=5_000_000.0, rope_scaling=None,
                   use_qk_norm=True, qk_norm_type="per_layer", shared_intermediate_size=0, scoring_func="sigmoid",
                   tie_word_embeddings=False)

# SmolLM3Config's default_theta (2e6) is its rope_theta when a config names none
_SMOLLM3 = dict(num_key_value_heads=4, rope_theta=2_000_000.0, rope_scaling=None, use_sliding_window=False,
                sliding_window=None, no_rope_layers=None, no_rope_layer_interval=4, layer_types=None,
                attention_bias=False, mlp_bias=False, tie_word_embeddings=True)
# Ministral3Config.__post_init__'s rope parameters when a config gives none
_MINISTRAL3_YARN = {"rope_type": "yarn", "rope_theta": 1_000_000.0, "factor": 16.0,
                    "original_max_position_embeddings": 16384, "beta_fast": 32.0, "beta_slow": 1.0,
                    "mscale_all_dim": 1.0, "mscale": 1.0, "llama_4_scaling_beta": 0.1}
_MINISTRAL3 = dict(num_key_value_heads=8, head_dim=128, rope_scaling=None, sliding_window=None, layer_types=None,
                   tie_word_embeddings=False)
_SEED_OSS = dict(num_key_value_heads=8, head_dim=128, rope_theta=10000.0, rope_scaling=None, attention_bias=True,
                 attention_out_bias=False, mlp_bias=False, tie_word_embeddings=False)

# GraniteConfig (no head_dim field: hidden // heads, or a stated head_dim, as GraniteAttention reads it)
_GRANITE = dict(num_key_value_heads=None, rope_theta=10000.0, rope_scaling=None, attention_bias=False,
                mlp_bias=False, tie_word_embeddings=False, embedding_multiplier=1.0, logits_scaling=1.0,
                residual_multiplier=1.0, attention_multiplier=1.0)
# GlmConfig / Glm4Config (partial_rotary_factor 0.5 set by their __post_init__)
_GLM = dict(num_key_value_heads=2, head_dim=128, rope_theta=10000.0, rope_scaling=None, partial_rotary_factor=0.5,
            attention_bias=True, tie_word_embeddings=False)
# HunYuanDenseV1Config, and the remote-code fields its published configs carry, with the value that costs
# nothing (use_qk_norm: transformers always norms; use_cla off; RoPE on; RMSNorm; no MLP bias; no classifier)
_HUNYUAN = dict(num_key_value_heads=None, head_dim=None, rope_theta=10000.0, rope_scaling=None, attention_bias=False,
                tie_word_embeddings=False, use_qk_norm=True, use_cla=False, use_rotary_pos_emb=True,
                norm_type="rms", mlp_bias=False, add_classification_head=False)
_HUNYUAN_INERT = frozenset({"eod_token_id", "pad_id", "im_start_id", "im_end_id", "im_newline_id", "mask_init_id",
                            "text_start_id", "text_end_id", "sep_token_id"})

_SRC = "src/transformers/models/{0}/configuration_{0}.py"
_QWEN_INERT = frozenset({"norm_topk_prob"})

FAMILIES = [
    Family("llama", _SRC.format("llama"), _LLAMA, build_llama),
    Family("mistral", _SRC.format("mistral"), _MISTRAL, build_mistral),
    Family("mixtral", _SRC.format("mixtral"), _MIXTRAL, build_mistral),
    Family("qwen2", _SRC.format("qwen2"), _QWEN2, build_qwen),
    Family("qwen2_moe", _SRC.format("qwen2_moe"), _QWEN2_MOE, build_qwen, inert=_QWEN_INERT),
    Family("qwen3", _SRC.format("qwen3"), _QWEN3, build_qwen),
    Family("qwen3_moe", _SRC.format("qwen3_moe"), _QWEN3_MOE, build_qwen, inert=_QWEN_INERT),
    Family("qwen3_vl_text", _SRC.format("qwen3_vl"), _QWEN3_VL, build_qwen3_vl, text_of=("qwen3_vl",)),
    Family("qwen3_vl_moe_text", _SRC.format("qwen3_vl_moe"), _QWEN3_VL_MOE, build_qwen3_vl, text_of=("qwen3_vl_moe",),
           inert=_QWEN_INERT),
    Family("qwen2_vl_text", _SRC.format("qwen2_vl"), _QWEN2_VL, build_qwen2_vl, text_of=("qwen2_vl",)),
    Family("qwen2_5_vl_text", _SRC.format("qwen2_5_vl"), _QWEN2_VL, build_qwen2_vl, text_of=("qwen2_5_vl",)),
    Family("phi3", _SRC.format("phi3"), _PHI3, build_phi3),
    Family("gemma2", _SRC.format("gemma2"), _GEMMA2, build_gemma,
           required=frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"})),
    Family("gemma3_text", _SRC.format("gemma3"), _GEMMA3, build_gemma, text_of=("gemma3",),
           required=frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"})),
    Family("llama4_text", _SRC.format("llama4"), _LLAMA4, build_llama4, text_of=("llama4",),
           required=frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                               "intermediate_size"})),
    Family("gpt_oss", _SRC.format("gpt_oss"), _GPT_OSS, build_gpt_oss),
    Family("minimax_m2", _SRC.format("minimax_m2"), _MINIMAX_M2, build_minimax_m2),
    # SmolLM3Config takes max_window_layers as an unused keyword (published configs carry Qwen2's 28)
    Family("smollm3", _SRC.format("smollm3"), _SMOLLM3, build_smollm3, inert=frozenset({"max_window_layers"})),
    Family("seed_oss", _SRC.format("seed_oss"), _SEED_OSS, build_seed_oss, inert=frozenset({"residual_dropout"})),
    Family("ministral3", _SRC.format("ministral3"), _MINISTRAL3, build_ministral3),
    Family("granite", _SRC.format("granite"), _GRANITE, build_granite),
    Family("glm", _SRC.format("glm"), _GLM, build_glm),
    Family("glm4", _SRC.format("glm4"), _GLM, build_glm),
    Family("hunyuan_v1_dense", _SRC.format("hunyuan_v1_dense"), _HUNYUAN, build_hunyuan_dense, inert=_HUNYUAN_INERT),
]
assert all(f.required <= CORE for f in FAMILIES)
