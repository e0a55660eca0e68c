"""Hybrids of softmax attention with linear-time mixers, and MiMo-V2's per-kind attention shapes:
Jamba (Mamba-1 + attention, MoE every other layer), Nemotron-H (Mamba-2 / attention / MLP / MoE
blocks), Falcon-H1 (attention and Mamba-2 side by side in every layer), Granite 4.0-H (Mamba-2 or
attention, then MoE plus a shared MLP), MiniMax-M1 (lightning and softmax attention), MiMo-V2-Flash
(full and sliding layers with their own head counts), LFM2 (gated short convolutions and attention).

Defaults: transformers' ``configuration_jamba.py``, ``configuration_nemotron_h.py``,
``configuration_falcon_h1.py``, ``configuration_granitemoehybrid.py``, ``configuration_minimax.py``;
MiniMax-M1's and MiMo-V2-Flash's
own ``configuration_*.py`` shipped with their checkpoints where transformers has none or differs.
"""

from __future__ import annotations

import math

from lcprof.errors import LcprofError
from lcprof.spec.config import common as C
from lcprof.spec.config.families.decoders import attention_shapes
from lcprof.spec.config.family import Family
from lcprof.spec.config.reader import Reader
from lcprof.spec.layers import AttnDims, LayerSpec
from lcprof.spec.mixers import LightningSpec, Mamba2Spec, MambaSpec, ShortConvSpec
from lcprof.spec.moe import MoESpec


def _spec(r: Reader, ctx: dict, layers, notes, **fields):
    return C.make_spec(r, name=ctx["name"], meta=ctx["meta"], layers=layers, notes=ctx["notes"] + notes,
                       model_type=r.model_type, torch_dtype=ctx["dtype"], config=ctx["config"],
                       text_model_of=ctx["wrapper"], **fields)


# ----------------------------------------------------------------------------------------------
# Jamba
# ----------------------------------------------------------------------------------------------

