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


def _mask_kind(layer: LayerSpec, causal: bool) -> str:
    if not causal:
        return "full"
    return layer.attn


def attention_pairs(layer: LayerSpec, n, prefix=0, family: str = "useful", causal: bool = True,
                    tile: tuple[int, int] = DEFAULT_TILE) -> tuple[np.ndarray, np.ndarray]:
    """(executed, useful) (query, key) pairs per head and sequence for this layer's mask."""
    kind = _mask_kind(layer, causal)
    useful = masks.attended_pairs(kind, n, prefix, layer.window)
    if family == "useful":
        return useful, useful
    if family == "eager":
        return masks.executed_pairs_eager(n, prefix), useful
    if family == "tiled":
        return masks.executed_pairs_tiled(kind, n, prefix, layer.window, tile), useful
    raise LcprofError(f"unknown backend family {family!r}; known: {', '.join(FAMILIES)}")


def _linear(name: str, tokens, d_in: int, d_out: int, s: float, weight_copies=1.0) -> Op:
    """tokens x d_in @ d_in x d_out."""
    t = np.asarray(tokens, dtype=np.float64)
    flops = 2.0 * t * d_in * d_out
    nbytes = s * (weight_copies * d_in * d_out + t * d_in + t * d_out)
    return Op(name, flops, flops, nbytes)


#: Attention masks the ops below price.
PRICED_MASKS = ("global", "sliding", "chunked")


def check_priced(spec: ModelSpec, layer: LayerSpec) -> None:
    """Refuse, in one line naming the layer, a layer kind the ops below do not price (linear-time
    mixers, sparse attention, layers without an MLP, per-layer attention dims, gated attention
    output) instead of costing it as plain attention."""
    why = []
    if layer.mixers != ("attention",):
        why.append("token mixers " + ("+".join(layer.mixers) or "none (MLP only)"))
    elif layer.attn not in PRICED_MASKS:
        why.append(f"{layer.attn} attention")
    if not layer.mlp:
        why.append("no MLP")
    if layer.has_attention and layer.dims is not None:
        why.append("per-layer attention dims")
    if layer.has_attention and spec.attn_output_gate:
        why.append("gated attention output")
    if why:
        idx = next((i for i, lyr in enumerate(spec.layers) if lyr == layer), None)
        where = f"layer {idx}" if idx is not None else "a layer"
        raise LcprofError(f"{spec.name}: {where} is {layer.kind} ({'; '.join(why)}): the cost model "
                          "does not price this layer kind yet (hybrid layers, issue 14)")


