"""Prefill and decode time of one replica, and the TTFT a short request sees. No torch.

Rates are decimal (1 TFLOP/s = 1e12 FLOP/s, 1 GB/s = 1e9 B/s). Everything is vectorised over n.

**Prefill** of n new tokens after ``prefix`` cached ones. The cost model gives every op's executed
FLOPs and bytes for the whole model on one GPU (tiled attention, fused elementwise kernels, the LM
head for the last token, activations in the activation dtype). Each op is then charged by
``lcprof.cost.model.roofline`` -- max(FLOPs / rate, bytes / HBM bandwidth) -- at its own rate:

* attention (``attn/qk``, ``attn/pv``) at ``--attn-dtype``: the calibrated rate of
  ``--attn-backend`` at that n when a calibration measured it (``Hardware.attention_rate``,
  interpolated in log n), else the GEMM peak of that dtype -- exactly what ``lcprof compare`` charges;
* every other op at the weights' GEMM dtype (fp8 -> fp8 peak, int8 -> int8 peak, W4A16 formats ->
  bf16), with its weight traffic in the weight format (``lcprof.cost.weights.op_weight_bytes_delta``).

The one-GPU times are grouped by how the replica splits them::

    t = (attention + projections + dense MLP + shared experts + LM head + elementwise) / tp
        + routed experts / (tp x dp)  +  router  +  communication

(each op's FLOPs and bytes split evenly over its GPUs: an approximation where K/V projections are
replicated past the KV heads). With attention data parallel a request's attention runs on one DP
rank's ``tp`` GPUs while the experts span all of them. Communication per layer:

* TP all-reduce (Megatron: after attention's o projection and after the MLP), a ring moving
  2 (T-1)/T of the (tokens x hidden) activations per GPU over the per-direction link;
* expert parallel: the MoE layer's all-reduce is replaced by an all-to-all dispatch and combine,
  each sending (tokens / tp) x experts per token x hidden x bytes x (EP-1)/EP per GPU;
* pipeline parallel: the hidden state and residual (2 x tokens x hidden) sent across each of the
  pp - 1 stage boundaries.

Per-collective latency is not modelled. A request's prefill passes through the pp stages one after
another: unchunked, PP does not shorten it (each stage idles (pp-1)/pp of the time: the bubble);
chunked, the k chunks pipeline: total = sum_i t_i / pp + (pp - 1) t_max / pp.

**Decode** step of a batch of B requests on one attention-DP rank (every request adds one token)::

    t_step = max((weights read + KV read) / HBM bandwidth, FLOPs / peak) + communication

Weights read per GPU: everything but the embedding (a B-row gather) and the routed experts no
token visits: the MoE group's B x dp tokens visit at most ``experts_touched`` of the experts
(``lcprof.cost.ops``), read in their stored format. KV read: every request's window-capped KV in its
stored format (scales included). Under PP the batch is split into pp microbatches and a token
passes every stage: TPOT = sum over stages of (stage weights + stage KV of B/pp requests) / bandwidth.

**TTFT** of a short request that arrives just after a long prefill started (the worst case): without
chunked prefill it waits for the whole long prefill, then runs its own; with chunked prefill of C
tokens (vLLM ``max_num_batched_tokens``, Sarathi-Serve) it waits at most one chunk -- the longest,
the last -- then runs its own (chunked) prefill (under PP it waits one stage of that chunk).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lcprof.cost.model import TOTAL_KEYS, cost, roofline, state_bytes
from lcprof.cost.ops import experts_touched
from lcprof.cost.weights import op_weight_bytes_delta
from lcprof.errors import LcprofError
from lcprof.hardware import Hardware, get_gpu
from lcprof.rates import RateSet, resolve_rates
from lcprof.plan.kvformat import kv_read_bytes
from lcprof.plan.parallel import Parallel
from lcprof.spec import ModelSpec
from lcprof.units import dtype_bytes

ALLREDUCES_PER_LAYER = 2  # after attention's output projection and after the MLP's down projection

#: The attention kernel whose calibrated rate the planner charges by default: PyTorch SDPA's
#: FlashAttention-2 kernel, the one lcprof measures closest to vLLM's default FLASH_ATTN backend.
DEFAULT_ATTENTION_BACKEND = "sdpa-flash"

#: How a replica splits each op class of one GPU's time: "tp" over the attention TP group,
#: "experts" over the MoE group (tp x dp), "replicated" not at all.
OP_SPLIT = {"attn/qk": "tp", "attn/pv": "tp", "attn/elementwise": "tp", "mlp/experts": "experts",
            "mlp/router": "replicated"}


def op_split(name: str) -> str:
    return OP_SPLIT.get(name, "tp")


@dataclass(frozen=True)
class Rates:
    """Where times come from: a roofline on ``hw`` (the :class:`lcprof.rates.RateSet`'s hardware,
    carried whole: GEMM peaks, bandwidth, attention rates per backend, dtype and length) or a fitted
    t(n); ``gpu`` is the GPU database entry the deployment runs on (its identity, memory and links);
    ``attention_backend`` names the kernel whose calibrated rate attention is charged."""

    hw: Hardware
    link_bytes_per_s: float | None  # per direction, for collectives
    source: str
    attention_backend: str | None = DEFAULT_ATTENTION_BACKEND
    # (n_new, prefix) -> seconds of the whole model's prefill on ONE GPU, from a fitted results table
    prefill_fit: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    gpu: Hardware | None = None
    rate_set: RateSet | None = None

    @property
    def device(self) -> Hardware:
        """The GPU the deployment runs on (memory, links, name): ``gpu``, else ``hw``."""
        return self.gpu or self.hw


def deployment_rates(gpu: str | Hardware, calibration: str | None = None, fit: str | None = None, *,
                     spec: ModelSpec | None = None, dtype: str = "bf16",
                     attention_backend: str | None = None) -> Rates:
    """The planner's rates: :func:`lcprof.rates.resolve_rates` (a calibration profile, rates fitted
    from a results file, ``datasheet``, or without ``calibration`` the best profile at hand for the
    GPU -- labelled), carried whole; memory and links stay the GPU's. GEMM dtypes the rates did not
    measure (a profile without fp8 or int8) take the GPU's datasheet peak, and ``source`` says so.
    ``fit``: a results table whose fitted t(n) replaces the prefill roofline."""
    device = get_gpu(gpu)
    rs = resolve_rates(device, calibration)
    hw = rs.hardware
    filled = sorted(set(device.peak_flops_per_s) - set(hw.peak_flops_per_s)) if rs.kind != "datasheet" else []
    if filled:
        hw = dataclasses.replace(hw, peak_flops_per_s={**{d: device.peak_flops_per_s[d] for d in filled},
                                                       **hw.peak_flops_per_s})
    source = f"roofline, {rs.label}"
    if filled:
        source += f"; {', '.join(filled)} peaks from the {device.key} datasheet (not measured)"
    rates = Rates(hw=hw, link_bytes_per_s=hw.interconnect_bytes_per_s or device.interconnect_bytes_per_s,
                  source=source, attention_backend=attention_backend or DEFAULT_ATTENTION_BACKEND, gpu=device,
                  rate_set=rs)
    if fit:
        from lcprof.plan.fitted import fitted_rates  # needs lcprof.explain.fit (pandas/scipy)

        rates = fitted_rates(rates, fit, spec=spec, dtype=dtype)
    return rates


def attention_rate_source(rates: Rates, attn_dtype: str) -> str:
    """Human label of the rate attention is charged at."""
    hw, b = rates.hw, rates.attention_backend
    if hw.attention_rate(b, attn_dtype, [1.0]) is not None:
        return f"calibrated {b} {attn_dtype}"
    return f"{attn_dtype} GEMM peak" + (f" (calibration has no {b} {attn_dtype} rate)" if hw.kind == "calibration"
                                        else "")


# ----------------------------------------------------------------------------------------------
# Prefill
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrefillParts:
    """One GPU's time (holding the whole model) per split class, arrays over (n, prefix)."""

    tp: np.ndarray
    experts: np.ndarray
    replicated: np.ndarray
    attention: np.ndarray  # the attention kernels alone (part of ``tp``)