def build_jamba(r: Reader, ctx: dict):
    """Jamba: layer i is attention when i % attn_layer_period == attn_layer_offset, else Mamba-1
    (d_inner = mamba_expand x hidden; RMSNorms over dt, B, C); its MLP is MoE when
    i % expert_layer_period == expert_layer_offset. No positional encoding at all."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    ap, ao = r.int("attn_layer_period"), r.int("attn_layer_offset", min=0)
    ep, eo = r.int("expert_layer_period"), r.int("expert_layer_offset", min=0)
    if ao >= ap or eo >= ep:
        raise LcprofError(f"{r.where}: attn_layer_offset/expert_layer_offset must be smaller than their periods")
    rank = r.raw("mamba_dt_rank")
    dt_rank = math.ceil(hidden / 16) if rank == "auto" else r.as_int("mamba_dt_rank", rank)
    mamba = MambaSpec(hidden_size=hidden, d_inner=r.int("mamba_expand") * hidden, d_state=r.int("mamba_d_state"),
                      d_conv=r.int("mamba_d_conv"), dt_rank=dt_rank, conv_bias=r.bool("mamba_conv_bias"),
                      proj_bias=r.bool("mamba_proj_bias"), bcdt_norm="weighted")
    sw = r.int("sliding_window", null=True)
    inter = r.int("intermediate_size")
    moe = MoESpec(n_experts=r.int("num_experts"), n_active=r.int("num_experts_per_tok"), n_shared=0,
                  expert_intermediate_size=inter, shared_intermediate_size=0)
    layers = []
    for i in range(n_layers):
        is_attn = i % ap == ao
        layers.append(LayerSpec(
            attn=("sliding" if sw else "global") if is_attn else "global", window=sw if is_attn else None,
            mixers=("attention",) if is_attn else ("mamba",), rope=False, moe=(i % ep == eo)))
    if r.given("layers_block_type"):
        raise LcprofError(f"{r.where}: layers_block_type is not read by lcprof for jamba; "
                          "the schedule comes from attn_layer_period/offset")
    return _spec(r, ctx, layers, ["Jamba's attention layers have no positional encoding."], hidden_size=hidden,
                 n_heads=heads, n_kv_heads=kv, head_dim=hd, v_head_dim=hd, intermediate_size=inter, mlp_gated=True,
                 vocab_size=r.int("vocab_size"), tie_embeddings=r.bool("tie_word_embeddings"),
                 max_position_embeddings=r.int("max_position_embeddings"), moe=moe, mamba=mamba)


# ----------------------------------------------------------------------------------------------
# Nemotron-H
# ----------------------------------------------------------------------------------------------

_NEMOTRON_LETTERS = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"}
_NEMOTRON_NAMES = {"mamba": "mamba", "linear_attention": "mamba", "attention": "attention",
                   "full_attention": "attention", "mlp": "mlp", "moe": "moe"}


def build_nemotron_h(r: Reader, ctx: dict):
    """Nemotron-H: one block per layer, one RMSNorm each -- ``M`` Mamba-2, ``*`` attention (no
    positional encoding, no MLP), ``-`` a ReLU^2 MLP, ``E`` a ReLU^2 MoE with one shared expert
    (``hybrid_override_pattern``, or ``layers_block_type``)."""
    hidden = r.int("hidden_size")
    if r.given("layers_block_type"):
        raw = r.list("layers_block_type")
        bad = [t for t in raw if t not in _NEMOTRON_NAMES]
        if bad:
            raise r.fail("layers_block_type", "a list of mamba/attention/mlp/moe", bad[0])
        blocks = [_NEMOTRON_NAMES[t] for t in raw]
        r.touch("hybrid_override_pattern")
    else:
        pattern = r.str("hybrid_override_pattern")
        bad = sorted(set(pattern) - set(_NEMOTRON_LETTERS))
        if bad:
            raise LcprofError(f"{r.where}: hybrid_override_pattern has letter(s) {''.join(bad)!r}; "
                              "known: M (Mamba-2), * (attention), - (MLP), E (MoE)")
        blocks = [_NEMOTRON_LETTERS[c] for c in pattern]
    n_layers = r.int("num_hidden_layers") if r.has("num_hidden_layers") else len(blocks)
    if n_layers != len(blocks):
        raise LcprofError(f"{r.where}: the layer pattern has {len(blocks)} blocks for num_hidden_layers {n_layers}")
    heads = r.int("num_attention_heads")
    kv = r.int("num_key_value_heads", null=True) or heads
    hd = r.int("attention_head_dim") if r.given("attention_head_dim") else r.int("head_dim")
    r.touch("attention_head_dim", "head_dim")
    if heads % kv:
        raise LcprofError(f"{r.where}: {heads} query heads are not a multiple of {kv} KV heads")
    if r.int("sliding_window", null=True) is not None:
        raise LcprofError(f"{r.where}: a sliding window on Nemotron-H attention is not supported by lcprof")
    mamba2 = Mamba2Spec(hidden_size=hidden, n_heads=r.int("mamba_num_heads"), head_dim=r.int("mamba_head_dim"),
                        d_state=r.int("ssm_state_size"), n_groups=r.int("n_groups"), d_conv=r.int("conv_kernel"),
                        chunk_size=r.int("chunk_size"), conv_bias=r.bool("use_conv_bias"),
                        proj_bias=r.bool("use_bias")) if "mamba" in blocks else None
    moe = None
    if "moe" in blocks:
        latent = r.int("moe_latent_size", null=True)
        if latent is not None:
            raise LcprofError(f"{r.where}: moe_latent_size (latent MoE projections) is not supported by lcprof yet")
        moe = MoESpec(n_experts=r.int("n_routed_experts"), n_active=r.int("num_experts_per_tok"), n_shared=1,
                      expert_intermediate_size=r.int("moe_intermediate_size"),
                      shared_intermediate_size=r.int("moe_shared_expert_intermediate_size"), gated=False)
        if r.int("n_shared_experts", min=0) != 1:
            raise LcprofError(f"{r.where}: n_shared_experts must be 1 (transformers builds exactly one shared expert)")
    else:
        r.touch("moe_latent_size", "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
                "moe_shared_expert_intermediate_size", "n_shared_experts")
    bias = r.bool("attention_bias")
    layers = []
    for b in blocks:
        if b == "mamba":
            layers.append(LayerSpec(mixers=("mamba2",), mlp=False))
        elif b == "attention":
            layers.append(LayerSpec(mlp=False, rope=False))
        else:
            layers.append(LayerSpec(mixers=(), mlp=True, moe=(b == "moe")))
    n_mtp = r.int("num_nextn_predict_layers", min=0) if r.has("num_nextn_predict_layers") else 0
    notes = ["Nemotron-H attention has no positional encoding (rope_theta/partial_rotary_factor, if present, "
             "are not used by its modeling code)."]
    if n_mtp:
        notes.append(f"{n_mtp} multi-token-prediction layer(s) are not counted: transformers does not load them.")
    state_dtype = r.str("mamba_ssm_cache_dtype", null=True) if r.has("mamba_ssm_cache_dtype") else None
    dense = "mlp" in blocks
    if not dense:
        r.touch("intermediate_size")  # no '-' block: transformers never builds the dense MLP it sizes
    return _spec(r, ctx, layers, notes, hidden_size=hidden, n_heads=heads, n_kv_heads=kv, head_dim=hd, v_head_dim=hd,
                 intermediate_size=r.int("intermediate_size") if dense else 0, mlp_gated=False,
                 mlp_bias=r.bool("mlp_bias"), vocab_size=r.int("vocab_size"),
                 tie_embeddings=r.bool("tie_word_embeddings"), max_position_embeddings=r.int("max_position_embeddings"),
                 moe=moe, mamba2=mamba2, qkv_bias=bias, o_bias=bias, norms_per_layer=1, state_dtype=state_dtype)


# ----------------------------------------------------------------------------------------------
# Falcon-H1
# ----------------------------------------------------------------------------------------------

def _mamba2_of(r: Reader, hidden: int, d_inner: int, **extra) -> Mamba2Spec:
    """The Mamba-2 mixer of Falcon-H1 and Granite 4.0-H (the ``mamba_*`` field names): mamba_n_heads
    heads of mamba_d_head ("auto": d_inner / heads), which must fill the inner width."""
    n_m = r.int("mamba_n_heads")
    dh = r.raw("mamba_d_head")
    d_head = d_inner // n_m if dh == "auto" else r.as_int("mamba_d_head", dh)
    if n_m * d_head != d_inner:
        raise LcprofError(f"{r.where}: mamba_n_heads x mamba_d_head = {n_m * d_head} != the Mamba inner width "
                          f"{d_inner}")
    return Mamba2Spec(hidden_size=hidden, n_heads=n_m, head_dim=d_head, d_state=r.int("mamba_d_state"),
                      n_groups=r.int("mamba_n_groups"), d_conv=r.int("mamba_d_conv"),
                      chunk_size=r.int("mamba_chunk_size"), conv_bias=r.bool("mamba_conv_bias"),
                      proj_bias=r.bool("mamba_proj_bias"), **extra)


def build_falcon_h1(r: Reader, ctx: dict):
    """Falcon-H1: every layer runs attention and Mamba-2 in parallel on the same normed input
    (d_inner = mamba_d_ssm, or mamba_expand x hidden), then a SwiGLU MLP. Its muP multipliers have
    no parameters and no FLOPs, but each is one elementwise op (``ModelSpec.mup_multipliers``,
    ``cost.ops._mup_bytes``); lm_head_multiplier scales the logits (one pass, as ``logits_scaling``
    = 1 / it), embedding_multiplier the embeddings."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    d_ssm = r.int("mamba_d_ssm", null=True)
    d_inner = d_ssm if d_ssm is not None else r.int("mamba_expand") * hidden
    r.touch("mamba_expand")
    mamba2 = _mamba2_of(r, hidden, d_inner, norm=r.bool("mamba_rms_norm"),
                        norm_before_gate=r.bool("mamba_norm_before_gate"))
    if r.given("attn_layer_indices"):
        raise LcprofError(f"{r.where}: attn_layer_indices (attention in only some layers) is not supported by lcprof")
    r.touch("attn_layer_indices")
    if r.bool("projectors_bias"):
        raise LcprofError(f"{r.where}: projectors_bias true is not supported by lcprof")
    if r.has("mamba_use_mlp") and not r.bool("mamba_use_mlp"):
        raise LcprofError(f"{r.where}: mamba_use_mlp false is not supported by lcprof")
    r.touch("mamba_use_mlp")
    block = C.rope_block(r)
    rope = C.read_rope(r, C.rotary_dim_of(hd, 1.0), theta=C.rope_theta(r, block), block=block, max_pos=max_pos)
    bias = r.bool("attention_bias")
    # the muP multipliers: values, not costs, but each must be a number (lists of 2 and 5)
    for key in ("key_multiplier", "attention_in_multiplier", "attention_out_multiplier", "ssm_in_multiplier",
                "ssm_out_multiplier"):
        r.float(key)
    for key, length in (("mlp_multipliers", 2), ("ssm_multipliers", 5)):
        vals = r.list(key)
        if len(vals) != length:
            raise r.fail(key, f"a list of {length} numbers", vals)
        for i, v in enumerate(vals):
            r.as_float(f"{key}[{i}]", v)
    lm = r.float("lm_head_multiplier", gt=0.0)
    layers = [LayerSpec(mixers=("attention", "mamba2")) for _ in range(n_layers)]
    return _spec(r, ctx, layers, [], hidden_size=hidden, n_heads=heads, n_kv_heads=kv, head_dim=hd, v_head_dim=hd,
                 intermediate_size=r.int("intermediate_size"), mlp_gated=True, mlp_bias=r.bool("mlp_bias"),
                 vocab_size=r.int("vocab_size"), tie_embeddings=r.bool("tie_word_embeddings"),
                 max_position_embeddings=max_pos, original_max_position_embeddings=rope.original_max_position,
                 rope=rope, mamba2=mamba2, qkv_bias=bias, o_bias=bias, mup_multipliers=True,
                 embedding_multiplier=r.float("embedding_multiplier", gt=0.0), logits_scaling=1.0 / lm)


