"""FLOPs and bytes of one decoder layer, op by op: the single source every other count derives from.

We count FLOPs, not multiply-adds: one multiply-add is **2** FLOPs, and the ``2 *`` is written out in
every formula below. Only matrix products are counted (projections, QK^T, PV, MLP); norms, RoPE,
softmax and residual adds are bandwidth-bound elementwise work and are charged to bytes only
(``misc/elementwise``). This is also what ``torch.utils.flop_counter.FlopCounterMode`` counts.

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

    ``bytes`` is the fewest bytes the op must move through device memory (inputs read once,
    outputs written once, weights read once); eager attention adds its score matrix traffic.
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


def layer_ops(spec: ModelSpec, layer: LayerSpec, n, prefix=0, *, batch: int = 1, dtype: str = "bf16",
              family: str = "useful", causal: bool = True, tile: tuple[int, int] = DEFAULT_TILE,
              mla_form: str | None = None) -> list[Op]:
    """The ops of one layer processing ``n`` new tokens after ``prefix`` cached ones, per batch.

    ``mla_form``: ``naive`` (decompress K/V per head; the default) or ``absorbed`` (attend in the
    latent space, the up-projections folded into q and o; ``cost`` picks it for decode).
    """
    if family not in FAMILIES:
        raise LcprofError(f"unknown backend family {family!r}; known: {', '.join(FAMILIES)}")
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
        # scores written (QK^T), read and written by softmax, read by PV: 4 passes over b*H*n*keys
        score_bytes = b * H * exe_pairs * s
        qk_bytes = qk_bytes + 2 * score_bytes
        pv_bytes = pv_bytes + 2 * score_bytes
    ops.append(Op("attn/qk", qk_flops, qk_useful, qk_bytes))
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

    # Norms, RoPE, softmax, activation and residuals: no matmul FLOPs, a few passes over activations.
    elementwise_bytes = s * t * (8.0 * h + 2.0 * H * qk_dim)
    zero = np.zeros_like(t)
    ops.append(Op("misc/elementwise", zero, zero, elementwise_bytes))
    return ops


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