def prefill_parts(spec: ModelSpec, rates: Rates, precision, n_new, prefix=0,
                  tile: tuple[int, int] = (128, 128), mask=None) -> PrefillParts:
    """One-GPU prefill time per split class (module docstring); a fitted table counts as all ``tp``.
    ``mask``: a what-if mask on every attention layer (its pairs replace the layers' own)."""
    n_new, prefix = np.broadcast_arrays(np.atleast_1d(np.asarray(n_new, dtype=np.float64)),
                                        np.asarray(prefix, dtype=np.float64))
    if rates.prefill_fit is not None:
        t = np.asarray(rates.prefill_fit(n_new, prefix), dtype=np.float64)
        z = np.zeros_like(t)
        return PrefillParts(tp=t, experts=z, replicated=z, attention=z)
    act = precision.act_dtype
    c = cost(spec, n_new, prefix=prefix, phase="prefill", dtype=act, family="tiled", tile=tile, lm_head=True,
             elementwise="fused", mask=mask, state_dtype=getattr(precision, "state_dtype", None))
    delta = op_weight_bytes_delta(spec, precision.weights, dtype_bytes(act), n_new)
    qbytes = {k: (np.asarray(v) + delta[k] if k in delta else v) for k, v in c.bytes.items()}
    t_gemm = roofline(dataclasses.replace(c, dtype=precision.gemm_dtype, bytes=qbytes), rates.hw)
    t_attn = roofline(dataclasses.replace(c, dtype=precision.attn_dtype), rates.hw, backend=rates.attention_backend)
    parts = {"tp": 0.0, "experts": 0.0, "replicated": 0.0}
    attention = 0.0
    for name in c.flops:
        if name in TOTAL_KEYS:
            continue
        t = t_attn[name] if name.startswith("attn/") else t_gemm[name]
        parts[op_split(name)] = parts[op_split(name)] + np.asarray(t, dtype=np.float64)
        if name.startswith("attn/"):
            attention = attention + np.asarray(t, dtype=np.float64)
    shape = n_new.shape
    return PrefillParts(*(np.broadcast_to(np.asarray(parts[k], dtype=np.float64), shape)
                          for k in ("tp", "experts", "replicated")),
                        attention=np.broadcast_to(np.asarray(attention, dtype=np.float64), shape))