def layer_ops(spec: ModelSpec, layer: LayerSpec, n, prefix=0, *, batch: int = 1, dtype: str = "bf16",
              family: str = "useful", causal: bool = True, tile: tuple[int, int] = DEFAULT_TILE,
              mla_form: str | None = None, elementwise: str = "unfused") -> list[Op]:
    """The ops of one layer processing ``n`` new tokens after ``prefix`` cached ones, per batch.

    ``mla_form``: ``naive`` (decompress K/V per head; the default) or ``absorbed`` (attend in the
    latent space, the up-projections folded into q and o; ``cost`` picks it for decode).
    ``elementwise``: ``unfused`` or ``fused`` (see ``ELEMENTWISE``).
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
    h, H = spec.hidden_size, spec.n_heads
    ops: list[Op] = []
    exe_pairs, use_pairs = attention_pairs(layer, n, p, family, causal, tile)
    keys = p + n  # keys per sequence

    if spec.mla is None:
        hd, vhd, kvh = spec.head_dim, spec.v_head_dim, spec.n_kv_heads
        ops.append(_linear("proj/q", t, h, H * hd, s))
        ops.append(_linear("proj/kv", t, h, kvh * (hd + vhd), s))
        qk_dim, pv_dim = hd, vhd
        k_read = b * keys * kvh * hd * s
        v_read = b * keys * kvh * vhd * s
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
            k_read = b * keys * m.cache_dim * s  # one shared latent "head"
            v_read = np.zeros_like(k_read)  # V is the same latent, already read
            o_dim = H * m.v_head_dim
            o_extra = [_linear("proj/v_unabsorb", t * H, m.kv_lora_rank, m.v_head_dim, s)]

    q_bytes = t * H * qk_dim * s
    o_bytes = t * H * pv_dim * s
    qk_flops = 2.0 * b * H * exe_pairs * qk_dim
    qk_useful = 2.0 * b * H * use_pairs * qk_dim
    pv_flops = 2.0 * b * H * exe_pairs * pv_dim
    pv_useful = 2.0 * b * H * use_pairs * pv_dim
    qk_bytes = q_bytes + k_read
    pv_bytes = v_read + o_bytes
    if family == "eager":
        # QK^T writes the scores, PV reads the probabilities; the passes between are attn/elementwise
        score_bytes = b * H * exe_pairs * s
        qk_bytes = qk_bytes + score_bytes
        pv_bytes = pv_bytes + score_bytes
    ops.append(Op("attn/qk", qk_flops, qk_useful, qk_bytes))
    if family == "eager":
        ops.append(Op("attn/elementwise", np.zeros_like(t), np.zeros_like(t),
                      _eager_attention_bytes(spec, layer, n, p, b, s, exe_pairs, causal, mla_form)))
    ops.append(Op("attn/pv", pv_flops, pv_useful, pv_bytes))
    ops.extend(o_extra)
    ops.append(_linear("proj/o", t, o_dim, h, s))

    mats = 3 if spec.mlp_gated else 2
    if layer.moe and spec.moe is not None:
        e = spec.moe
        ops.append(_linear("mlp/router", t, h, e.n_experts, s))
        # Routed experts: each token visits n_active experts; weights of the experts touched are
        # read once (all of them once the batch has >= n_experts/n_active tokens).
        touched = np.minimum(float(e.n_experts), t * e.n_active)
        ex = _linear("mlp/experts", t * e.n_active, h, e.expert_intermediate_size, s, weight_copies=0)
        ex_flops = mats * ex.flops
        ex_bytes = s * (touched * mats * h * e.expert_intermediate_size + t * e.n_active * (h + h))
        ops.append(Op("mlp/experts", ex_flops, ex_flops, ex_bytes))
        if e.n_shared:
            sh_w = e.n_shared * e.shared_intermediate_size
            sh = _linear("mlp/shared", t, h, sh_w, s)
            ops.append(Op("mlp/shared", mats * sh.flops, mats * sh.flops,
                          s * (mats * h * sh_w + 2 * t * h)))
    else:
        inter = spec.intermediate_size
        if spec.mlp_gated:
            ops.append(_linear("mlp/gate", t, h, inter, s))
        ops.append(_linear("mlp/up", t, h, inter, s))
        ops.append(_linear("mlp/down", t, inter, h, s))

    zero = np.zeros_like(t)
    moved = (_elementwise_bytes(spec, layer, n, p, b, s, mla_form) if elementwise == "unfused"
             else _fused_elementwise_bytes(spec, layer, n, p, b, s))
    ops.append(Op("misc/elementwise", zero, zero, moved))
    return ops


def _fused_elementwise_bytes(spec: ModelSpec, layer: LayerSpec, n, prefix, b: float, s: int) -> np.ndarray:
    """A serving engine's fused kernels, per token: residual add + RMSNorm twice (read x and the
    residual, write both: 4h each; four times for Gemma 2's extra norms), rotary in place on q and
    k (read + write), new K/V written into the paged cache (read + write), SiLU-and-mul (read gate
    and up, write their product) -- or the plain activation (read, write) -- and MLA's latent norm."""
    t = b * n
    h = spec.hidden_size
    norms = 2 if spec.norms_per_layer < 4 else 4
    total = norms * 4 * h
    rope = spec.rope is not None and layer.rope
    if spec.mla is None:
        kvh = spec.n_kv_heads
        if rope:
            total += 2 * (spec.n_heads + kvh) * spec.head_dim
        total += 2 * kvh * (spec.head_dim + spec.v_head_dim)
    else:
        m = spec.mla
        if rope:
            total += 2 * (spec.n_heads + 1) * m.qk_rope_head_dim
        total += 2 * m.kv_lora_rank + 2 * m.cache_dim + (2 * m.q_lora_rank if m.q_lora_rank else 0)
    width = spec.mlp_width(layer)
    total += 3 * width if spec.mlp_gated else 2 * width
    return np.broadcast_arrays(s * t * total, np.asarray(prefix, dtype=np.float64))[0]  # shaped like the other ops


# ----------------------------------------------------------------------------------------------
# Elementwise traffic of the unfused layer (transformers' eager modules, lcprof's measured layer)
# ----------------------------------------------------------------------------------------------
# Every elementwise op reads its operands and writes its result through device memory; a broadcast
# operand (the RoPE tables, a norm weight) is read once per op. Checked to the byte against the
# measured layer's ops by lcprof.measure.tensor_audit.MovedBytes (tests/measure/test_tensor_audit.py).

def _norm_bytes(width: int, tokens, s: int) -> np.ndarray:
    """Unfused RMSNorm over ``width``: in fp32 for fp16/bf16 (copy up, square, mean, +eps, rsqrt,
    scale, copy down, times the weight); in the input's dtype otherwise (no copies)."""
    f = 4 if s < 4 else s
    per_elem = 5 * f + 2 * s + (2 * (s + f) if s < 4 else 0)  # pow 2f, mean f, scale 2f, weight 2s, copies
    return tokens * (width * per_elem + 6 * f) + s * width  # + mean out, eps add, rsqrt (per token); weight