# ----------------------------------------------------------------------------------------------
# Granite 4.0-H
# ----------------------------------------------------------------------------------------------

_GRANITE_MIXERS = {"mamba": "mamba2", "linear_attention": "mamba2", "attention": "attention",
                   "full_attention": "attention"}


def build_granite_hybrid(r: Reader, ctx: dict):
    """Granite 4.0-H (transformers' ``GraniteMoeHybridForCausalLM``): layer_types picks Mamba-2
    (d_inner = mamba_expand x hidden, grouped gated norm) or GQA attention (biases on q/k/v/o with
    attention_bias; RoPE only when position_embedding_type is "rope"); every layer then runs
    num_local_experts experts of width intermediate_size (softmax over the top-k logits) plus one
    ungated shared MLP of width shared_intermediate_size -- or, with no experts, that MLP alone.
    muP scalars: the softmax scale is attention_multiplier; each block's output is multiplied by
    residual_multiplier before its residual add (one more elementwise op); the embeddings are
    multiplied by embedding_multiplier and the logits divided by logits_scaling."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    types = C.layer_types(r, n_layers)
    if types is None:  # transformers' __post_init__: every layer Mamba
        types = ["mamba"] * n_layers
    bad = [t for t in types if t not in _GRANITE_MIXERS]
    if bad:
        raise r.fail("layer_types", "a list of mamba / attention layer types", bad[0])
    kinds = [_GRANITE_MIXERS[t] for t in types]
    # Mamba-2
    mamba2 = _mamba2_of(r, hidden, r.int("mamba_expand") * hidden) if "mamba2" in kinds else None
    if mamba2 is None:
        r.touch("mamba_d_state", "mamba_n_groups", "mamba_d_conv", "mamba_chunk_size", "mamba_conv_bias",
                "mamba_proj_bias")
    # positions
    pe = r.str("position_embedding_type", ("rope", "nope"), null=True)
    rope = None
    if pe == "rope":
        rope = rope_of_full(r, hd, max_pos)
    else:
        r.touch("rope_theta", "rope_scaling", "rope_parameters")
    # MLP: routed experts (if any) plus the shared MLP
    n_exp = r.int("num_local_experts", min=0)
    shared = r.int("shared_intermediate_size", min=0)
    inter = r.int("intermediate_size")
    if n_exp:
        moe = MoESpec(n_experts=n_exp, n_active=r.int("num_experts_per_tok"), n_shared=1 if shared else 0,
                      expert_intermediate_size=inter, shared_intermediate_size=shared)
        mlp_w = inter
    else:
        if not shared:
            raise LcprofError(f"{r.where}: num_local_experts 0 and shared_intermediate_size 0: no MLP at all")
        moe = None
        r.touch("num_experts_per_tok")
        mlp_w = shared  # intermediate_size sizes experts that do not exist
    # muP scalars
    attn_scale = r.float("attention_multiplier", gt=0.0)
    rm = r.float("residual_multiplier", gt=0.0)
    emb = r.float("embedding_multiplier", gt=0.0)
    ls = r.float("logits_scaling", gt=0.0)
    layers = [LayerSpec(mixers=("mamba2",) if k == "mamba2" else ("attention",), rope=rope is not None,
                        moe=bool(n_exp)) for k in kinds]
    bias = r.bool("attention_bias")
    notes = []
    if rope is None and "attention" in kinds:
        notes.append("Granite 4.0-H attention has no positional encoding (position_embedding_type is not rope).")
    return _spec(r, ctx, layers, notes, hidden_size=hidden, n_heads=heads, n_kv_heads=kv, head_dim=hd,
                 v_head_dim=hd, intermediate_size=mlp_w, mlp_gated=True, vocab_size=r.int("vocab_size"),
                 tie_embeddings=r.bool("tie_word_embeddings"), max_position_embeddings=max_pos,
                 original_max_position_embeddings=rope.original_max_position if rope else None, rope=rope, moe=moe,
                 mamba2=mamba2, qkv_bias=bias, o_bias=bias, attn_scale=attn_scale,
                 residual_factors=((None, rm), (None, rm), (None, rm)), embedding_multiplier=emb,
                 logits_scaling=ls)


def rope_of_full(r: Reader, head_dim: int, max_pos: int):
    block = C.rope_block(r)
    return C.read_rope(r, C.rotary_dim_of(head_dim, 1.0), theta=C.rope_theta(r, block), block=block,
                       max_pos=max_pos)


# ----------------------------------------------------------------------------------------------
# MiniMax-M1 / MiniMax-Text-01
# ----------------------------------------------------------------------------------------------

def build_minimax(r: Reader, ctx: dict):
    """MiniMax-M1 (``attn_type_list``: 0 lightning, 1 softmax) and transformers' ``minimax``
    (``layer_types``: linear_attention / full_attention): lightning layers run linear attention with
    the model's heads and head_dim; softmax layers are GQA with partial RoPE (rotary_dim); every
    MLP routes top-k of num_local_experts experts of width intermediate_size."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    if r.model_type == "minimax_m1":
        flags = r.int_list("attn_type_list", length=n_layers)
        if any(f not in (0, 1) for f in flags):
            raise r.fail("attn_type_list", "a list of 0 (lightning) / 1 (softmax)", flags)
        soft = [bool(f) for f in flags]
    else:
        types = C.layer_types(r, n_layers)
        if types is None:
            types = ["full_attention" if (i + 1) % 2 else "linear_attention" for i in range(n_layers)]
        bad = [t for t in types if t not in ("full_attention", "linear_attention")]
        if bad:
            raise r.fail("layer_types", "full_attention / linear_attention entries", bad[0])
        soft = [t == "full_attention" for t in types]
    if r.int("sliding_window", null=True) is not None:
        raise LcprofError(f"{r.where}: sliding_window on MiniMax softmax layers is not supported by lcprof")
    shared = r.int("shared_intermediate_size", min=0) if r.has("shared_intermediate_size") else 0
    if shared:
        raise LcprofError(f"{r.where}: shared_intermediate_size {shared} (shared experts) is not supported by lcprof")
    r.touch("shared_moe_mode")
    rot = r.int("rotary_dim") if r.given("rotary_dim") else None
    r.touch("rotary_dim")
    block = C.rope_block(r)
    rot = rot if rot is not None else C.rotary_dim_of(hd, C.partial_factor(r, block))
    if rot > hd:
        raise LcprofError(f"{r.where}: rotary_dim {rot} exceeds head_dim {hd}")
    rope = C.read_rope(r, rot, theta=C.rope_theta(r, block), block=block, max_pos=max_pos)
    inter = r.int("intermediate_size")
    moe = MoESpec(n_experts=r.int("num_local_experts"), n_active=r.int("num_experts_per_tok"), n_shared=0,
                  expert_intermediate_size=inter, shared_intermediate_size=0)
    # block_size: the lightning kernel's block (intra-block quadratic, inter-block through the state)
    lightning = LightningSpec(hidden_size=hidden, n_heads=heads, head_dim=hd, block_size=r.int("block_size"))
    layers = [LayerSpec(moe=True) if s else LayerSpec(mixers=("lightning",), moe=True) for s in soft]
    # the residuals: transformers' MiniMaxDecoderLayer always adds to the normed input and names the
    # factors *_factor; MiniMax-M1's own code (and vLLM's MiniMaxText01DecoderLayer) follows
    # ``postnorm`` (default False) and names them layernorm_*
    if r.model_type == "minimax_m1":
        post = r.bool("postnorm") if r.given("postnorm") else False
        keys = ("layernorm_full_attention_alpha", "layernorm_full_attention_beta", "layernorm_linear_attention_alpha",
                "layernorm_linear_attention_beta", "layernorm_mlp_alpha", "layernorm_mlp_beta")
    else:
        post = True
        r.touch("postnorm")
        keys = ("full_attn_alpha_factor", "full_attn_beta_factor", "linear_attn_alpha_factor",
                "linear_attn_beta_factor", "mlp_alpha_factor", "mlp_beta_factor")
    r.touch(*keys)
    vals = [r.float(k) if r.given(k) else 1.0 for k in keys]
    factors = ((vals[0], vals[1]), (vals[2], vals[3]), (vals[4], vals[5]))
    return _spec(r, ctx, layers, [], post_norm_residual=post, residual_factors=factors, hidden_size=hidden, n_heads=heads, n_kv_heads=kv, head_dim=hd, v_head_dim=hd,
                 intermediate_size=inter, mlp_gated=True, vocab_size=r.int("vocab_size"),
                 tie_embeddings=r.bool("tie_word_embeddings"), max_position_embeddings=max_pos,
                 original_max_position_embeddings=rope.original_max_position, rope=rope, moe=moe,
                 lightning=lightning)