def _ring_allreduce_s(tokens, width: int, nbytes: float, ranks, link) -> np.ndarray:
    ranks = np.asarray(ranks, dtype=np.float64)
    return 2.0 * np.asarray(tokens, dtype=np.float64) * width * nbytes * (ranks - 1.0) / ranks / float(link)


def comm_s(spec: ModelSpec, par: Parallel, tokens, link: float | None, act_dtype: str = "bf16",
           moe_tokens=None) -> np.ndarray:
    """Collective time of one forward pass over ``tokens`` tokens on a replica (module docstring).

    ``moe_tokens``: tokens the MoE group processes (default ``tokens``; a decode step of B requests
    per DP rank gives B x dp). Broadcasts over tokens and the fields of ``par`` given as arrays."""
    tokens = np.asarray(tokens, dtype=np.float64)
    moe_tokens = tokens if moe_tokens is None else np.asarray(moe_tokens, dtype=np.float64)
    tp, dp, ep, pp = (np.asarray(getattr(par, k), dtype=np.float64) for k in ("tp", "dp", "ep", "pp"))
    multi = np.any(tp > 1) or np.any(dp > 1) or np.any(ep > 1) or np.any(pp > 1)
    if not link:
        if multi:
            raise LcprofError("this GPU has no interconnect bandwidth in the database; TP/DP/EP/PP need one")
        return np.zeros(np.broadcast(tokens, tp).shape)
    s = dtype_bytes(act_dtype)
    h = spec.hidden_size
    moe_layers = sum(1 for layer in spec.layers if layer.moe) if spec.moe is not None else 0
    dense_layers = spec.n_layers - moe_layers
    ar = _ring_allreduce_s(tokens, h, s, tp, link)  # one all-reduce over the TP group
    total = dense_layers * ALLREDUCES_PER_LAYER * ar
    if moe_layers:
        k = spec.moe.n_active
        a2a = 2.0 * (tokens / tp) * k * h * s * (ep - 1.0) / np.maximum(ep, 1.0) / float(link)
        moe_ar = _ring_allreduce_s(moe_tokens, h, s, tp * dp, link)
        moe = np.where(ep > 1, ar + a2a, ar + moe_ar)
        total = total + moe_layers * moe
    total = total + (pp - 1.0) * 2.0 * tokens * h * s / float(link)
    return total


