"""Per-layer and per-model costs: FLOP breakdowns, KV cache, weights, activations, roofline.

Everything here is a pure function of a ModelSpec and a workload, vectorized over n with numpy.
FLOPs count 2 per multiply-add (see ``lcprof.cost.ops``). Bytes are integers where they are sizes
(KV cache, weights) and floats where they are traffic. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lcprof.cost import masks
from lcprof.cost.ops import (DEFAULT_TILE, FAMILIES, Op, attention_dims, check_priced, group_layers,
                             indexer_cache_bytes_per_token, layer_ops, lm_head_op)
from lcprof.errors import LcprofError
from lcprof.hardware import Hardware
from lcprof.spec import LayerSpec, ModelSpec, param_counts
from lcprof.spec.layers import activation_live
from lcprof.units import dtype_bytes, dtype_name

PHASES = ("prefill", "decode")


def _work(phase: str, n, prefix):
    """(new tokens, prefix) for a phase: decode is one new token after n cached."""
    if phase == "prefill":
        return np.asarray(n, dtype=np.float64), np.asarray(prefix, dtype=np.float64)
    if phase == "decode":
        return np.ones_like(np.asarray(n, dtype=np.float64)), np.asarray(n, dtype=np.float64) + prefix
    raise LcprofError(f"unknown phase {phase!r}; use prefill or decode")


def _sum_ops(ops_with_mult: list[tuple[list[Op], int]]) -> tuple[dict, dict, dict]:
    flops: dict[str, np.ndarray] = {}
    useful: dict[str, np.ndarray] = {}
    nbytes: dict[str, np.ndarray] = {}
    for ops, mult in ops_with_mult:
        for op in ops:
            flops[op.name] = flops.get(op.name, 0.0) + mult * op.flops
            useful[op.name] = useful.get(op.name, 0.0) + mult * op.useful_flops
            nbytes[op.name] = nbytes.get(op.name, 0.0) + mult * op.bytes
    return flops, useful, nbytes


#: What ``attn/total`` sums: the pairwise work of attention -- QK^T, eager's passes over the scores, PV,
#: and a sparse (DSA) layer's indexer scoring every causal pair in its small dims (issue 14: the
#: indexer's FLOPs over all pairs are part of the attention). Projections (``proj/*``, the indexer's
#: ``attn/indexer_*``) are linear in n and stay out.
ATTN_TOTAL_PARTS = ("attn/qk", "attn/elementwise", "attn/pv", "attn/indexer")
#: The ops a calibrated attention kernel rate prices (the rest run at the GEMM peak).
ATTN_KERNEL_OPS = ("attn/qk", "attn/pv")


def _attn_total(d: dict, zero) -> np.ndarray:
    return zero + sum((d.get(k, 0.0) for k in ATTN_TOTAL_PARTS), 0.0)


def _with_totals(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(d)
    zero = 0.0 * np.asarray(sum(d.values()))  # arrays over n even when a layer has no attention or mixer
    out["attn/total"] = _attn_total(d, zero)
    out["mixer/total"] = zero + sum((v for k, v in d.items() if k.startswith("mixer/")), 0.0)
    out["total"] = zero + sum(v for k, v in d.items())
    return out


#: Keys of ``Cost`` breakdowns that are sums of other keys (never summed again).
TOTAL_KEYS = ("total", "attn/total", "mixer/total")


@dataclass(frozen=True)
class Cost:
    """FLOPs (executed and useful) and bytes per op name, with totals; arrays over n."""

    n: np.ndarray
    flops: dict
    useful_flops: dict
    bytes: dict
    family: str
    dtype: str
    phase: str

    @property
    def total_flops(self) -> np.ndarray:
        return self.flops["total"]

    @property
    def total_useful_flops(self) -> np.ndarray:
        return self.useful_flops["total"]

    @property
    def total_bytes(self) -> np.ndarray:
        return self.bytes["total"]


def as_mask(mask) -> "masks.Mask | None":
    """A Mask from a Mask, a ``--mask`` string, or None (each layer's own mask)."""
    if mask is None or isinstance(mask, masks.Mask):
        return mask
    return masks.parse_mask(str(mask))


def _layers_for(spec: ModelSpec, layer: int | LayerSpec | None) -> list[tuple[LayerSpec, int]]:
    if layer is None:
        return group_layers(spec)
    if isinstance(layer, LayerSpec):
        return [(layer, 1)]
    if not 0 <= int(layer) < spec.n_layers:
        raise LcprofError(f"layer index {layer} out of range 0..{spec.n_layers - 1}")
    return [(spec.layers[int(layer)], 1)]


def cost(spec: ModelSpec, n, *, prefix=0, phase: str = "prefill", batch: int = 1, dtype: str = "bf16",
         family: str = "useful", layer: int | LayerSpec | None = None, causal: bool = True,
         tile: tuple[int, int] = DEFAULT_TILE, lm_head: bool = False, mla_form: str | None = None,
         elementwise: str = "unfused", mask: "masks.Mask | str | None" = None,
         state_dtype: str | None = None) -> Cost:
    """FLOPs and bytes of one layer (``layer`` = index or LayerSpec) or of all layers (None).

    Every layer kind answers for itself: attention (``attn/*``, ``proj/*``; sparse layers their
    indexer ``attn/indexer*``), linear-time mixers (``mixer/*``, summed in ``mixer/total``), MLPs
    (``mlp/*``). ``mask``: a what-if attention mask for every attention layer (a
    :class:`lcprof.cost.masks.Mask` or its ``--mask`` string). ``state_dtype``: the dtype mixers
    keep their state in (default ``dtype``).

    ``lm_head`` adds the vocabulary projection for the last position of each sequence
    (prefill) or the one new token (decode). ``elementwise``: ``unfused`` (one kernel per torch op,
    as lcprof's measured layer and transformers run) or ``fused`` (a serving engine's fused kernels).
    """
    if family not in FAMILIES:
        raise LcprofError(f"unknown backend family {family!r}; known: {', '.join(FAMILIES)}")
    if batch <= 0:
        raise LcprofError(f"batch must be positive, got {batch}")
    dtype = dtype_name(dtype)
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.float64))
    new, pre = _work(phase, n_arr, prefix)
    # MLA: naive (per-head K/V decompressed) for prefill, weight-absorbed for decode, unless asked.
    form = mla_form or ("absorbed" if phase == "decode" else "naive")
    mask = as_mask(mask)
    groups = [(layer_ops(spec, lyr, new, pre, batch=batch, dtype=dtype, family=family, causal=causal,
                         tile=tile, mla_form=form, elementwise=elementwise, mask=mask,
                         state_dtype=state_dtype), mult)
              for lyr, mult in _layers_for(spec, layer)]
    if lm_head:
        groups.append(([lm_head_op(spec, float(batch) * np.ones_like(new), dtype)], 1))
    f, u, b = _sum_ops(groups)
    return Cost(n=n_arr, flops=_with_totals(f), useful_flops=_with_totals(u), bytes=_with_totals(b),
                family=family, dtype=dtype, phase=phase)


