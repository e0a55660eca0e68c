"""Per-layer and per-model costs: FLOP breakdowns, KV cache, weights, activations, roofline.

Everything here is a pure function of a ModelSpec and a workload, vectorized over n with numpy.
FLOPs count 2 per multiply-add (see ``lcprof.cost.ops``). Bytes are integers where they are sizes
(KV cache, weights) and floats where they are traffic. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lcprof.cost import masks
from lcprof.cost.ops import (DEFAULT_TILE, FAMILIES, Op, group_layers, layer_ops, lm_head_op)
from lcprof.errors import LcprofError
from lcprof.hardware import Hardware
from lcprof.spec import LayerSpec, ModelSpec, param_counts
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


def _with_totals(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(d)
    out["attn/total"] = d.get("attn/qk", 0.0) + d.get("attn/pv", 0.0)
    out["total"] = sum(v for k, v in d.items())
    return out


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
         tile: tuple[int, int] = DEFAULT_TILE, lm_head: bool = False, mla_form: str | None = None) -> Cost:
    """FLOPs and bytes of one layer (``layer`` = index or LayerSpec) or of all layers (None).

    ``lm_head`` adds the vocabulary projection for the last position of each sequence
    (prefill) or the one new token (decode).
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
    groups = [(layer_ops(spec, lyr, new, pre, batch=batch, dtype=dtype, family=family, causal=causal,
                         tile=tile, mla_form=form), mult)
              for lyr, mult in _layers_for(spec, layer)]
    if lm_head:
        groups.append(([lm_head_op(spec, float(batch) * np.ones_like(new), dtype)], 1))
    f, u, b = _sum_ops(groups)
    return Cost(n=n_arr, flops=_with_totals(f), useful_flops=_with_totals(u), bytes=_with_totals(b),
                family=family, dtype=dtype, phase=phase)


# ----------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------

def kv_heads_per_gpu(spec: ModelSpec, tp: int = 1) -> int:
    """KV heads each tensor-parallel rank holds; heads are replicated when tp exceeds them."""
    if tp <= 0:
        raise LcprofError(f"tensor-parallel degree must be positive, got {tp}")
    kvh = spec.n_kv_heads
    if spec.n_heads % tp:
        raise LcprofError(
            f"TP={tp} does not divide {spec.name}'s {spec.n_heads} query heads; use a divisor of it"
        )
    if kvh >= tp:
        if kvh % tp:
            raise LcprofError(f"TP={tp} does not divide {spec.name}'s {kvh} KV heads")
        return kvh // tp
    if tp % kvh:
        raise LcprofError(f"TP={tp} is not a multiple of {spec.name}'s {kvh} KV heads")
    return 1


def kv_bytes_per_token_by_layer(spec: ModelSpec, kv_dtype: str = "bf16", tp: int = 1) -> np.ndarray:
    """Bytes one token adds to each layer's cache on one GPU (before any window cap)."""
    s = dtype_bytes(kv_dtype)
    if spec.mla is not None:
        # The compressed latent + shared rope key, one copy per layer; not split by heads under TP.
        per = spec.mla.cache_dim * s
        if tp <= 0:
            raise LcprofError(f"tensor-parallel degree must be positive, got {tp}")
        return np.full(spec.n_layers, per, dtype=np.float64)
    per = kv_heads_per_gpu(spec, tp) * (spec.head_dim + spec.v_head_dim) * s
    return np.full(spec.n_layers, per, dtype=np.float64)


def kv_bytes_per_token(spec: ModelSpec, kv_dtype: str = "bf16", tp: int = 1) -> int:
    """Bytes per cached token summed over layers, on one GPU, ignoring window caps."""
    return int(round(float(np.sum(kv_bytes_per_token_by_layer(spec, kv_dtype, tp)))))


def kv_tokens_by_layer(spec: ModelSpec, n) -> np.ndarray:
    """Tokens each layer must hold at context n: (layers, len(n)). Sliding/chunked layers are capped."""
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.float64))
    rows = []
    for layer in spec.layers:
        rows.append(masks.kv_tokens_attended(layer.attn, n_arr, layer.window))
    return np.vstack(rows)


def kv_bytes(spec: ModelSpec, n, *, batch: int = 1, kv_dtype: str = "bf16", tp: int = 1) -> np.ndarray:
    """KV-cache bytes on one GPU for ``batch`` sequences at context n (int64 array over n)."""
    per_layer = kv_bytes_per_token_by_layer(spec, kv_dtype, tp)[:, None]
    tokens = kv_tokens_by_layer(spec, n)
    total = np.sum(per_layer * tokens, axis=0) * batch
    return np.round(total).astype(np.int64)