# ----------------------------------------------------------------------------------------------
# MiMo-V2-Flash
# ----------------------------------------------------------------------------------------------

def build_mimo_v2(r: Reader, ctx: dict):
    """MiMo-V2-Flash: ``hybrid_layer_pattern`` (0 full, 1 sliding; default full at layer 0 and every
    sixth) -- full layers use num_attention_heads / num_key_value_heads / head_dim / v_head_dim,
    sliding ones the swa_* shapes and a sink logit per head (add_swa_attention_sink_bias); partial
    RoPE; MoE per ``moe_layer_freq`` (list or int, after first_k_dense_replace)."""
    hidden = r.int("hidden_size")
    n_layers = r.int("num_hidden_layers")
    full = AttnDims(r.int("num_attention_heads"), r.int("num_key_value_heads"), r.int("head_dim"),
                    r.int("v_head_dim"))
    swa = AttnDims(r.int("swa_num_attention_heads"), r.int("swa_num_key_value_heads"), r.int("swa_head_dim"),
                   r.int("swa_v_head_dim"))
    full.check(r.where)
    swa.check(r.where)
    if r.given("hybrid_layer_pattern"):
        pat = r.int_list("hybrid_layer_pattern", length=n_layers)
        if any(p not in (0, 1) for p in pat):
            raise r.fail("hybrid_layer_pattern", "a list of 0 (full) / 1 (sliding)", pat)
        sliding = [bool(p) for p in pat]
        r.touch("layer_types")
    else:
        r.touch("hybrid_layer_pattern")
        types = C.layer_types(r, n_layers)
        if types is None:
            types = ["full_attention" if (i == 0 or not (i + 1) % 6) else "sliding_attention" for i in range(n_layers)]
        sliding = [t == "sliding_attention" for t in types]
    # sliding_window_size counts the keys *before* the query (SGLang's reference, which transformers >= 5.25
    # follows: MiMoV2FlashConfig sets sliding_window = sliding_window_size + 1, whatever sliding_window says);
    # lcprof's window, like transformers' sliding_window, counts the query too
    size = r.int("sliding_window_size") if r.given("sliding_window_size") else None
    w = size + 1 if size is not None else r.int("sliding_window")
    for k in ("sliding_window", "attention_chunk_size"):  # published configs repeat the size in both
        if r.given(k) and size is not None and r.int(k) not in (size, size + 1):
            raise LcprofError(f"{r.where}: {k} {r.int(k)} differs from sliding_window_size {size}")
        r.touch(k)
    sink_swa, sink_full = r.bool("add_swa_attention_sink_bias"), r.bool("add_full_attention_sink_bias")
    flags = C.moe_by_first_dense(r, n_layers)
    n_shared = r.int("n_shared_experts", min=0, null=True) or 0
    moe_w = r.int("moe_intermediate_size")
    moe = MoESpec(n_experts=r.int("n_routed_experts"), n_active=r.int("num_experts_per_tok"), n_shared=n_shared,
                  expert_intermediate_size=moe_w, shared_intermediate_size=moe_w)
    if full.head_dim != swa.head_dim:
        raise LcprofError(f"{r.where}: full and sliding layers with different head_dim are not supported (one rotary dim)")
    max_pos = r.int("max_position_embeddings")
    factor = r.float("partial_rotary_factor", gt=0.0, le=1.0)
    rope = C.read_rope(r, C.rotary_dim_of(full.head_dim, factor), theta=r.float("rope_theta", gt=1.0),
                       block=C.rope_block(r), max_pos=max_pos)
    r.float("swa_rope_theta", gt=1.0)
    r.float("attention_value_scale", gt=0.0, null=True)
    bias = r.bool("attention_bias")
    layers = []
    for i in range(n_layers):
        if sliding[i]:
            layers.append(LayerSpec(attn="sliding", window=w, moe=flags[i], sinks=sink_swa,
                                    dims=None if swa == full else swa))
        else:
            layers.append(LayerSpec(moe=flags[i], sinks=sink_full))
    notes = ["Sliding layers use RoPE base swa_rope_theta; full layers rope_theta. attention_value_scale "
             "rescales V (no cost)."]
    if size is not None:
        notes.append(f"Sliding window {w} keys: the query and sliding_window_size {size} before it (SGLang's "
                     "reference; transformers' MiMoV2FlashConfig).")
    return _spec(r, ctx, layers, notes, hidden_size=hidden, n_heads=full.n_heads, n_kv_heads=full.n_kv_heads,
                 head_dim=full.head_dim, v_head_dim=full.v_head_dim, intermediate_size=r.int("intermediate_size"),
                 mlp_gated=True, vocab_size=r.int("vocab_size"), tie_embeddings=r.bool("tie_word_embeddings"),
                 max_position_embeddings=max_pos, original_max_position_embeddings=rope.original_max_position,
                 rope=rope, moe=moe, qkv_bias=bias, o_bias=bias)