# ----------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------

def kv_heads_per_gpu(spec: ModelSpec, tp: int = 1, dims=None) -> int:
    """KV heads each tensor-parallel rank holds; heads are replicated when tp exceeds them.

    ``dims``: a layer's ``AttnDims`` (``spec.attn_dims(layer)``); default the model's shapes."""
    if tp <= 0:
        raise LcprofError(f"tensor-parallel degree must be positive, got {tp}")
    n_heads, kvh = (spec.n_heads, spec.n_kv_heads) if dims is None else (dims.n_heads, dims.n_kv_heads)
    if kvh <= 0:
        raise LcprofError(f"{spec.name} has no attention layers: no KV heads to shard")
    if n_heads % tp:
        raise LcprofError(
            f"TP={tp} does not divide {spec.name}'s {n_heads} query heads; use a divisor of it"
        )
    if kvh >= tp:
        if kvh % tp:
            raise LcprofError(f"TP={tp} does not divide {spec.name}'s {kvh} KV heads")
        return kvh // tp
    if tp % kvh:
        raise LcprofError(f"TP={tp} is not a multiple of {spec.name}'s {kvh} KV heads")
    return 1


def kv_bytes_per_token_by_layer(spec: ModelSpec, kv_dtype: str = "bf16", tp: int = 1) -> np.ndarray:
    """Bytes one token adds to each layer's cache on one GPU (before any window cap).

    Only attention layers hold KV; a layer without attention holds none (its constant state is not
    KV). A sparse (DSA) layer caches its MLA latent (in ``kv_dtype``) and its indexer's key for
    every token, the key as vLLM stores it (:func:`lcprof.cost.ops.indexer_cache_bytes_per_token`:
    fp8 values and fp32 scales, 132 bytes for DeepSeek-V3.2, whatever ``kv_dtype`` is).
    """
    s = dtype_bytes(kv_dtype)
    if tp <= 0:
        raise LcprofError(f"tensor-parallel degree must be positive, got {tp}")
    out = np.zeros(spec.n_layers, dtype=np.float64)
    for i, layer in enumerate(spec.layers):
        if not layer.has_attention:
            continue
        if spec.mla is not None:
            # The compressed latent + shared rope key, one copy per layer; not split by heads under TP.
            out[i] = spec.mla.cache_dim * s
        else:
            d = spec.attn_dims(layer)
            out[i] = kv_heads_per_gpu(spec, tp, d) * (d.head_dim + d.v_head_dim) * s
        if layer.attn == "sparse":
            out[i] += indexer_cache_bytes_per_token(spec.indexer)  # fp8 + scales whatever kv_dtype is
    return out