def weight_bytes(spec: ModelSpec, dtype: str = "bf16", tp: int = 1) -> int:
    """Weight bytes on one GPU under tensor parallelism.

    Attention, MLP, embeddings and lm_head are split tp ways; K/V projections are replicated when
    tp exceeds the KV heads; norms are replicated.
    """
    s = dtype_bytes(dtype)
    pc = param_counts(spec)
    norms = pc["norm_params"]
    if spec.mla is None:
        kv_proj = spec.n_layers * spec.hidden_size * spec.n_kv_heads * (spec.head_dim + spec.v_head_dim)
        kv_per_gpu = kv_proj * kv_heads_per_gpu(spec, tp) / spec.n_kv_heads
    else:
        kv_proj = kv_per_gpu = 0
        if spec.n_heads % tp:
            raise LcprofError(f"TP={tp} does not divide {spec.name}'s {spec.n_heads} heads")
    split = pc["total_params"] - norms - kv_proj
    return int(round(s * (split / tp + kv_per_gpu + norms)))


def activation_bytes(spec: ModelSpec, n, *, batch: int = 1, dtype: str = "bf16", family: str = "tiled",
                     layer: int | LayerSpec = 0, prefix=0, materialize_mask: bool = True) -> np.ndarray:
    """Peak activation bytes of one layer's prefill (inference, no autograd), per backend family.

    Live at the attention step: residual x, normed x, q, k, v, attention output; eager adds the
    scores and their softmax (2 x batch*heads*n*(p+n)) plus a boolean mask (n*(p+n) bytes) when
    ``materialize_mask``; tiled kernels add only the fp32 log-sum-exp. Live at the MLP step:
    x, normed x, gate, up and their product (3 x intermediate). Peak = the larger step.
    """
    s = dtype_bytes(dtype)
    lyr = layer if isinstance(layer, LayerSpec) else spec.layers[int(layer)]
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.float64))
    keys = n_arr + prefix
    b = float(batch)
    h, H = spec.hidden_size, spec.n_heads
    qk_dim = spec.head_dim
    if spec.mla is None:
        kv_w = spec.n_kv_heads * (spec.head_dim + spec.v_head_dim)
    else:
        kv_w = H * (spec.head_dim + spec.v_head_dim) + spec.mla.cache_dim
    attn = s * b * (2 * n_arr * h + n_arr * H * qk_dim + keys * kv_w + n_arr * H * spec.v_head_dim)
    if family == "eager":
        attn = attn + 2 * s * b * H * n_arr * keys + (n_arr * keys if materialize_mask else 0)
    elif family in ("tiled", "useful"):
        attn = attn + 4 * b * H * n_arr
    else:
        raise LcprofError(f"unknown backend family {family!r}; known: {', '.join(FAMILIES)}")
    if lyr.moe and spec.moe is not None:
        e = spec.moe
        inter = max(e.n_active * e.expert_intermediate_size, e.n_shared * e.shared_intermediate_size)
    else:
        inter = spec.intermediate_size
    mlp = s * b * n_arr * (2 * h + (3 if spec.mlp_gated else 1) * inter)
    return np.maximum(attn, mlp)


# ----------------------------------------------------------------------------------------------
# Roofline
# ----------------------------------------------------------------------------------------------

def matmul_dtype(dtype: str, tf32: bool = False) -> str:
    d = dtype_name(dtype)
    return "tf32" if (d == "fp32" and tf32) else d


def roofline(c: Cost, hw: Hardware, *, tf32: bool = False, backend: str | None = None) -> dict[str, np.ndarray]:
    """Per-op time = max(FLOPs / peak, bytes / bandwidth); plus 'total'. Seconds, arrays over n.

    The peak is the GEMM peak for the dtype, except for attention (``attn/qk``, ``attn/pv``) when
    ``hw`` is a calibration that measured ``backend``'s own attention rate in that dtype.
    """
    peak = hw.peak(matmul_dtype(c.dtype, tf32))
    attn_peak = hw.attention_peak(backend, matmul_dtype(c.dtype, tf32)) or peak
    bw = hw.hbm_bytes_per_s
    out: dict[str, np.ndarray] = {}
    for name, f in c.flops.items():
        if name in ("total", "attn/total"):
            continue
        p = attn_peak if name.startswith("attn/") else peak
        out[name] = np.maximum(np.asarray(f) / p, np.asarray(c.bytes[name]) / bw)
    out["attn/total"] = out.get("attn/qk", 0.0) + out.get("attn/pv", 0.0)
    out["total"] = sum(v for k, v in out.items() if k != "attn/total")
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

