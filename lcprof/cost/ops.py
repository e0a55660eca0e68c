"""FLOPs and bytes of one decoder layer, op by op: the single source every other count derives from.

We count FLOPs, not multiply-adds: one multiply-add is **2** FLOPs, and the ``2 *`` is written out in
every formula below. Only matrix products are counted (projections, QK^T, PV, MLP); this is also
what ``torch.utils.flop_counter.FlopCounterMode`` counts. Norms, RoPE, activations and residual
adds are bandwidth-bound elementwise work, charged to bytes only (``misc/elementwise``): the bytes
the unfused layer's ops read and write (transformers' eager modules and lcprof's measured layer),
op by op. Eager attention's passes over the scores between its two matmuls (scale, mask, softmax
through fp32, the K/V repeat for GQA, the output transpose) are ``attn/elementwise``; a tiled
kernel keeps them on chip. Both are checked to the byte against the layer's ops
(``lcprof.measure.tensor_audit.MovedBytes``).

Work item: ``n`` new tokens per sequence after a cached prefix of ``prefix`` tokens, ``batch``
sequences. Prefill is prefix=0; decode of one token with n cached is (n_new=1, prefix=n).

Backend families for attention:
  * ``useful`` -- only unmasked (query, key) pairs (what the model needs; MFU numerator);
  * ``eager``  -- the full n x (p+n) score rectangle (eager PyTorch, SDPA math) and scores in memory;
  * ``tiled``  -- every tile of ``tile`` = (q, k) rows x columns that is not fully masked
    (FlashAttention, SDPA flash / memory-efficient / cuDNN, lcprof's striped-ring kernel).

No torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lcprof.cost import masks
from lcprof.errors import LcprofError
from lcprof.spec import LayerSpec, ModelSpec
from lcprof.spec.layers import activation_moves
from lcprof.units import dtype_bytes

FAMILIES = ("useful", "eager", "tiled")

#: Measurement backend name -> how its attention executes.
BACKEND_FAMILY = {
    "eager": "eager",
    "sdpa-math": "eager",
    "sdpa": "tiled",
    "sdpa-flash": "tiled",
    "sdpa-efficient": "tiled",
    "sdpa-cudnn": "tiled",
    "flash-attn": "tiled",
    "striped-ring": "tiled",
    "striped-ring-flash": "tiled",
    "striped-ring-cudnn": "tiled",
    "striped-ring-efficient": "tiled",
    "tiled": "tiled",
    "useful": "useful",
}

DEFAULT_TILE = (128, 128)

#: How the layer's elementwise work is implemented: ``unfused`` -- one kernel per torch op, as in
#: transformers' eager modules and lcprof's measured layer; ``fused`` -- a serving engine's fused
#: kernels (residual add + RMSNorm, in-place rotary, SiLU-and-mul), each reading its inputs and
#: writing its outputs once.
ELEMENTWISE = ("unfused", "fused")


def backend_family(backend: str) -> str:
    try:
        return BACKEND_FAMILY[backend]
    except KeyError:
        raise LcprofError(
            f"unknown backend {backend!r}; known: {', '.join(sorted(BACKEND_FAMILY))}"
        ) from None


@dataclass(frozen=True)
class Op:
    """One op of a layer: executed FLOPs (for the chosen family), useful FLOPs, and HBM bytes.

    ``bytes``: for a matrix product, the fewest bytes it must move through device memory (inputs
    read once, outputs written once, weights read once; eager's QK^T writes the scores and PV reads
    the probabilities); for elementwise work, what the unfused ops read and write.
    """

    name: str
    flops: np.ndarray
    useful_flops: np.ndarray
    bytes: np.ndarray


def layer_mask(layer: LayerSpec, mask: "masks.Mask | None" = None, causal: bool = True) -> "masks.Mask":
    """The mask a layer's attention runs: ``mask`` (a what-if for every attention layer) or the
    layer's own (global, sliding W, chunked C, sparse top-k); ``full`` when not causal."""
    if not causal:
        return masks.Full()
    if mask is not None:
        return mask
    if layer.attn == "sparse":
        return masks.TopK(int(layer.top_k))
    return masks.layer_mask(layer.attn, layer.window)