def kv_bytes_per_token(spec: ModelSpec, kv_dtype: str = "bf16", tp: int = 1) -> int:
    """Bytes per cached token summed over layers, on one GPU, ignoring window caps."""
    return int(round(float(np.sum(kv_bytes_per_token_by_layer(spec, kv_dtype, tp)))))


def kv_tokens_by_layer(spec: ModelSpec, n, mask=None) -> np.ndarray:
    """Tokens each layer must hold at context n: (layers, len(n)). Sliding/chunked layers are
    capped; sparse (top-k) layers keep every token; layers without attention hold none. ``mask``:
    a what-if mask for every attention layer (its ``kv_tokens``: StreamingLLM's S + W, ...)."""
    from lcprof.cost.ops import layer_mask

    n_arr = np.atleast_1d(np.asarray(n, dtype=np.float64))
    mask = as_mask(mask)
    rows = []
    for layer in spec.layers:
        if not layer.has_attention:
            rows.append(np.zeros_like(n_arr))
        else:
            rows.append(layer_mask(layer, mask).kv_tokens(n_arr))
    return np.vstack(rows)


def kv_bytes(spec: ModelSpec, n, *, batch: int = 1, kv_dtype: str = "bf16", tp: int = 1,
             mask=None) -> np.ndarray:
    """KV-cache bytes on one GPU for ``batch`` sequences at context n (int64 array over n): the
    attention layers' only (the constant state of the other kinds is :func:`state_bytes`)."""
    per_layer = kv_bytes_per_token_by_layer(spec, kv_dtype, tp)[:, None]
    tokens = kv_tokens_by_layer(spec, n, mask)
    total = np.sum(per_layer * tokens, axis=0) * batch
    if np.any(total > 2.0 ** 53):  # float64 holds every integer below 2**53 exactly; int64 would wrap at 2**63
        raise LcprofError(f"KV cache of {float(np.max(total)):.3g} bytes is beyond what lcprof counts exactly "
                          f"(2**53 bytes = 8 PiB); lower the batch or n")
    return np.round(total).astype(np.int64)


def state_bytes_by_layer(spec: ModelSpec, *, dtype: str = "bf16", state_dtype: str | None = None, tp: int = 1,
                         mask=None) -> np.ndarray:
    """Constant bytes each layer holds per request on one GPU, whatever n: the conv and recurrent
    state of its linear-time mixers (:mod:`lcprof.cost.kinds`; conv state in ``dtype``, recurrent
    state in ``state_dtype``, default ``dtype``, as vLLM's mamba_cache_dtype / mamba_ssm_cache_dtype),
    and, under an Infini-attention what-if, each attention layer's compressive memory (M and z per
    KV head, in ``state_dtype``)."""
    from lcprof.cost.kinds import mixer_state_bytes
    from lcprof.cost.ops import infini_memory_dims

    mask = as_mask(mask)
    out = np.zeros(spec.n_layers, dtype=np.float64)
    for i, layer in enumerate(spec.layers):
        for kind in layer.mixers:
            if kind != "attention":
                out[i] += mixer_state_bytes(spec.mixer(kind), dtype, state_dtype=state_dtype, tp=tp)
        if layer.has_attention and isinstance(mask, masks.Infini):
            kvh, dk, dv = infini_memory_dims(spec, layer)
            heads = kv_heads_per_gpu(spec, tp, spec.attn_dims(layer)) if spec.mla is None else kvh
            out[i] += heads * (dk * dv + dk) * dtype_bytes(state_dtype or dtype)
    return out


def state_bytes(spec: ModelSpec, *, batch: int = 1, dtype: str = "bf16", state_dtype: str | None = None,
                tp: int = 1, mask=None) -> int:
    """Constant per-request state of the whole model on one GPU for ``batch`` sequences (bytes)."""
    return int(round(batch * float(np.sum(state_bytes_by_layer(spec, dtype=dtype, state_dtype=state_dtype,
                                                               tp=tp, mask=mask)))))


def refuse_state(spec: ModelSpec, consumer: str) -> None:
    """For a consumer that does not yet charge :func:`state_bytes`: refuse a model whose layers
    hold a constant per-request state, in one line, instead of planning without it."""
    if state_bytes(spec) > 0:
        from lcprof.cost.kinds import schedule_summary

        raise LcprofError(f"{consumer} does not yet charge the constant per-request state of {spec.name}'s "
                          f"linear-time mixers ({schedule_summary(spec)}); see `lcprof kv` for KV + state")