# ----------------------------------------------------------------------------------------------
# defaults
# ----------------------------------------------------------------------------------------------

_JAMBA = dict(num_key_value_heads=8, tie_word_embeddings=False, max_position_embeddings=262144,
              num_experts_per_tok=2, num_experts=16, expert_layer_period=2, expert_layer_offset=1,
              attn_layer_period=8, attn_layer_offset=4, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2,
              mamba_dt_rank="auto", mamba_conv_bias=True, mamba_proj_bias=False, sliding_window=None)
_NEMOTRON = dict(vocab_size=131072, tie_word_embeddings=False, num_key_value_heads=8, head_dim=128,
                 max_position_embeddings=4096, attention_bias=False, sliding_window=None, intermediate_size=21504,
                 mlp_bias=False, ssm_state_size=128, mamba_num_heads=128, mamba_head_dim=64, n_groups=8,
                 conv_kernel=4, use_conv_bias=True, chunk_size=128, n_routed_experts=8, n_shared_experts=1,
                 moe_intermediate_size=7688, moe_shared_expert_intermediate_size=7688, moe_latent_size=None,
                 num_experts_per_tok=2, use_bias=False, mamba_ssm_cache_dtype="float32")
# (the multipliers: transformers' FalconH1Config defaults)
_FALCON_H1 = dict(vocab_size=128000, tie_word_embeddings=False, num_key_value_heads=8, head_dim=None,
                  key_multiplier=1.0, attention_in_multiplier=1.0, attention_out_multiplier=1.0,
                  ssm_in_multiplier=1.0, ssm_out_multiplier=1.0, mlp_multipliers=[1.0, 1.0],
                  ssm_multipliers=[1.0, 1.0, 1.0, 1.0, 1.0], lm_head_multiplier=1.0, embedding_multiplier=1.0,
                  max_position_embeddings=8192, mamba_d_ssm=1024, mamba_n_heads=128, mamba_d_head="auto",
                  mamba_n_groups=1, mamba_d_state=256, mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=256,
                  mamba_conv_bias=True, mamba_proj_bias=False, mamba_norm_before_gate=True, mamba_rms_norm=False,
                  projectors_bias=False, rope_theta=100000.0, rope_scaling=None, attention_bias=False,
                  mlp_bias=False)