def _rope_bytes(heads: int, dim: int, rot: int, tokens, positions, s: int) -> np.ndarray:
    """RoPE on ``heads`` x ``dim`` per token (first ``rot`` dims rotated): x*cos, rotate_half (neg,
    cat), *sin, add over the rotated part -- 10 passes of it -- and, when partial, the cat that
    reattaches the pass-through dims; the cos/sin tables (``positions`` x rot) are read twice."""
    rotated, whole = heads * rot, heads * dim
    partial = 2 * whole if rot < dim else 0
    return s * (tokens * (10 * rotated + partial) + 2 * positions * rot)


def _elementwise_bytes(spec: ModelSpec, layer: LayerSpec, n, prefix, b: float, s: int,
                       mla_form: str | None) -> np.ndarray:
    """Bytes the layer's elementwise ops move for ``n`` new tokens per sequence (``b`` sequences)."""
    t = b * n
    keys = b * (prefix + n)
    cached = np.asarray(prefix) > 0
    h, H = spec.hidden_size, spec.n_heads
    total = 2 * _norm_bytes(h, t, s) + 6 * s * t * h  # two norms; two residual adds (read 2, write 1)
    if spec.norms_per_layer >= 4:
        total = total + 2 * _norm_bytes(h, t, s)  # Gemma 2: after attention and after the MLP too
    rope = spec.rope if (spec.rope is not None and layer.rope) else None
    if spec.mla is None:
        kv_w = spec.n_kv_heads * (spec.head_dim + spec.v_head_dim)
        if rope is not None:
            r = rope.rotary_dim
            total = total + _rope_bytes(H, spec.head_dim, r, t, n, s) \
                + _rope_bytes(spec.n_kv_heads, spec.head_dim, r, t, n, s)
        total = total + np.where(cached, 2 * s * t * kv_w, 0.0)  # new K/V copied into the cache
    else:
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
    if layer.moe and spec.moe is not None:
        e = spec.moe
        total = total + t * (s * e.n_experts + (s + 8) * e.n_active)  # top-k over the router logits
    total = total + s * t * spec.mlp_width(layer) * (5 if spec.mlp_gated else 2)  # act (+ times up)
    return total


def attention_dims(spec: ModelSpec, mla_form: str | None = None) -> tuple[int, int, int]:
    """(kv_heads, qk_dim, v_dim) of the tensors the attention kernel sees: MLA's naive form
    decompresses K/V per query head, the absorbed form attends to one shared latent "head"."""
    if spec.mla is None:
        return spec.n_kv_heads, spec.head_dim, spec.v_head_dim
    if (mla_form or "naive") == "naive":
        return spec.n_heads, spec.mla.qk_head_dim, spec.mla.v_head_dim
    return 1, spec.mla.cache_dim, spec.mla.kv_lora_rank


def _eager_attention_bytes(spec: ModelSpec, layer: LayerSpec, n, prefix, b: float, s: int, pairs,
                           causal: bool, mla_form: str | None) -> np.ndarray:
    """transformers' eager attention between its two matmuls: K/V repeated per query head (GQA),
    scores scaled in place, masked in place (the mask inverted first), softmax (through fp32 for
    fp16/bf16), and the output transposed back to token-major order."""
    H = spec.n_heads
    n = np.asarray(n, dtype=np.float64)
    keys = prefix + n
    P = b * H * pairs  # every (query, key) pair of every head
    softmax = 2 * s + 16 if s < 4 else 2 * s  # [copy up s + 4] + softmax 8 + [copy down 4 + s]
    # no mask when it would allow every pair (no causality, or one query over a window-free cache)
    unbounded = layer.attn == "global" or layer.window is None or keys <= layer.window
    masked = np.where((n == 1) & unbounded, 0.0, 1.0 if causal else 0.0)
    total = P * (2 * s + softmax) + masked * (2 * s * P + 3 * n * keys)  # scale; softmax; the mask
    # (inverted: read + write; read by masked_fill, which reads and writes the scores)
    absorbed = spec.mla is not None and (mla_form or "naive") == "absorbed"
    kv_heads, qk, v = attention_dims(spec, mla_form)
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
    """The vocabulary projection for ``tokens`` positions (prefill needs only the last one)."""
    return _linear("lm_head", tokens, spec.hidden_size, spec.vocab_size, dtype_bytes(dtype))


def group_layers(spec: ModelSpec) -> list[tuple[LayerSpec, int]]:
    """Distinct layer kinds with their multiplicity (layers of one kind cost the same)."""
    counts: dict[tuple, int] = {}
    first: dict[tuple, LayerSpec] = {}
    for layer in spec.layers:
        key = (layer.attn, layer.window, layer.moe)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, layer)
    return [(first[k], c) for k, c in counts.items()]