def weight_bytes(spec: ModelSpec, dtype: str = "bf16", tp: int = 1) -> int:
    """Weight bytes on one GPU under tensor parallelism.

    Attention, MLP, embeddings and lm_head are split tp ways; K/V projections are replicated when
    tp exceeds the KV heads; norms are replicated.
    """
    s = dtype_bytes(dtype)
    pc = param_counts(spec)
    norms = pc["norm_params"]
    if spec.mla is None and spec.has_attention:
        kv_proj = pc["kv_proj_params"]  # the attention layers' K/V projections
        kv_per_gpu = kv_proj * kv_heads_per_gpu(spec, tp) / spec.n_kv_heads
    else:
        kv_proj = kv_per_gpu = 0
        if spec.n_heads % tp:
            raise LcprofError(f"TP={tp} does not divide {spec.name}'s {spec.n_heads} heads")
    split = pc["total_params"] - norms - kv_proj
    return int(round(s * (split / tp + kv_per_gpu + norms)))


def _norm_extra(width: int, s: int, one_centred: bool = False, rows: int = 1) -> int:
    """Transient bytes per token of an unfused RMSNorm over ``width`` (input excluded).

    transformers' RMSNorm computes in float32: a low-precision input is copied up (4 B), squared
    (4 B, freed after the mean), scaled (4 B), cast back (s) and multiplied by the weight (s):
    peak 4 + 4 + s + s per element; in fp32/fp64 the input is used as is: scaled + output = 2s.
    ``one_centred`` (Gemma's order): the copy is freed once scaled, the scaled x once times the
    weight (in fp32), that product once cast back: never more than two of them, so for fp16/bf16 the
    peak is the copy and its square with the mean (4 B per row of ``width``: ``rows`` per token),
    8 B per element + 4 per row; otherwise the scaled x and its product, 2s.
    """
    if one_centred:
        return width * 8 + 4 * rows if s < 4 else width * 2 * s
    return width * (2 * s + (8 if s < 4 else 0))


def _layer_norm_extra(width: int, s: int) -> int:
    """Transient bytes per token of lcprof's unfused LayerNorm over ``width`` (input excluded; Cohere 2): the
    float32 copy (fp16/bf16) and the centred x live together (8 B per element), then the centred x and its
    square, the centred x and the scaled x, the scaled x and its weight product (8 B each); the per-row
    mean (4 B) beside them."""
    return width * 8 + 4


def _block_norm_extra(spec: ModelSpec, h: int, s: int) -> int:
    """The transients of one of the layer's own norms (not the q/k norms): LayerNorm or RMSNorm."""
    return _layer_norm_extra(h, s) if spec.layer_norm else _norm_extra(h, s, spec.norm_one_centred)


def _l2_norm_extra(width: int, s: int) -> int:
    """Transient bytes per token of transformers' ``Llama4TextL2Norm`` over ``width`` (input excluded).
    It computes in fp32: any other dtype is copied (4 B) and squared (4 B, freed after the mean) or
    scaled (4 B) beside the copy, then cast back beside the scaled result (4 + s), so the most live is
    max(8, 4 + s) per element (8 for fp16/bf16, 12 for fp64); in fp32 there is no copy and the square,
    then the scaled result, is the only one alive (4)."""
    return width * (4 if s == 4 else max(8, 4 + s))


def _rope_extra(width_heads: int, dim: int, rot: int, s: int) -> int:
    """Transient bytes per token of RoPE on ``width_heads`` heads of ``dim`` with ``rot`` rotated.

    x*cos, rotate_half(x) and its product with sin live together (3 x rot); a partial rotation
    then concatenates the rotated part with the pass-through dims (rot + dim).
    """
    return s * width_heads * max(3 * rot, rot + dim)


def _attention_heads(spec: ModelSpec, mla_form: str = "naive", tp: int = 1,
                     layer: LayerSpec | None = None) -> tuple[int, int, int]:
    """``ops.attention_dims`` on one of ``tp`` ranks: query heads (and MLA's decompressed K/V heads)
    split, K/V heads split or replicated (``kv_heads_per_gpu``), the shared latent whole."""
    kv_heads, qk_dim, v_dim = attention_dims(spec, mla_form, layer)
    if spec.mla is None:
        kv_heads = kv_heads_per_gpu(spec, tp, None if layer is None else spec.attn_dims(layer))
    elif mla_form == "naive":
        kv_heads = spec.n_heads // tp
    return kv_heads, qk_dim, v_dim