_GRANITE = dict(num_key_value_heads=None, head_dim=None, tie_word_embeddings=False, rope_theta=10000.0,
                rope_scaling=None, attention_bias=False, embedding_multiplier=1.0, logits_scaling=1.0,
                residual_multiplier=1.0, attention_multiplier=1.0, num_local_experts=8, num_experts_per_tok=2,
                shared_intermediate_size=1024, position_embedding_type=None, layer_types=None, mamba_n_heads=128,
                mamba_n_groups=1, mamba_d_state=256, mamba_d_head="auto", mamba_d_conv=4, mamba_expand=2,
                mamba_chunk_size=256, mamba_conv_bias=True, mamba_proj_bias=False)
_MINIMAX = dict(num_key_value_heads=8, head_dim=None, tie_word_embeddings=False, sliding_window=None,
                num_experts_per_tok=2, num_local_experts=8, rope_theta=1e6, rope_scaling=None, layer_types=None,
                block_size=256)
_MIMO = dict(num_attention_heads=64, num_key_value_heads=4, head_dim=192, v_head_dim=128,
             swa_num_attention_heads=64, swa_num_key_value_heads=8, swa_head_dim=192, swa_v_head_dim=128,
             rope_theta=10_000_000.0, swa_rope_theta=10_000.0, partial_rotary_factor=0.334, sliding_window=128,
             add_swa_attention_sink_bias=False, add_full_attention_sink_bias=False, attention_bias=False,
             first_k_dense_replace=0, moe_layer_freq=1, n_shared_experts=None, moe_intermediate_size=2048,
             num_experts_per_tok=8, n_routed_experts=256, tie_word_embeddings=False, rope_scaling=None,
             attention_value_scale=0.707, layer_types=None)

_MAMBA_INIT = frozenset({"time_step_min", "time_step_max", "time_step_floor", "time_step_limit", "time_step_rank",
                         "time_step_init_scheme", "time_step_scale", "use_mambapy", "mamba_hidden_act",
                         "expand", "mamba_proj_bias", "mamba_chunk_size_comment"})