def prefill_s(dep, n_new, prefix=0, parts: PrefillParts | None = None) -> np.ndarray:
    """Prefill time of ``n_new`` tokens after ``prefix`` on one replica of ``dep`` (array over n)."""
    n_new = np.atleast_1d(np.asarray(n_new, dtype=np.float64))
    p = parts or prefill_parts(dep.spec, dep.rates, dep.precision, n_new, prefix, mask=getattr(dep, "mask", None))
    par = dep.par
    return combine_prefill(p, par) + comm_s(dep.spec, par, n_new, dep.rates.link_bytes_per_s, dep.precision.act_dtype)


def combine_prefill(p: PrefillParts, par: Parallel) -> np.ndarray:
    """One replica's compute time from the one-GPU parts (broadcasts over array-valued ``par`` fields)."""
    tp = np.asarray(par.tp, dtype=np.float64)
    shards = np.asarray(par.tp, dtype=np.float64) * np.asarray(par.dp, dtype=np.float64)
    return p.tp / tp + p.experts / shards + p.replicated


def chunk_schedule(n_new: int, chunk: int, prefix: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(chunk sizes, prefix before each chunk) of a chunked prefill of n_new tokens after ``prefix``."""
    k = -(-int(n_new) // int(chunk))
    sizes = np.full(k, int(chunk), dtype=np.int64)
    sizes[-1] = int(n_new) - (k - 1) * int(chunk)
    starts = int(prefix) + np.arange(k, dtype=np.int64) * int(chunk)
    return sizes, starts


def pipelined_s(chunk_times, pp: int) -> float:
    """Time of k chunks through pp stages (each stage 1/pp of a chunk's time): sum / pp + (pp-1) max / pp."""
    t = np.asarray(chunk_times, dtype=np.float64)
    return float(np.sum(t) / pp + (pp - 1) * np.max(t) / pp)


def chunked_prefill_s(dep, n_new: int, chunk: int | None, prefix: int = 0) -> tuple[float, float]:
    """(total time, longest chunk's time) of a prefill in chunks of ``chunk`` tokens (None or >= n:
    one chunk), pipelined over the deployment's stages."""
    if not chunk or chunk >= n_new:
        t = float(prefill_s(dep, [n_new], prefix)[0])
        return t, t
    sizes, starts = chunk_schedule(n_new, chunk, prefix)
    t = prefill_s(dep, sizes, starts)
    return pipelined_s(t, dep.par.pp), float(np.max(t))


def last_chunk_s(dep, n_total, chunk) -> np.ndarray:
    """Time of the last (largest-prefix) chunk of a prefill of n_total tokens; broadcasts n and chunk."""
    n_total, chunk = np.broadcast_arrays(np.asarray(n_total, dtype=np.int64), np.asarray(chunk, dtype=np.int64))
    size = n_total - chunk * ((n_total - 1) // chunk)  # the last chunk may be partial
    return prefill_s(dep, size.ravel(), (n_total - size).ravel()).reshape(n_total.shape)


def chunk_wait_s(dep, t_chunk) -> float:
    """How long a newly arrived request waits behind one chunk: the chunk, or one stage of it under PP."""
    return float(t_chunk) / dep.par.pp


# ----------------------------------------------------------------------------------------------
# Decode
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecodeParts:
    """Per request at context n, one GPU of the replica: FLOPs of one new token and the cache bytes
    one step moves (attention KV read, and a linear-time mixer's state read and written back)."""

    flops_per_gpu: np.ndarray
    kv_read_bytes_per_gpu: np.ndarray


def decode_parts(dep, context, kv=None) -> DecodeParts:
    """FLOPs (split like prefill) and cache bytes per request per GPU: the KV in its stored format,
    window- or mask-capped, plus 2 x the mixers' state (read, updated, written back each step)."""
    spec, par = dep.spec, dep.par
    mask = getattr(dep, "mask", None)
    sdt = dep.precision.state_dtype
    ctx = np.atleast_1d(np.asarray(context, dtype=np.float64))
    c = cost(spec, ctx, phase="decode", dtype=dep.precision.act_dtype, family="useful", lm_head=True,
             elementwise="fused", mask=mask, state_dtype=sdt)
    flops = 0.0
    for name, f in c.flops.items():
        if name in TOTAL_KEYS:
            continue
        div = {"tp": par.tp, "experts": par.expert_shards, "replicated": 1}[op_split(name)]
        flops = flops + np.asarray(f, dtype=np.float64) / div
    state = 2.0 * state_bytes(spec, dtype=dep.precision.act_dtype, state_dtype=sdt, tp=par.tp)
    kvb = (kv_read_bytes(spec, kv or dep.precision.kv, ctx, par.tp, mask=mask) + state) / par.pp
    return DecodeParts(np.broadcast_to(flops, ctx.shape).astype(np.float64), kvb)


def decode_weight_read_bytes(spec: ModelSpec, weights, batch, par: Parallel) -> np.ndarray:
    """Weight bytes one decode step reads on one GPU: all but the embedding rows and the routed
    experts no token of the MoE group's batch visits (``experts_touched``)."""
    by = weights.by_class
    batch = np.asarray(batch, dtype=np.float64)
    dense = weights.total_bytes - by["embedding"] - by["experts"] - by["buffers"]
    if spec.tie_embeddings and by["lm_head"] == 0:
        dense = dense + by["embedding"]  # a tied LM head reads the embedding matrix
    if spec.moe is None or by["experts"] == 0:
        return dense + np.zeros_like(batch)
    e = spec.moe
    share = experts_touched(e.n_experts, e.n_active, batch * par.dp) / e.n_experts
    return dense + by["experts"] * share


def decode_step_s(dep, weights, *, flops_per_gpu, kv_read_bytes_per_gpu, batch) -> np.ndarray:
    """One decode step (TPOT) of ``batch`` requests per DP rank whose FLOPs and KV reads (per GPU,
    summed over the batch) are given; ``weights`` is the binding stage's WeightBytes."""
    par, hw = dep.par, dep.rates.hw
    pp = par.pp
    batch = np.asarray(batch, dtype=np.float64)
    micro = np.maximum(np.ceil(batch / pp), 1.0)
    w = decode_weight_read_bytes(dep.spec, weights, micro, par)
    kv = np.asarray(kv_read_bytes_per_gpu, dtype=np.float64) / np.maximum(batch, 1.0) * micro
    mem = (w + kv) / hw.hbm_bytes_per_s
    comp = np.asarray(flops_per_gpu, dtype=np.float64) / np.maximum(batch, 1.0) * micro / pp / hw.peak(dep.precision.gemm_dtype)
    step = np.maximum(mem, comp)
    comm = comm_s(dep.spec, par, micro, dep.rates.link_bytes_per_s, dep.precision.act_dtype,
                  moe_tokens=micro * par.dp)
    return pp * step + comm