def activation_steps(spec: ModelSpec, n, *, batch: int = 1, dtype: str = "bf16", family: str = "tiled",
                     layer: int | LayerSpec = 0, prefix=0, materialize_mask: bool = True,
                     mla_form: str = "naive", tp: int = 1) -> dict[str, np.ndarray]:
    """Bytes live at each memory-heavy step of one layer's forward over n new tokens (arrays over n).

    The layout is transformers' (and lcprof's measured layer): the caller holds the input x; the
    token-mixing block holds the normed x and, for attention, q, k, v, the attention output and the
    o projection (:func:`_attention_steps`), for a linear-time mixer that mixer's own steps
    (:mod:`lcprof.cost.kinds`, checked to the byte against lcprof's mixer layers); parallel mixers
    (Falcon-H1) run one after the other on the same normed x, the first one's output kept. Past the
    block only the residual stream lives on (x and x + mix); the MLP (if the layer has one) holds
    its normed input and, gated, act(gate), up and their product. RMSNorm and RoPE run unfused (see
    ``_norm_extra``, ``_rope_extra``) and the RoPE cos/sin tables (n x rotary dims each) live
    throughout. A KV cache or mixer state the step reads is not counted: it is the cache's memory.
    MoE layers count the router logits and the active experts' summed width (lcprof's
    dense-equivalent timing). Weights are not included.

    ``tp``: one tensor-parallel rank's share (Megatron layout): query heads, K/V heads (replicated
    when ``tp`` exceeds them), mixer heads and the MLP width are split; the hidden-size tensors
    (input, normed x, residual, the o, out and down projections' all-reduced outputs), MLA's latent
    and the router logits are whole on every rank.
    """
    if family not in FAMILIES:
        raise LcprofError(f"unknown backend family {family!r}; known: {', '.join(FAMILIES)}")
    if mla_form not in ("naive", "absorbed"):
        raise LcprofError(f"unknown MLA form {mla_form!r}; use naive or absorbed")
    if isinstance(tp, bool) or int(tp) != tp or tp < 1:
        raise LcprofError(f"tensor-parallel degree must be a positive integer, got {tp!r}")
    s = dtype_bytes(dtype)
    lyr = layer if isinstance(layer, LayerSpec) else spec.layer(layer)
    check_priced(spec, lyr)
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.float64))
    keys = n_arr + prefix
    b = float(batch)
    h = spec.hidden_size
    steps: dict[str, np.ndarray] = {}
    resident = np.zeros_like(n_arr)
    kept = np.zeros_like(n_arr)  # outputs of the parallel mixers already run
    for kind in lyr.mixers:
        if kind == "attention":
            steps.update(_attention_steps(spec, lyr, n_arr, keys, b, s, family, mla_form, tp))
            resident = _attention_resident(spec, lyr, n_arr, keys, s, family, materialize_mask)
        else:
            from lcprof.cost.kinds import mixer_activation_steps, per_rank

            mixer = per_rank(spec.mixer(kind), tp)
            own = mixer_activation_steps(mixer, n_arr, batch=batch, dtype=dtype, prefix=prefix)
            x_in = b * n_arr * s * h  # the layer's input; the mixer's own steps count the normed x
            # a step the mixer does not run for this n (decode's in a prefill, the chunk loop's
            # in decode) is 0 and stays 0
            steps.update({k: np.where(v > 0, v + x_in + kept, 0.0) for k, v in own.items()})
            steps.setdefault("input_norm", b * n_arr * (s * h + _block_norm_extra(spec, h, s)))
        kept = kept + b * n_arr * s * h
    steps.update(_mlp_steps(spec, lyr, n_arr, b, s, tp))
    return {k: v + resident for k, v in steps.items()}