_ROUTING = frozenset({"n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob", "topk_method",
                      "scoring_func", "moe_shared_expert_overlap"})
_NEMOTRON_INERT = _MAMBA_INIT | _ROUTING | {"mtp_layers_block_type", "mtp_hybrid_override_pattern",
                                            "num_nextn_predict_layers", "rope_theta", "partial_rotary_factor",
                                            "hidden_dropout", "mamba_ssm_cache_dtype"}
_FALCON_H1_INERT = _MAMBA_INIT | {"mamba_chunk_size_comment"}  # the muP multipliers are read (build_falcon_h1)
# the Mamba conv's activation is hidden_act (SiLU, as the MLP's); normalization_function is RMSNorm
_GRANITE_INERT = _MAMBA_INIT | {"normalization_function"}
_MINIMAX_INERT = frozenset()  # the residual factors and postnorm are read (build_minimax)
_MIMO_INERT = _ROUTING | {"layernorm_epsilon"}
_SRC = "src/transformers/models/{0}/configuration_{0}.py"
_HYB_REQ = frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size"})

# ----------------------------------------------------------------------------------------------
# LFM2
# ----------------------------------------------------------------------------------------------

#: LFM2's remote-code spellings of transformers' fields: alias -> the field it must equal
_LFM2_ALIASES = {"block_dim": "hidden_size", "conv_dim": "hidden_size", "conv_dim_out": "hidden_size",
                 "num_heads": "num_attention_heads"}