def attention_pairs(layer: LayerSpec, n, prefix=0, family: str = "useful", causal: bool = True,
                    tile: tuple[int, int] = DEFAULT_TILE, *, mask: "masks.Mask | None" = None,
                    heads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(executed, useful) (query, key) pairs summed over ``heads`` query heads, per sequence, for
    the layer's mask (``heads`` matters only to masks that differ by head: LongNet's dilation)."""
    m = layer_mask(layer, mask, causal)
    useful = m.head_pairs(n, prefix, heads)
    if family == "useful":
        return useful, useful
    if family == "eager":
        return heads * masks.executed_pairs_eager(n, prefix), useful
    if family == "tiled":
        return m.tiled_head_pairs(n, prefix, heads, tile), useful
    raise LcprofError(f"unknown backend family {family!r}; known: {', '.join(FAMILIES)}")


def experts_touched(n_experts, n_active, tokens) -> np.ndarray:
    """Routed experts a batch of ``tokens`` tokens can visit: at most min(experts, tokens x experts
    per token) -- the bound when every token picks different ones (all of them once the batch has
    >= n_experts / n_active tokens). The one owner of this count: the cost model charges the
    touched experts' weight reads with it, and the planner's decode step (``lcprof.plan``) too.
    Broadcasts over arrays."""
    return np.minimum(np.asarray(n_experts, dtype=np.float64),
                      np.asarray(tokens, dtype=np.float64) * np.asarray(n_active, dtype=np.float64))


def layer_pairs(spec: ModelSpec, layer: int | LayerSpec, n, prefix=0, *, mask=None) -> np.ndarray | None:
    """Useful (query, key) pairs per query head of a layer's attention for n new tokens after
    ``prefix`` (the mean over heads for masks that differ by head), or None for a layer without
    attention. ``mask``: a what-if mask (a Mask or its ``--mask`` string)."""
    lyr = spec.layer(layer)
    if not lyr.has_attention:
        return None
    if mask is not None and not isinstance(mask, masks.Mask):
        mask = masks.parse_mask(str(mask))
    heads = spec.attn_dims(lyr).n_heads
    return layer_mask(lyr, mask).head_pairs(n, prefix, heads) / heads


def _linear(name: str, tokens, d_in: int, d_out: int, s: float, weight_copies=1.0) -> Op:
    """tokens x d_in @ d_in x d_out."""
    t = np.asarray(tokens, dtype=np.float64)
    flops = 2.0 * t * d_in * d_out
    nbytes = s * (weight_copies * d_in * d_out + t * d_in + t * d_out)
    return Op(name, flops, flops, nbytes)


def check_priced(spec: ModelSpec, layer: LayerSpec) -> None:
    """Refuse, in one line naming the layer, a layer the ops below do not price -- a token mixer
    without a cost kind, sparse attention without its indexer -- instead of costing it as
    something else."""
    from lcprof.cost.kinds import KINDS

    why = [f"token mixer {m}" for m in layer.mixers if m != "attention" and m not in KINDS]
    if layer.attn == "sparse" and spec.indexer is None:
        why.append("sparse attention without an indexer spec")
    if why:
        idx = next((i for i, lyr in enumerate(spec.layers) if lyr == layer), None)
        where = f"layer {idx}" if idx is not None else "a layer"
        raise LcprofError(f"{spec.name}: {where} is {layer.kind} ({'; '.join(why)}): the cost model "
                          "does not price this layer kind")


def layer_ops(spec: ModelSpec, layer: LayerSpec, n, prefix=0, *, batch: int = 1, dtype: str = "bf16",
              family: str = "useful", causal: bool = True, tile: tuple[int, int] = DEFAULT_TILE,
              mla_form: str | None = None, elementwise: str = "unfused", mask: "masks.Mask | None" = None,
              state_dtype: str | None = None) -> list[Op]:
    """The ops of one layer processing ``n`` new tokens after ``prefix`` cached ones, per batch:
    its attention (``attn/*``, ``proj/*``), its linear-time mixers (``mixer/*``, priced by
    :mod:`lcprof.cost.kinds`), its MLP (``mlp/*``) and the elementwise traffic around them.

    ``mla_form``: ``naive`` (decompress K/V per head; the default) or ``absorbed`` (attend in the
    latent space, the up-projections folded into q and o; ``cost`` picks it for decode).
    ``elementwise``: ``unfused`` or ``fused`` (see ``ELEMENTWISE``). ``mask``: a what-if mask for
    the attention (:mod:`lcprof.cost.masks`). ``state_dtype``: the dtype mixers keep their state in
    (default ``dtype``).
    """
    check_priced(spec, layer)
    if family not in FAMILIES:
        raise LcprofError(f"unknown backend family {family!r}; known: {', '.join(FAMILIES)}")
    if elementwise not in ELEMENTWISE:
        raise LcprofError(f"unknown elementwise implementation {elementwise!r}; use unfused or fused")
    s = dtype_bytes(dtype)
    n = np.asarray(n, dtype=np.float64)
    p = np.asarray(prefix, dtype=np.float64)
    b = float(batch)
    t = b * n  # new tokens in the batch
    ops: list[Op] = []
    if layer.has_attention:
        ops.extend(_attention_ops(spec, layer, n, p, b, s, family, causal, tile, mla_form, mask))
    for kind in layer.mixers:
        if kind != "attention":
            from lcprof.cost.kinds import mixer_ops

            ops.extend(mixer_ops(spec.mixer(kind), n, p, batch=batch, dtype=dtype, state_dtype=state_dtype))
    if layer.mlp:
        ops.extend(_mlp_ops(spec, layer, t, s))
    zero = np.zeros_like(t)
    moved = (_elementwise_bytes(spec, layer, n, p, b, s, mla_form, mask) if elementwise == "unfused"
             else _fused_elementwise_bytes(spec, layer, n, p, b, s, mask))
    ops.append(Op("misc/elementwise", zero, zero, moved))
    return ops


def _attention_ops(spec: ModelSpec, layer: LayerSpec, n, p, b: float, s: float, family: str, causal: bool,
                   tile, mla_form: str | None, mask) -> list[Op]:
    """Projections, QK^T and PV (and eager's passes between them) of the layer's attention, with
    the layer's dims (``spec.attn_dims``); sparse (DSA) layers add their indexer, Infini-attention
    what-ifs their compressive memory."""
    t = b * n
    h = spec.hidden_size
    d = spec.attn_dims(layer)
    H = d.n_heads
    ops: list[Op] = []
    exe_pairs, use_pairs = attention_pairs(layer, n, p, family, causal, tile, mask=mask, heads=H)
    keys = p + n  # keys per sequence
    m_eff = layer_mask(layer, mask, causal)
    if isinstance(m_eff, masks.TopK):  # a gather kernel reads the selected keys (decode), not all of them
        read_keys = np.where(n == 1, np.minimum(keys, float(m_eff.k)), keys)
    else:
        read_keys = keys

    if spec.mla is None:
        hd, vhd, kvh = d.head_dim, d.v_head_dim, d.n_kv_heads
        # an output gate (Qwen3-Next) doubles q_proj: a sigmoid gate per query-head element
        ops.append(_linear("proj/q", t, h, H * hd * (2 if spec.attn_output_gate else 1), s))
        ops.append(_linear("proj/kv", t, h, kvh * (hd + vhd), s))
        qk_dim, pv_dim = hd, vhd
        k_read = b * read_keys * kvh * hd * s
        v_read = b * read_keys * kvh * vhd * s
        o_dim = H * vhd
        o_extra: list[Op] = []
    else:
        m = spec.mla
        form = mla_form or "naive"
        if form not in ("naive", "absorbed"):
            raise LcprofError(f"unknown MLA form {form!r}; use naive or absorbed")
        if m.q_lora_rank:
            qa = _linear("proj/q_a", t, h, m.q_lora_rank, s)
            qb = _linear("proj/q_b", t, m.q_lora_rank, H * m.qk_head_dim, s)
            ops.append(Op("proj/q", qa.flops + qb.flops, qa.useful_flops + qb.useful_flops, qa.bytes + qb.bytes))
        else:
            ops.append(_linear("proj/q", t, h, H * m.qk_head_dim, s))
        ops.append(_linear("proj/kv_a", t, h, m.cache_dim, s))  # down-projection to latent + rope key
        if form == "naive":
            # Every cached and new latent is decompressed to per-head K (nope part) and V.
            ops.append(_linear("proj/kv_b", b * keys, m.kv_lora_rank, H * (m.qk_nope_head_dim + m.v_head_dim), s))
            qk_dim, pv_dim = m.qk_head_dim, m.v_head_dim
            k_read = b * keys * H * m.qk_head_dim * s
            v_read = b * keys * H * m.v_head_dim * s
            o_dim = H * m.v_head_dim
            o_extra = []
        else:
            # q_nope absorbed into the latent space; attention runs over latent (+ rope) dims.
            ops.append(_linear("proj/q_absorb", t * H, m.qk_nope_head_dim, m.kv_lora_rank, s))
            qk_dim, pv_dim = m.cache_dim, m.kv_lora_rank
            k_read = b * read_keys * m.cache_dim * s  # one shared latent "head"
            v_read = np.zeros_like(k_read)  # V is the same latent, already read
            o_dim = H * m.v_head_dim
            o_extra = [_linear("proj/v_unabsorb", t * H, m.kv_lora_rank, m.v_head_dim, s)]
    if layer.attn == "sparse" and spec.indexer is not None:
        ops.extend(_indexer_ops(spec, n, p, b, s, family, causal, tile))

    q_bytes = t * H * qk_dim * s
    o_bytes = t * H * pv_dim * s
    qk_flops = 2.0 * b * exe_pairs * qk_dim  # pairs summed over the H heads
    qk_useful = 2.0 * b * use_pairs * qk_dim
    pv_flops = 2.0 * b * exe_pairs * pv_dim
    pv_useful = 2.0 * b * use_pairs * pv_dim
    qk_bytes = q_bytes + k_read
    pv_bytes = v_read + o_bytes
    if family == "eager":
        # QK^T writes the scores, PV reads the probabilities; the passes between are attn/elementwise
        score_bytes = b * exe_pairs * s
        qk_bytes = qk_bytes + score_bytes
        pv_bytes = pv_bytes + score_bytes
    ops.append(Op("attn/qk", qk_flops, qk_useful, qk_bytes))
    if family == "eager":
        ops.append(Op("attn/elementwise", np.zeros_like(t), np.zeros_like(t),
                      _eager_attention_bytes(spec, layer, n, p, b, s, exe_pairs / H, causal, mla_form, m_eff)))
    ops.append(Op("attn/pv", pv_flops, pv_useful, pv_bytes))
    if isinstance(m_eff, masks.Infini):
        ops.append(_infini_memory_op(spec, layer, t, b, s))
    ops.extend(o_extra)
    ops.append(_linear("proj/o", t, o_dim, h, s))
    return ops


#: Values per fp32 scale in the indexer's fp8 key cache (vLLM ``Indexer.quant_block_size``).
INDEXER_QUANT_BLOCK = 128
#: Bytes per fp8 value and per scale of that cache.
INDEXER_VALUE_BYTES, INDEXER_SCALE_BYTES = 1, 4


def indexer_cache_bytes_per_token(ix) -> int:
    """Bytes one token adds to a sparse (DSA) layer's indexer key cache, as vLLM stores it: the key's
    ``head_dim`` values in fp8 (1 byte each) plus one fp32 scale (4 bytes) per block of 128 values --
    128 + 4 = 132 bytes for DeepSeek-V3.2 and GLM-5 (head_dim 128), in every KV-cache dtype.

    vllm/model_executor/models/deepseek_v2.py (vllm-project/vllm @ 002d6073aa03), ``Indexer.__init__``:
    ``quant_block_size = 128`` and ``DeepseekV32IndexerCache(head_dim=head_dim + head_dim //
    quant_block_size * 4, dtype=torch.uint8)`` ("fp8 naive cache ... value in fp8 and scale in fp32 per
    quant_block_size element"); its ``get_kv_cache_spec`` is an ``MLAAttentionSpec`` of one such head.
    A head_dim that is not a multiple of 128 is charged a scale for its partial block."""
    blocks = -(-int(ix.cache_elements_per_token) // INDEXER_QUANT_BLOCK)
    return int(ix.cache_elements_per_token) * INDEXER_VALUE_BYTES + blocks * INDEXER_SCALE_BYTES


def _indexer_ops(spec: ModelSpec, n, p, b: float, s: float, family: str, causal: bool, tile) -> list[Op]:
    """DeepSeek Sparse Attention's lightning indexer: its projections (``IndexerSpec.linears``:
    wq_b from the query latent, wk, weights_proj), then for every causal (query, key) pair the
    n_heads dot products of head_dim (2 x n_heads x head_dim FLOPs) and their weighted sum over
    heads (2 x n_heads), reading every cached indexer key (fp8 with its scales:
    :func:`indexer_cache_bytes_per_token`). Executed like the attention families: eager the full
    rectangle, tiled every 128 x 128 tile holding a causal pair."""
    ix = spec.indexer
    t = b * n
    ops = [_linear(f"attn/indexer_{lin.name}", t, lin.d_in, lin.d_out, s) for lin in ix.linears()]
    exe, use = attention_pairs(LayerSpec(), n, p, family, causal, tile)
    per_pair = 2.0 * ix.n_heads * (ix.head_dim + 1)
    keys = p + n
    nbytes = b * (keys * indexer_cache_bytes_per_token(ix) + s * n * ix.n_heads * (ix.head_dim + 1))
    ops.append(Op("attn/indexer", b * exe * per_pair, b * use * per_pair, nbytes))
    return ops


def _infini_memory_op(spec: ModelSpec, layer: LayerSpec, t, b: float, s: float) -> Op:
    """Infini-attention's compressive memory per KV head, M (dk x dv) and z (dk): retrieval
    sigma(Q) M and its normalizer sigma(Q) z for every query head (2 H dk dv + 2 H dk per token),
    and the linear update M += sigma(K)^T V (2 kv_heads dk dv per token); the memory is read and
    written once per step."""
    kvh, dk, dv = infini_memory_dims(spec, layer)
    H = spec.attn_dims(layer).n_heads if spec.mla is None else spec.n_heads
    flops = 2.0 * t * (H * dk * dv + H * dk + kvh * dk * dv)
    return Op("attn/memory", flops, flops, 2 * s * b * kvh * (dk * dv + dk) + np.zeros_like(t))


def infini_memory_dims(spec: ModelSpec, layer: LayerSpec) -> tuple[int, int, int]:
    """(kv heads, dk, dv) of Infini-attention's memory on this layer: per KV head, key by value
    dims of what the attention kernel sees (MLA: its naive per-head K/V)."""
    kvh, dk, dv = attention_dims(spec, "naive", layer)
    return kvh, dk, dv


def _mlp_ops(spec: ModelSpec, layer: LayerSpec, t, s: float) -> list[Op]:
    """Dense (gate, up, down) or MoE (router, routed experts, shared experts and their gate)."""
    h = spec.hidden_size
    ops: list[Op] = []
    if layer.moe and spec.moe is not None:
        e = spec.moe
        mats = 3 if e.gated else 2
        ops.append(_linear("mlp/router", t, h, e.n_experts, s))
        # Routed experts: weights of the experts touched are read once (``experts_touched``).
        touched = experts_touched(e.n_experts, e.n_active, t)
        ex = _linear("mlp/experts", t * e.n_active, h, e.expert_intermediate_size, s, weight_copies=0)
        ex_flops = mats * ex.flops
        ex_bytes = s * (touched * mats * h * e.expert_intermediate_size + t * e.n_active * (h + h))
        ops.append(Op("mlp/experts", ex_flops, ex_flops, ex_bytes))
        if e.n_shared:
            sh_w = e.n_shared * e.shared_intermediate_size
            sh = _linear("mlp/shared", t, h, sh_w, s)
            ops.append(Op("mlp/shared", mats * sh.flops, mats * sh.flops,
                          s * (mats * h * sh_w + 2 * t * h)))
            if e.shared_gate:  # sigmoid(x W), W (h x 1), scales the shared expert's output
                ops.append(_linear("mlp/shared_gate", t, h, 1, s))
    else:
        inter = spec.intermediate_size
        if spec.mlp_gated:
            ops.append(_linear("mlp/gate", t, h, inter, s))
        ops.append(_linear("mlp/up", t, h, inter, s))
        ops.append(_linear("mlp/down", t, inter, h, s))
    return ops


def _blocks(spec: ModelSpec, layer: LayerSpec) -> int:
    """Pre-norm blocks of a layer: the token-mixing block (if it runs any mixer) and the MLP block
    (if it has an MLP); each has its norm and its residual add (Gemma 2: two norms each)."""
    return (1 if layer.mixers else 0) + (1 if layer.mlp else 0)


def _block_norms(spec: ModelSpec, layer: LayerSpec) -> int:
    """The layer's own norms (Gemma 2's extra ones apart): one per block, one for Cohere 2's parallel block."""
    blocks = _blocks(spec, layer)
    return 1 if (spec.parallel_block and blocks == 2) else blocks


def _layer_norm_bytes(width: int, tokens, s: int) -> np.ndarray:
    """lcprof's unfused LayerNorm over ``width`` (Cohere 2; weight only), in fp32: copy up (fp16/bf16: read s,
    write f), the mean (read f), x - mean (read f, write f), its square (read f, write f) and mean (read f),
    the scaling (read f, write f), times the weight (read f, write f), copy down (read f, write s); per row
    the mean written and read, the variance written, + eps and rsqrt (read + write each), read by the
    scaling: 8 x f; the weight read once."""
    f = 4 if s < 4 else s
    per_elem = 10 * f + (2 * (s + f) if s < 4 else 0)
    return tokens * (width * per_elem + 8 * f) + s * width


def _fused_elementwise_bytes(spec: ModelSpec, layer: LayerSpec, n, prefix, b: float, s: int,
                             mask=None) -> np.ndarray:
    """A serving engine's fused kernels, per token: residual add + RMSNorm per block (read x and
    the residual, write both: 4h each; Gemma 2's and GLM-4's norms after each block read + write, 2h),
    rotary in place on q and k (read + write), the q and k norms of ``qk_norm`` (read + write each: vLLM's ``RMSNorm``
    on q, then on k), Llama 4's query temperature on NoPE layers (q read + written), new K/V written
    into the paged cache (read + write), SiLU-and-mul (read gate and up, write their product) -- or
    the plain activation, one kernel whatever it is (read, write) -- a shared expert's sigmoid gate
    (read its logit and output, write the output), and MLA's latent norm. Linear mixers carry their
    own traffic in their ``mixer/*`` ops; parallel mixers (Falcon-H1) add their outputs (read 2,
    write 1). MiniMax's residuals (``residual_factors``) run vLLM's RMSNorm without a residual (read,
    write), then residual x alpha + output x beta in three torch ops (read + write h twice, read 2h +
    write h): 9h per block (vllm/model_executor/models/minimax_text_01.py @ 01c91c00e45c,
    ``MiniMaxText01DecoderLayer.forward``). LayerNorm models (``norm_bias``: GPT-NeoX,
    Falcon) run ``nn.LayerNorm`` and the residual add apart:
    read + write for the norm, read 2 + write 1 for the add, 5h per block
    (vllm/model_executor/models/gpt_neox.py @ 002800f08142, ``GPTNeoXLayer``: ``nn.LayerNorm``)."""
    t = b * n
    h = spec.hidden_size
    # Falcon-H1 too adds its residuals apart from the norm (vLLM's FalconH1ParallelHybrid: ``hidden_states +
    # residual``, then RMSNorm alone): 5h per block
    per_block = 5 * h if (spec.norm_bias or spec.mup_multipliers) else 4 * h
    if spec.residual_factors is not None:  # RMSNorm alone (2h), then MiniMax's residual x alpha + out x beta
        per_block = (5 + 2 * spec.residual_products) * h  # (7h: 9h in all), Granite 4's residual + out x beta (5h)
    elif spec.post_norm_residual or spec.output_norms:  # the norm (2h) and the add (3h) apart: MiniMax's
        per_block = 5 * h  # residual is the normed input; OLMo's norm is on the block's output (vLLM's Olmo2)
    # Gemma 2 / GLM-4's norm on each block's output is vLLM's RMSNorm alone (read, write: 2h), the fused
    # add + norm stays on the block's input (vllm/model_executor/models/gemma2.py @ 025adfb93174,
    # Gemma2DecoderLayer.forward; glm4.py likewise)
    total = _blocks(spec, layer) * (per_block + (2 * h if spec.norms_per_layer >= 4 else 0))
    if spec.parallel_block and _blocks(spec, layer) == 2:  # Cohere 2: one norm (2h) and two adds (3h each)
        total = 8 * h
    if len(layer.mixers) > 1:
        total += 3 * h * (len(layer.mixers) - 1)
    if layer.has_attention:
        rope = spec.rope is not None and layer.rope
        if spec.mla is None:
            d = spec.attn_dims(layer)
            if rope:
                total += 2 * (d.n_heads + d.n_kv_heads) * d.head_dim
            total += 2 * d.n_kv_heads * (d.head_dim + d.v_head_dim)
            if spec.qk_norm_at(layer) != "none":  # the q norm and the k norm: one kernel each, read + write
                total += 2 * (d.n_heads + d.n_kv_heads) * d.head_dim
            if spec.query_temperature_at(layer) or spec.query_scaling:  # Llama 4's NoPE layers, Ministral 3's
                total += 2 * d.n_heads * d.head_dim  # every layer: q times its temperature, in place
            if spec.attn_output_gate:  # sigmoid(gate) * o: read 2, write 1
                total += 3 * d.n_heads * d.v_head_dim
        else:
            m = spec.mla
            if rope:
                total += 2 * (spec.n_heads + 1) * m.qk_rope_head_dim
            total += 2 * m.kv_lora_rank + 2 * m.cache_dim + (2 * m.q_lora_rank if m.q_lora_rank else 0)
    if layer.mlp:
        width = spec.mlp_width(layer)
        total += 3 * width if _mlp_gated(spec, layer) else 2 * width  # one kernel, whatever the activation
        if layer.moe and spec.moe is not None and spec.moe.shared_gate:
            total += 2 * h + 1  # sigmoid(logit) x the shared expert's output: read h + 1, write h
    per_token, once = _mup_bytes(spec, layer)
    return np.broadcast_arrays(s * (t * (total + per_token) + once), np.asarray(prefix, dtype=np.float64))[0]


def _mup_bytes(spec: ModelSpec, layer: LayerSpec) -> tuple[int, int]:
    """Falcon-H1's muP multipliers (``mup_multipliers``), in elements: (per token, once per layer). Each
    is one op, read + write, in transformers' FalconH1DecoderLayer and vLLM's FalconH1ParallelHybrid
    alike (vllm/model_executor/models/falcon_h1.py @ 59e459897da4): the attention's input x
    attention_in_multiplier (h) and output x attention_out_multiplier (h), the keys x key_multiplier
    (kv_heads x head_dim); the Mamba-2 branch's input x ssm_in_multiplier (h), its in_proj output x
    the mup vector of ssm_multipliers (the in_proj width, and the vector read once) and its output x
    ssm_out_multiplier (h); the MLP's gate x its first mlp_multiplier (the MLP width) and output x
    its second (h)."""
    if not spec.mup_multipliers:
        return 0, 0
    h = spec.hidden_size
    per_token = once = 0
    if layer.has_attention:
        d = spec.attn_dims(layer)
        per_token += 2 * (2 * h + d.n_kv_heads * d.head_dim)
    if "mamba2" in layer.mixers:
        width = spec.mamba2.linears()[0].d_out
        per_token += 2 * (2 * h + width)
        once += width
    if layer.mlp:
        per_token += 2 * (spec.mlp_width(layer) + h)
    return per_token, once


def _mlp_gated(spec: ModelSpec, layer: LayerSpec) -> bool:
    """Whether this layer's MLP is gated (an MoE layer's experts say so themselves)."""
    if layer.moe and spec.moe is not None:
        return spec.moe.gated
    return spec.mlp_gated


# ----------------------------------------------------------------------------------------------
# Elementwise traffic of the unfused layer (transformers' eager modules, lcprof's measured layer)
# ----------------------------------------------------------------------------------------------
# Every elementwise op reads its operands and writes its result through device memory; a broadcast
# operand (the RoPE tables, a norm weight) is read once per op. Checked to the byte against the
# measured layer's ops by lcprof.measure.tensor_audit.MovedBytes (tests/measure/test_tensor_audit.py).

def _norm_bytes(width: int, tokens, s: int, one_centred: bool = False) -> np.ndarray:
    """Unfused RMSNorm over ``width``: in fp32 for fp16/bf16 (copy up, square, mean, +eps, rsqrt,
    scale, copy down, times the weight); in the input's dtype otherwise (no copies). ``one_centred``
    (Gemma, Qwen3-Next, Qwen3.5: ``ModelSpec.norm_one_centred``): the weight product runs in fp32
    before the copy down (read f, write f instead of read s, write s)."""
    f = 4 if s < 4 else s
    weight = 2 * f if one_centred else 2 * s
    per_elem = 5 * f + weight + (2 * (s + f) if s < 4 else 0)  # pow 2f, mean f, scale 2f, weight, copies
    return tokens * (width * per_elem + 6 * f) + s * width  # + mean out, eps add, rsqrt (per token); weight


def _l2_norm_bytes(width: int, rows, s: int) -> np.ndarray:
    """transformers' ``Llama4TextL2Norm`` over ``rows`` rows of ``width``: always in fp32 (``x.float()``
    copies any other dtype, fp64 down), square (read 4, write 4), mean (read 4), x * rsqrt (read 4,
    write 4), cast back (``type_as``); per row the mean written, + eps and rsqrt (read, write each),
    read by the product (6 x 4 B). No weight."""
    copies = 2 * (s + 4) if s != 4 else 0
    return rows * (width * (20 + copies) + 24)


def _query_scaling_bytes(width: int, tokens, positions, s: int) -> np.ndarray:
    """Ministral 3's Llama 4 scaling, as transformers' ``get_llama_4_attn_scale`` runs it: per position an
    int64 position (written, 8 B) divided by the original length into fp32 (read 8, write 4), then floor,
    1 +, log, beta x, 1 + (read 4, write 4 each), cast to q's dtype (fp16/bf16: read 4, write s) and read by
    the product (s); q (``width`` per token) times it into a new tensor (read s, write s)."""
    cast = 4 + s if s < 4 else 0
    return tokens * width * 2 * s + positions * (8 + 12 + 5 * 8 + cast + s)


def _temperature_bytes(width: int, tokens, positions, s: int) -> np.ndarray:
    """Llama 4's attention temperature on a NoPE layer, as transformers runs it: the temperature of each
    of ``positions`` positions from an int64 arange (written 8 B, offset by the cached length: read 8,
    write 8), cast to fp32 (read 8, write 4), then + 1, / floor_scale, floor, log1p, x attn_scale, + 1
    (read 4, write 4 each); q (``width`` per token) times it, promoted to at least fp32 (read s, write
    f, the temperature read once per token, 4 B) and, for fp16/bf16, cast back (read f, write s)."""
    f = 4 if s < 4 else s
    per_elem = s + f + (f + s if s < 4 else 0)
    return tokens * (width * per_elem + 4) + positions * (8 + 16 + 12 + 6 * 8)


def _rope_bytes(heads: int, dim: int, rot: int, tokens, positions, s: int) -> np.ndarray:
    """RoPE on ``heads`` x ``dim`` per token (first ``rot`` dims rotated): x*cos, rotate_half (neg,
    cat), *sin, add over the rotated part -- 10 passes of it -- and, when partial, the cat that
    reattaches the pass-through dims; the cos/sin tables (``positions`` x rot) are read twice."""
    rotated, whole = heads * rot, heads * dim
    partial = 2 * whole if rot < dim else 0
    return s * (tokens * (10 * rotated + partial) + 2 * positions * rot)


def _elementwise_bytes(spec: ModelSpec, layer: LayerSpec, n, prefix, b: float, s: int,
                       mla_form: str | None, mask=None) -> np.ndarray:
    """Bytes the layer's elementwise ops move for ``n`` new tokens per sequence (``b`` sequences):
    a norm and a residual add (read 2, write 1) per block, the attention's RoPE, cache writes and
    MLA concatenations, the MoE top-k and the MLP activation. Linear mixers carry their own
    traffic (``mixer/*`` ops); parallel mixers add their outputs."""
    t = b * n
    h = spec.hidden_size
    blocks = _blocks(spec, layer)
    # LayerNorm models (norm_bias: GPT-NeoX, Falcon) too are charged the unfused RMSNorm: lcprof's
    # measured layer runs one for every model and the tensor audit holds this count to it to the byte
    # (transformers' nn.LayerNorm would move n (2 s h + 8) + 2 s h in one kernel).
    norm = _layer_norm_bytes(h, t, s) if spec.layer_norm else _norm_bytes(h, t, s, spec.norm_one_centred)
    # a norm and a residual add per block, each product read + written (h each) before the add (read
    # 2h, write h): MiniMax's residual x alpha + output x beta 7h, Granite 4's residual + output x beta 5h;
    # Cohere 2's parallel block one norm for its two adds
    total = _block_norms(spec, layer) * norm + blocks * (3 + 2 * spec.residual_products) * s * t * h
    if spec.norms_per_layer >= 4:
        total = total + blocks * norm  # Gemma 2: after attention and after the MLP too
    if len(layer.mixers) > 1:
        total = total + 3 * s * t * h * (len(layer.mixers) - 1)  # parallel mixers' outputs summed
    if layer.has_attention:
        total = total + _attention_elementwise_bytes(spec, layer, n, prefix, b, s, mla_form)
    if layer.mlp:
        if layer.moe and spec.moe is not None:
            e = spec.moe
            total = total + t * (s * e.n_experts + (s + 8) * e.n_active)  # top-k over the router logits
            if e.shared_gate:  # sigmoid of the shared gate's logit (read, write), times the shared expert's
                total = total + s * t * (2 * h + 3)  # output in place (read h + 1, write h)
        # the activation's passes, read + write each (relu2: relu, then the square), + times up (read 2,
        # write 1) when gated; gpt-oss's clamped SwiGLU its own 16 (spec.layers.GATED_COMBINES)
        total = total + s * t * spec.mlp_width(layer) * activation_moves(spec.mlp_activation, _mlp_gated(spec, layer))
    per_token, once = _mup_bytes(spec, layer)
    return total + s * (t * per_token + once)


def _attention_elementwise_bytes(spec: ModelSpec, layer: LayerSpec, n, prefix, b: float, s: int,
                                 mla_form: str | None) -> np.ndarray:
    """RoPE on q and k, the new K/V copied into the cache, the q/k norms (``qk_norm``: per head, over
    all heads, or Llama 4's weightless L2 norm on its RoPE layers), MLA's norms and concatenations,
    Llama 4's query temperature on its NoPE layers, and an output gate's sigmoid and product."""
    t = b * n
    keys = b * (prefix + n)
    cached = np.asarray(prefix) > 0
    total = 0.0 * t
    rope = spec.rope if (spec.rope is not None and layer.rope) else None
    if spec.mla is None:
        d = spec.attn_dims(layer)
        kv_w = d.n_kv_heads * (d.head_dim + d.v_head_dim)
        if rope is not None:
            r = rope.rotary_dim
            total = total + _rope_bytes(d.n_heads, d.head_dim, r, t, n, s) \
                + _rope_bytes(d.n_kv_heads, d.head_dim, r, t, n, s)
        total = total + np.where(cached, 2 * s * t * kv_w, 0.0)  # new K/V copied into the cache
        qk_norm = spec.qk_norm_at(layer)
        oc = spec.norm_one_centred
        if qk_norm == "head":  # Qwen3 / Qwen3-Next: an RMSNorm over each q head and each k head
            total = total + _norm_bytes(d.head_dim, t * d.n_heads, s, oc) \
                + _norm_bytes(d.head_dim, t * d.n_kv_heads, s, oc)
        elif qk_norm == "full":  # MiniMax-M2: one RMSNorm over all of q, one over all of k
            total = total + _norm_bytes(d.n_heads * d.head_dim, t, s, oc) \
                + _norm_bytes(d.n_kv_heads * d.head_dim, t, s, oc)
        elif qk_norm == "l2":  # Llama 4's RoPE layers: a weightless norm over each head
            total = total + _l2_norm_bytes(d.head_dim, t * d.n_heads, s) \
                + _l2_norm_bytes(d.head_dim, t * d.n_kv_heads, s)
        if spec.query_temperature_at(layer):
            total = total + _temperature_bytes(d.n_heads * d.head_dim, t, n, s)
        if spec.query_scaling:
            total = total + _query_scaling_bytes(d.n_heads * d.head_dim, t, n, s)
        if spec.attn_output_gate:  # sigmoid(gate) (read, write) and o * it (read 2, write 1)
            total = total + 5 * s * t * d.n_heads * d.v_head_dim
        return total
    H = spec.n_heads
    m = spec.mla
    if m.q_lora_rank:
        total = total + _norm_bytes(m.q_lora_rank, t, s)
    total = total + _norm_bytes(m.kv_lora_rank, t, s)
    if rope is not None:
        r = m.qk_rope_head_dim
        total = total + _rope_bytes(H, r, r, t, n, s) + _rope_bytes(1, r, r, t, n, s)
    total = total + np.where(cached, 2 * s * t * m.cache_dim, 0.0)  # latent + rope key into the cache
    if (mla_form or "naive") == "naive":
        # keys = [K_nope, k_pe broadcast to every head] over all keys; queries = [q_nope, q_pe]
        total = total + 2 * s * keys * H * m.qk_head_dim + 2 * s * t * H * m.qk_head_dim
    else:
        # queries = [q_lat, q_pe]; keys = [latent, k_pe] over all keys; the per-head output of
        # v_unabsorb copied to token-major order (a view when there is one token)
        total = total + 2 * s * t * H * (m.kv_lora_rank + m.qk_rope_head_dim) + 2 * s * keys * m.cache_dim
        total = total + np.where(t > 1, 2 * s * t * H * m.v_head_dim, 0.0)
    return total


def attention_dims(spec: ModelSpec, mla_form: str | None = None,
                   layer: int | LayerSpec | None = None) -> tuple[int, int, int]:
    """(kv_heads, qk_dim, v_dim) of the tensors the attention kernel sees in ``layer`` (default:
    the model's attention shapes): MLA's naive form decompresses K/V per query head, the absorbed
    form attends to one shared latent "head"."""
    if spec.mla is None:
        if layer is None:
            return spec.n_kv_heads, spec.head_dim, spec.v_head_dim
        d = spec.attn_dims(layer)
        return d.n_kv_heads, d.head_dim, d.v_head_dim
    if (mla_form or "naive") == "naive":
        return spec.n_heads, spec.mla.qk_head_dim, spec.mla.v_head_dim
    return 1, spec.mla.cache_dim, spec.mla.kv_lora_rank


def _eager_attention_bytes(spec: ModelSpec, layer: LayerSpec, n, prefix, b: float, s: int, pairs,
                           causal: bool, mla_form: str | None, mask=None) -> np.ndarray:
    """transformers' eager attention between its two matmuls: K/V repeated per query head (GQA),
    scores scaled in place, soft-capped in place (Gemma 2's ``attn_logit_softcap``: three passes),
    masked in place (the mask inverted first), a sink logit column appended (``LayerSpec.sinks``:
    gpt-oss), softmax (through fp32 for fp16/bf16), and the output transposed back to token-major
    order. ``pairs`` per head."""
    H = spec.attn_dims(layer).n_heads
    n = np.asarray(n, dtype=np.float64)
    keys = prefix + n
    P = b * H * pairs  # every (query, key) pair of every head
    softmax = 2 * s + 16 if s < 4 else 2 * s  # [copy up s + 4] + softmax 8 + [copy down 4 + s]
    # no mask when it would allow every pair (no causality, or one query over a window-free cache)
    m = layer_mask(layer, mask, causal)
    window = {masks.Sliding: "window", masks.Chunked: "chunk"}.get(type(m))
    if isinstance(m, (masks.Causal, masks.Full)):
        unbounded = np.ones_like(keys, dtype=bool)
    elif window is not None:
        unbounded = keys <= getattr(m, window)
    else:  # the seed papers' masks and top-k always need their mask
        unbounded = np.zeros_like(keys, dtype=bool)
    masked = np.where((n == 1) & unbounded, 0.0, 1.0 if causal else 0.0)
    total = P * 2 * s + masked * (2 * s * P + 3 * n * keys)  # scale; the mask (inverted: read +
    # write; read by masked_fill, which reads and writes the scores)
    if spec.attn_logit_softcap:  # Gemma 2: / c, tanh, * c -- three passes in place (read + write each)
        total = total + 6 * s * P
    if layer.sinks:  # gpt-oss: the scores and a column of sink logits concatenated into a new tensor
        # (read the scores and the column, write both), the softmax over that one more column
        sunk = P + b * H * n
        total = total + 2 * s * sunk + softmax * sunk
    else:
        total = total + softmax * P
    absorbed = spec.mla is not None and (mla_form or "naive") == "absorbed"
    kv_heads, qk, v = attention_dims(spec, mla_form, layer)
    out = 0 if absorbed else v  # absorbed: v_unabsorb's einsum takes the transposed view
    if kv_heads != H:
        total = total + 2 * s * b * keys * H * (qk + v)
    if b > 1:  # with several sequences the head-major views of q (n > 1), k and v are copied for the
        # batched products; absorbed MLA's latent output is copied for v_unabsorb
        total = total + 2 * s * b * (np.where(n > 1, n * H * qk, 0.0) + keys * H * (qk + v))
        if absorbed:
            total = total + np.where(n > 1, 2 * s * b * n * H * spec.mla.kv_lora_rank, 0.0)
    # (batch, heads, n, out) -> (batch, n, heads, out) is a copy unless n == 1
    return total + np.where(n > 1, 2 * s * b * n * H * out, 0.0)


def lm_head_op(spec: ModelSpec, tokens, dtype: str = "bf16") -> Op:
    """The vocabulary projection for ``tokens`` positions (prefill needs only the last one); with
    Gemma 2's ``final_logit_softcap`` the logits then pass / c, tanh, * c (read + write each: 6
    vocabulary-wide passes of the logits' bytes per position); with Granite 4's ``logits_scaling``
    one pass, / s (read + write: 2)."""
    s = dtype_bytes(dtype)
    op = _linear("lm_head", tokens, spec.hidden_size, spec.vocab_size, s)
    passes = (6 if spec.final_logit_softcap else 0) + (2 if spec.logits_scaling is not None else 0)
    if not passes:
        return op
    return Op(op.name, op.flops, op.useful_flops, op.bytes + passes * s * np.asarray(tokens, dtype=np.float64)
              * spec.vocab_size)


def group_layers(spec: ModelSpec) -> list[tuple[LayerSpec, int]]:
    """Distinct layers with their multiplicity: layers cost the same only when their whole
    ``LayerSpec`` is equal (mask, window, MoE, RoPE or NoPE, mixers, MLP, dims, top-k, sinks)."""
    counts: dict[LayerSpec, int] = {}
    for layer in spec.layers:
        counts[layer] = counts.get(layer, 0) + 1
    return list(counts.items())