def _attention_steps(spec: ModelSpec, lyr: LayerSpec, n_arr, keys, b: float, s: float, family: str,
                     mla_form: str, tp: int) -> dict[str, np.ndarray]:
    """The attention block's steps (see :func:`activation_steps`). Eager adds the scores and their
    softmax over heads x n x (prefix + n) pairs (K/V repeated per query head for GQA, softmax in fp32
    for fp16/bf16); tiled kernels add the fp32 log-sum-exp. An output gate (Qwen3-Next) keeps its
    half of q_proj through the block and multiplies sigmoid(gate) into the output. The q/k RMSNorms
    (``qk_norm`` "head": Qwen3, Qwen3-Next; "full": MiniMax-M2) run unfused on q, then k, before RoPE
    (HunYuan's, ``qk_norm_after_rope``, after it);
    Llama 4's L2 norm (``qk_norm`` "l2", RoPE layers only) after it; its NoPE layers multiply q by
    their temperature (``attn_temperature_tuning``): the product, promoted to fp32, beside q, then the
    cast back beside the product."""
    dims = spec.attn_dims(lyr)
    if dims.n_heads % tp:
        raise LcprofError(f"TP={tp} does not divide {spec.name}'s {dims.n_heads} heads")
    h, H = spec.hidden_size, dims.n_heads // tp
    rope = spec.rope if (spec.rope is not None and lyr.rope) else None
    rot = rope.rotary_dim if rope is not None else 0
    x_in = s * h
    if spec.output_norms:  # OLMo 2/3, EXAONE 4: the block reads x itself; its norm runs on the output
        steps: dict[str, float] = {}
        base = x_in
    else:
        steps = {"attn/input_norm": x_in + _block_norm_extra(spec, h, s)}
        base = x_in + s * h  # + the normed x
    gate = s * H * dims.head_dim if (spec.attn_output_gate and spec.mla is None) else 0
    if spec.mla is None:
        d, vd, kvh = dims.head_dim, dims.v_head_dim, kv_heads_per_gpu(spec, tp, dims)
        qkv = base + gate + s * (H * d + kvh * d + kvh * vd)
        qk_norm = spec.qk_norm_at(lyr)
        norms: dict[str, float] = {}
        if qk_norm in ("head", "full"):  # RMSNorms of q, then k (the normed q alive with the old one); the
            # same bytes per element whether each head is a row (Qwen3) or all of q is (MiniMax-M2)
            per_head = qk_norm == "head"  # one row per head (Qwen3, Gemma 3) or one per token (MiniMax-M2)
            norms["attn/q_norm"] = qkv + _norm_extra(H * d, s, spec.norm_one_centred, H if per_head else 1)
            norms["attn/k_norm"] = qkv + s * H * d + _norm_extra(kvh * d, s, spec.norm_one_centred,
                                                                  kvh if per_head else 1)
        if not spec.qk_norm_after_rope:
            steps.update(norms)
        if rope is not None:
            steps["attn/rope_q"] = qkv + _rope_extra(H, d, rot, s)
            steps["attn/rope_k"] = qkv + s * H * d + _rope_extra(kvh, d, rot, s)
        if spec.qk_norm_after_rope:  # HunYuan: the same norms on the rotated q and k
            steps.update(norms)
        if qk_norm == "l2":  # Llama 4: after RoPE, a weightless L2 norm of q, then of k
            steps["attn/q_norm"] = qkv + _l2_norm_extra(H * d, s)
            steps["attn/k_norm"] = qkv + s * H * d + _l2_norm_extra(kvh * d, s)
        if spec.query_temperature_at(lyr):  # Llama 4's NoPE layers: q x temperature, in fp32, then cast back
            steps["attn/q_temperature"] = qkv + H * d * ((4 + s) if s < 4 else s)
        live = qkv  # rotated q and k replace the projections
        out = s * H * vd
        scaled_q = s * H * d if spec.query_scaling else 0  # Ministral 3: q x its scale, a new q beside the old
    else:
        m = spec.mla
        qk, lora = m.qk_head_dim, m.kv_lora_rank
        live = base
        if m.q_lora_rank:
            steps["attn/q_a_norm"] = live + s * m.q_lora_rank + _norm_extra(m.q_lora_rank, s)
            steps["attn/q_b"] = live + s * m.q_lora_rank + s * H * qk
        live = live + s * H * qk + s * m.cache_dim  # q and the compressed kv (latent + rope key)
        steps["attn/kv_a_norm"] = live + _norm_extra(lora, s)
        live = live + s * lora
        if rope is not None:
            steps["attn/rope_q"] = live + _rope_extra(H, rot, rot, s)
            live = live + s * H * rot
            steps["attn/rope_k"] = live + _rope_extra(1, rot, rot, s)
            live = live + s * rot
        if mla_form == "naive":
            # every latent decompressed (kv_b: per-head K_nope and V), keys concatenated per head
            # (over all keys), then the queries
            per_key = s * H * ((m.qk_nope_head_dim + m.v_head_dim) + qk)
            live = live + s * H * qk
        else:
            # absorbed: q_nope mapped into the latent space, queries = [q_lat, q_pe]; one shared
            # key [latent, k_pe] per key; the values are a view of the latent
            per_key = s * m.cache_dim
            live = live + s * H * lora + s * H * (lora + rot)
        out = s * H * (m.v_head_dim if mla_form == "naive" else lora)
    steps_n = {k: b * n_arr * v for k, v in steps.items()}
    live_n = b * n_arr * live
    if spec.mla is None and spec.query_scaling:  # + the per-position scale in q's dtype (one per position)
        steps_n["attn/q_scaling"] = live_n + b * n_arr * scaled_q + n_arr * s
    if spec.mla is not None:  # decompressed or concatenated keys span every key, not only the new tokens
        live_n = live_n + b * keys * per_key
    if family == "eager":
        # scores, then the softmax; low precision runs it in fp32 (an fp32 copy of the scores and
        # the fp32 probabilities live together, then are cast back: max(s + 8, 2s + 4) = s + 8);
        # scores and probabilities then meet the output of P @ V
        softmax_per_pair = s + 8 if s < 4 else 2 * s
        kv_heads, qk_dim, v_dim = _attention_heads(spec, mla_form, tp, lyr)
        att = live_n  # inside the backend: K and V expanded to every query head (repeat_interleave)
        if kv_heads != H:
            att = att + s * b * keys * H * (qk_dim + v_dim)
        pairs = b * H * n_arr * keys
        # with several sequences the batched products copy their head-major operands
        q_copy = np.where(n_arr > 1, s * b * n_arr * H * qk_dim, 0.0) if b > 1 else 0.0
        k_copy = s * b * keys * H * qk_dim if b > 1 else 0.0
        v_copy = s * b * keys * H * v_dim if b > 1 else 0.0
        # the masked fill inverts the boolean (n, keys) mask: one byte per pair, after the copies are freed
        unbounded = lyr.attn == "global" or lyr.window is None or keys <= lyr.window
        inverted = np.where((n_arr == 1) & unbounded, 0.0, n_arr * keys)
        steps_n["attn/qk"] = att + s * pairs + np.maximum(q_copy + k_copy, inverted)
        # gpt-oss's sinks: the softmax runs over one more column per query (scores and sink
        # logits concatenated into a new tensor that replaces the scores); P @ V reads a view of it
        sunk = pairs + (b * H * n_arr if lyr.sinks else 0.0)
        steps_n["attn/softmax"] = att + softmax_per_pair * sunk
        steps_n["attn/pv"] = att + 2 * s * sunk + b * n_arr * out + v_copy
        # past the backend (its expanded K/V, scores and probabilities freed) the (batch, heads, n, v)
        # output is transposed back: one more copy before the o projection, unless n = 1 (a view)
        steps_n["attn/o_proj"] = live_n + b * n_arr * (np.where(n_arr > 1, 2.0, 1.0) * out + s * h)
    else:
        steps_n["attn/kernel"] = live_n + b * n_arr * (out + 4 * H)
        steps_n["attn/o_proj"] = live_n + b * n_arr * (out + s * h)
    if spec.output_norms:  # past the block (q, k, v freed): x, the block's output and the norm's transients
        steps_n["attn/out_norm"] = b * n_arr * (x_in + s * h + _block_norm_extra(spec, h, s))
    if gate:  # sigmoid(gate) and the gated output live with the output before o_proj
        steps_n["attn/output_gate"] = live_n + b * n_arr * 3 * out
    if spec.mla is not None and mla_form == "absorbed":
        # the latent output is mapped back per head (v_unabsorb), a (heads, tokens) batched product
        # whose result is copied to token-major order for o_proj unless there is one token
        v_out = s * H * spec.mla.v_head_dim
        # the per-head product reads the latent output head-major: eager's transposed output is
        # copied for it when both batch and n exceed one (a view otherwise, and for a tiled kernel)
        lat_copy = np.where(n_arr > 1, b * n_arr * out, 0.0) if (family == "eager" and b > 1) else 0.0
        steps_n["attn/v_unabsorb"] = live_n + b * n_arr * (out + v_out) + lat_copy
        copies = np.where(b * n_arr > 1, 2.0, 1.0)
        steps_n["attn/o_proj"] = live_n + b * n_arr * (out + copies * v_out + s * h)
    return steps_n