def build_lfm2(r: Reader, ctx: dict):
    """LFM2 (transformers' ``Lfm2ForCausalLM``): layer_types (or full_attn_idxs; every layer attention when
    neither is given) picks GQA attention -- per-head q/k RMSNorm before RoPE, no biases -- or the gated short
    convolution (``ShortConvSpec``: conv_L_cache taps over hidden_size channels, conv_bias on it and its
    projections); every layer then a SwiGLU MLP whose width transformers' ``Lfm2MLP`` derives: with
    block_auto_adjust_ff_dim, int(2/3 x intermediate_size), then with a block_ffn_dim_multiplier int(m x it)
    rounded up to block_multiple_of. ``block_ff_dim`` and ``tie_embedding`` (the checkpoints' spellings) win
    over intermediate_size and tie_word_embeddings, as ``Lfm2Config.__post_init__`` pops them; the other
    remote-code fields must agree with the fields they repeat. ``lfm2_moe`` (LFM2-8B-A1B): the first
    num_dense_layers run a dense MLP of intermediate_size as given (no adjusting), the others route top
    num_experts_per_tok of num_experts experts of moe_intermediate_size (sigmoid scores, an expert-bias
    buffer), no shared expert."""
    if "num_key_value_heads" in r.cfg and r.cfg["num_key_value_heads"] is None:  # Lfm2Config: an int, never None
        raise r.fail("num_key_value_heads", "an integer >= 1", None)
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    for alias, field in _LFM2_ALIASES.items():
        if r.given(alias) and r.int(alias) != r.int(field):
            raise LcprofError(f"{r.where}: {alias} {r.int(alias)} differs from {field} {r.int(field)}")
        r.touch(alias)
    types = C.layer_types(r, n_layers)
    idxs = r.int_list("full_attn_idxs", null=True)
    if types is None:
        idx = set(range(n_layers)) if idxs is None else set(idxs)
        if any(not 0 <= i < n_layers for i in idx):
            raise r.fail("full_attn_idxs", f"layer indices in 0..{n_layers - 1}", sorted(idx))
        types = ["full_attention" if i in idx else "conv" for i in range(n_layers)]
    elif idxs is not None and sorted(idxs) != [i for i, t in enumerate(types) if t == "full_attention"]:
        raise LcprofError(f"{r.where}: full_attn_idxs {sorted(idxs)} disagrees with layer_types' attention layers")
    bad = [t for t in types if t not in ("full_attention", "conv")]
    if bad:
        raise r.fail("layer_types", "a list of full_attention / conv", bad[0])
    moe = moe_flags = None
    if r.model_type == "lfm2_moe":  # Lfm2MoeDecoderLayer: a dense MLP of intermediate_size (as given) before
        inter = r.int("intermediate_size")  # num_dense_layers, then num_experts of moe_intermediate_size, top-k
        n_dense = r.int("num_dense_layers", min=0)
        moe = MoESpec(n_experts=r.int("num_experts"), n_active=r.int("num_experts_per_tok"), n_shared=0,
                      expert_intermediate_size=r.int("moe_intermediate_size"), shared_intermediate_size=0)
        moe_flags = [i >= n_dense for i in range(n_layers)]
        # routing only: sigmoid scores, the expert_bias buffer, renormalized top-k, the scale
        r.float("routed_scaling_factor", gt=0.0)
        r.bool("use_expert_bias"), r.bool("norm_topk_prob")
    # the MLP width (Lfm2MLP)
    elif not (r.given("block_ff_dim") or r.given("intermediate_size")):
        raise LcprofError(f"{r.where}: neither intermediate_size nor block_ff_dim is given: the MLP width is unknown")
    else:
        inter = r.int("block_ff_dim") if r.given("block_ff_dim") else r.int("intermediate_size")
    r.touch("intermediate_size")
    if moe is None and r.bool("block_auto_adjust_ff_dim"):  # LFM2-MoE's MLP width is never adjusted
        inter = int(2 * inter / 3)
        mult = r.float("block_ffn_dim_multiplier", gt=0.0, null=True)
        if mult is not None:
            step = r.int("block_multiple_of")
            inter = step * ((int(mult * inter) + step - 1) // step)
        else:
            r.touch("block_multiple_of")
    elif moe is None:
        r.touch("block_ffn_dim_multiplier", "block_multiple_of")
    if r.given("block_use_swiglu") and not r.bool("block_use_swiglu"):
        raise LcprofError(f"{r.where}: block_use_swiglu false: transformers' LFM2 MLP is SwiGLU whatever it says")
    r.touch("block_use_swiglu")
    if r.given("use_pos_enc") and not r.bool("use_pos_enc"):
        raise LcprofError(f"{r.where}: use_pos_enc false: transformers' LFM2 applies RoPE whatever it says")
    r.touch("use_pos_enc")
    block = C.rope_block(r)
    theta = C.rope_theta(r, block)
    if r.given("theta") and r.float("theta", gt=1.0) != theta:
        raise LcprofError(f"{r.where}: theta {r.float('theta')} differs from rope_theta {theta}")
    rope = C.read_rope(r, C.rotary_dim_of(hd, 1.0), theta=theta, block=block, max_pos=max_pos)
    tie = r.bool("tie_embedding") if r.given("tie_embedding") else r.bool("tie_word_embeddings")
    r.touch("tie_word_embeddings")
    conv = ShortConvSpec(hidden_size=hidden, channels=hidden, kernel=r.int("conv_L_cache", min=2),
                         bias=r.bool("conv_bias")) if "conv" in types else None
    if conv is None:
        r.touch("conv_L_cache", "conv_bias")
    moe_flags = moe_flags or [False] * n_layers
    layers = [LayerSpec(mixers=("short_conv",) if t == "conv" else ("attention",), moe=moe_flags[i])
              for i, t in enumerate(types)]
    return _spec(r, ctx, layers, [], hidden_size=hidden, n_heads=heads, n_kv_heads=kv, head_dim=hd, v_head_dim=hd,
                 intermediate_size=inter, mlp_gated=True, vocab_size=r.int("vocab_size"), tie_embeddings=tie,
                 max_position_embeddings=max_pos, rope=rope, short_conv=conv, qk_norm="head", moe=moe)


# Lfm2Config (default_theta 1e6), and the checkpoints' remote-code fields with the values that cost nothing
_LFM2 = dict(num_key_value_heads=8, rope_theta=1_000_000.0, rope_scaling=None, tie_word_embeddings=True,
             conv_bias=False, conv_L_cache=3, block_multiple_of=256, block_ffn_dim_multiplier=1.0,
             block_auto_adjust_ff_dim=True, full_attn_idxs=None, layer_types=None)
# Lfm2MoeConfig (no block_* fields: the dense width is intermediate_size itself)
_LFM2_MOE = dict(num_key_value_heads=8, rope_theta=1_000_000.0, rope_scaling=None, tie_word_embeddings=True,
                 conv_bias=False, conv_L_cache=3, num_dense_layers=2, num_experts_per_tok=4, num_experts=32,
                 moe_intermediate_size=1792, use_expert_bias=True, routed_scaling_factor=1.0, norm_topk_prob=True,
                 layer_types=None, full_attn_idxs=None)
_LFM2_INERT = frozenset({"block_norm_eps", "block_mlp_init_scale", "block_out_init_scale", "block_use_xavier_init",
                         "conv_use_xavier_init"})


FAMILIES = [
    Family("jamba", _SRC.format("jamba"), _JAMBA, build_jamba, inert=_MAMBA_INIT | {"use_mamba_kernels"},
           required=_HYB_REQ),
    Family("nemotron_h", _SRC.format("nemotron_h"), _NEMOTRON, build_nemotron_h, inert=_NEMOTRON_INERT,
           required=frozenset({"hidden_size", "num_attention_heads"})),
    Family("falcon_h1", _SRC.format("falcon_h1"), _FALCON_H1, build_falcon_h1, inert=_FALCON_H1_INERT,
           required=_HYB_REQ),
    Family("granitemoehybrid", _SRC.format("granitemoehybrid"), _GRANITE, build_granite_hybrid,
           inert=_GRANITE_INERT, required=_HYB_REQ),
    Family("minimax", _SRC.format("minimax"), _MINIMAX, build_minimax, inert=_MINIMAX_INERT, required=_HYB_REQ),
    Family("minimax_m1", "configuration_minimax_m1.py shipped with MiniMaxAI/MiniMax-M1-* (trust_remote_code)",
           dict(_MINIMAX, rope_theta=1e6, shared_intermediate_size=0), build_minimax, inert=_MINIMAX_INERT,
           required=_HYB_REQ),
    Family("lfm2", _SRC.format("lfm2"), _LFM2, build_lfm2, inert=_LFM2_INERT,
           required=frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                               "max_position_embeddings"})),
    Family("lfm2_moe", _SRC.format("lfm2_moe"), _LFM2_MOE, build_lfm2, inert=_LFM2_INERT),
    Family("mimo_v2_flash", _SRC.format("mimo_v2_flash") + " and XiaomiMiMo/MiMo-V2-Flash's configuration "
           "(swa_* shapes)", _MIMO, build_mimo_v2, inert=_MIMO_INERT,
           required=frozenset({"hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size",
                               "max_position_embeddings"})),
]