def _attention_resident(spec: ModelSpec, lyr: LayerSpec, n_arr, keys, s: float, family: str,
                        materialize_mask: bool) -> np.ndarray:
    """Shared by the batch and resident throughout: the RoPE cos/sin tables (n x rotary dims each),
    and for eager the boolean mask, built once per forward for every layer -- none when it would
    allow every pair (one query at the end of a window-free cache)."""
    rope = spec.rope if (spec.rope is not None and lyr.rope) else None
    rot = rope.rotary_dim if rope is not None else 0
    resident = n_arr * 2 * s * rot
    if family == "eager" and materialize_mask:
        unbounded = lyr.attn == "global" or lyr.window is None or keys <= lyr.window
        resident = resident + np.where((n_arr == 1) & unbounded, 0.0, n_arr * keys)
    return resident


def _mlp_steps(spec: ModelSpec, lyr: LayerSpec, n_arr, b: float, s: float, tp: int) -> dict[str, np.ndarray]:
    """The MLP block (x and x + mix live on; the normed input; router logits for MoE; gated:
    act(gate), up and their product) and the final residual add. A layer without a token mixer
    holds only x before its MLP; one without an MLP ends at x + mix."""
    h = spec.hidden_size
    resid = s * h * (2 if lyr.mixers else 1)
    post = 1 if spec.post_norm_residual else 0
    scaled = spec.residual_products  # residual x alpha (MiniMax) and output x beta (MiniMax, Granite 4)
    # the token-mixing block's residual add: the input x, the block's output, the sum, (post-norm) the
    # normed input it is added to, (MiniMax, Granite 4) the products -- a step of its own before the MLP
    mix_add = b * n_arr * s * h * (3 + post + scaled)
    if not lyr.mlp:
        return {"residual": mix_add} if lyr.mixers else {}
    width = spec.mlp_width(lyr) / tp
    router = s * spec.moe.n_experts if (lyr.moe and spec.moe is not None) else 0
    gated = spec.moe.gated if (lyr.moe and spec.moe is not None) else spec.mlp_gated
    oc = spec.norm_one_centred
    act = b * n_arr * (resid + router + activation_live(spec.mlp_activation, gated) * s * width)
    if spec.output_norms:  # OLMo 2/3, EXAONE 4: the MLP reads x + mix itself, no normed copy
        steps = {"mlp/act": act}
    elif spec.parallel_block and lyr.mixers:  # Cohere 2: the MLP reads the block's normed input, which lives
        steps = {"mlp/act": act + b * n_arr * s * h}  # beside x and the attention output (x + mix's place)
    else:
        steps = {"mlp/norm": b * n_arr * (resid + _block_norm_extra(spec, h, s)), "mlp/act": act + b * n_arr * s * h}
    if spec.norms_per_layer >= 4 or spec.output_norms:  # Gemma 2, OLMo: the MLP output normed before the add
        steps["mlp/out_norm"] = b * n_arr * (resid + s * h + _block_norm_extra(spec, h, s))
    if lyr.mixers and (post or scaled):
        steps["mix/residual"] = mix_add
    # the MLP's residual add: x and x + mix, its output and the sum, (post-norm) the normed input,
    # (MiniMax) the two products
    steps["residual"] = b * n_arr * (resid + s * h * (2 + post + scaled))
    return steps


def activation_bytes(spec: ModelSpec, n, *, batch: int = 1, dtype: str = "bf16", family: str = "tiled",
                     layer: int | LayerSpec = 0, prefix=0, materialize_mask: bool = True,
                     mla_form: str = "naive", tp: int = 1) -> np.ndarray:
    """Peak activation bytes of one layer's forward over n new tokens: the largest of
    :func:`activation_steps` (float array over n; weights and any KV cache read are excluded)."""
    steps = activation_steps(spec, n, batch=batch, dtype=dtype, family=family, layer=layer, prefix=prefix,
                             materialize_mask=materialize_mask, mla_form=mla_form, tp=tp)
    return np.max(np.vstack(list(steps.values())), axis=0)


# ----------------------------------------------------------------------------------------------
# Roofline
# ----------------------------------------------------------------------------------------------

def matmul_dtype(dtype: str, tf32: bool = False) -> str:
    d = dtype_name(dtype)
    return "tf32" if (d == "fp32" and tf32) else d


def roofline(c: Cost, hw: Hardware, *, tf32: bool = False, backend: str | None = None) -> dict[str, np.ndarray]:
    """Per-op time = max(FLOPs / peak, bytes / bandwidth); plus 'total'. Seconds, arrays over n.

    The peak is the GEMM peak for the dtype, except for attention (``attn/qk``, ``attn/pv``) when
    ``hw`` is a calibration that measured ``backend``'s own attention rate in that dtype (at each n,
    interpolated between the lengths it was measured at: ``Hardware.attention_rate``).
    """
    peak = hw.peak(matmul_dtype(c.dtype, tf32))
    rate = hw.attention_rate(backend, matmul_dtype(c.dtype, tf32), c.n)
    attn_peak = peak if rate is None else rate
    bw = hw.hbm_bytes_per_s
    out: dict[str, np.ndarray] = {}
    for name, f in c.flops.items():
        if name in TOTAL_KEYS:
            continue
        p = attn_peak if name in ATTN_KERNEL_OPS else peak
        out[name] = np.maximum(np.asarray(f) / p, np.asarray(c.bytes[name]) / bw)
    zero = 0.0 * np.asarray(c.n, dtype=np.float64)
    parts = {k: v for k, v in out.items() if k not in TOTAL_KEYS}
    out["attn/total"] = _attn_total(parts, zero)
    out["mixer/total"] = zero + sum((v for k, v in parts.items() if k.startswith("mixer/")), 0.0)
    out["total"] = zero + sum(parts.values())
    return out


def attention_crossover_n(spec: ModelSpec, *, layer: int | LayerSpec | None = None,
                          limit: int = 1 << 40) -> int | None:
    """Smallest prefill length n where attention's useful FLOPs reach the linear layers' FLOPs.

    None when attention never catches up (e.g. every layer is sliding-window).
    """
    def gap(n: int) -> float:
        c = cost(spec, n, layer=layer, family="useful")
        attn = float(c.useful_flops["attn/total"][0])
        return attn - (float(c.useful_flops["total"][0]) - attn)

    if gap(1) >= 0:
        return 1
    if gap(limit) < 0:
        return None
    lo, hi = 1, limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if gap(mid) >= 0:
            hi = mid
        else:
            lo = mid
    return hi


def arithmetic_intensity(c: Cost) -> np.ndarray:
    """Executed FLOPs per byte of HBM traffic, whole work item."""
    return np.asarray(c.flops["total"]) / np.asarray(c.bytes["total"])

