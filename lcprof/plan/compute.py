"""Prefill and decode time of one replica (TP ranks), and the TTFT a short request sees. No torch.

Time model (roofline, all rates decimal: 1 TFLOP/s = 1e12 FLOP/s, 1 GB/s = 1e9 B/s):

* **Prefill** of n new tokens after ``prefix`` cached ones on a TP replica of T GPUs::

      t = roofline_1gpu(cost(n, prefix, family='tiled', lm_head=True, elementwise='fused')) / T  +  t_allreduce(n)

  ``roofline_1gpu`` sums max(FLOPs / peak, bytes / HBM bandwidth) over ops (executed FLOPs of a
  tiled attention kernel that skips fully masked tiles, 2 FLOPs per multiply-add; elementwise work
  as a serving engine's fused kernels move it). Dividing by T
  splits every op's FLOPs and bytes evenly across ranks (an approximation: KV projections are
  replicated when T exceeds the KV heads; norms are replicated).
  ``t_allreduce`` is Megatron-style TP: two all-reduces of the (tokens x hidden) activations per
  layer, each a ring all-reduce moving 2 x (T-1)/T of the activation bytes per GPU over the GPU's
  per-direction interconnect bandwidth::

      t_allreduce = n_layers x 2 x [2 x tokens x hidden x bytes_per_elem x (T-1)/T] / link_bytes_per_s

  Per-collective latency is not modelled (it adds ~2 x n_layers x a few microseconds per step).
* **Decode** step of a batch: every resident request adds one token; one step reads the weights
  once plus every request's KV (window-capped, in the KV dtype)::

      t_step = max((weights_per_gpu + sum KV bytes per GPU) / HBM bandwidth,
                   sum decode FLOPs / T / peak)  +  t_allreduce(batch tokens)

  TPOT (time per output token) of every request in the batch is t_step. MoE layers read only the
  routed experts the batch can visit: at most min(experts, batch x experts_per_token).
* **TTFT** of a short request that arrives just after a long prefill started (the worst case):
  without chunked prefill it waits for the whole long prefill, then runs its own::

      ttft = t_prefill(long) + t_prefill(short)

  with chunked prefill of C tokens and a scheduler that caps the long request at one chunk per
  step (vLLM ``long_prefill_token_threshold``, Sarathi-Serve), it waits at most one chunk -- the
  longest, which is the last one, attending over the largest prefix::

      ttft = max_k t_chunk_k(long) + t_prefill(short)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lcprof.cost.model import cost, kv_bytes, roofline
from lcprof.errors import LcprofError
from lcprof.hardware import Hardware, get_gpu, load_calibration
from lcprof.plan.memory import activation_dtype
from lcprof.spec import ModelSpec
from lcprof.units import dtype_bytes

ALLREDUCES_PER_LAYER = 2  # after attention's output projection and after the MLP's down projection


@dataclass(frozen=True)
class Rates:
    """Where times come from: a roofline on ``hw`` (datasheet or calibration) or a fitted t(n)."""

    hw: Hardware  # peaks and HBM bandwidth for the roofline, memory capacity for the budget
    link_bytes_per_s: float | None  # per direction, for TP all-reduces
    source: str  # human label, e.g. "roofline, datasheet h100-sxm"
    # (n_new, prefix) -> seconds of the whole model's prefill on ONE GPU, from a fitted results table
    prefill_fit: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


def resolve_rates(gpu: str | Hardware, calibration: str | None = None, fit: str | None = None,
                  *, spec: ModelSpec | None = None, dtype: str = "bf16") -> Rates:
    """Hardware and time source: the GPU database entry, with peak rates and HBM bandwidth replaced by
    a calibration profile when one is given (memory capacity and links stay the GPU's)."""
    hw = get_gpu(gpu)
    source = f"roofline, datasheet {hw.key}"
    link = hw.interconnect_bytes_per_s
    if calibration:
        cal = load_calibration(calibration)
        hw = dataclasses.replace(hw, peak_flops_per_s=dict(cal.peak_flops_per_s),
                                 hbm_bytes_per_s=cal.hbm_bytes_per_s, kind="calibration",
                                 source=cal.source)
        link = cal.interconnect_bytes_per_s or link
        source = f"roofline, calibration {calibration}"
    rates = Rates(hw=hw, link_bytes_per_s=link, source=source)
    if fit:
        from lcprof.plan.fitted import fitted_rates  # needs lcprof.fit (pandas/scipy)

        rates = fitted_rates(rates, fit, spec=spec, dtype=dtype)
    return rates


def allreduce_s(spec: ModelSpec, tokens, tp, link_bytes_per_s: float | None, dtype: str = "bf16") -> np.ndarray:
    """TP all-reduce time of a forward pass over ``tokens`` tokens (broadcasts tokens against tp)."""
    tokens = np.asarray(tokens, dtype=np.float64)
    tp = np.asarray(tp, dtype=np.float64)
    if np.any(tp > 1) and not link_bytes_per_s:
        raise LcprofError("this GPU has no interconnect bandwidth in the database; TP > 1 needs one")
    if not link_bytes_per_s:
        return np.zeros(np.broadcast(tokens, tp).shape)
    act = tokens * spec.hidden_size * dtype_bytes(activation_dtype(dtype))
    per_allreduce = 2.0 * act * (tp - 1.0) / tp / float(link_bytes_per_s)
    return spec.n_layers * ALLREDUCES_PER_LAYER * per_allreduce


def prefill_1gpu_s(spec: ModelSpec, rates: Rates, n_new, prefix=0, *, dtype: str = "bf16",
                   tile: tuple[int, int] = (128, 128)) -> np.ndarray:
    """Roofline time of a prefill on ONE GPU holding the whole model (arrays broadcast)."""
    n_new, prefix = np.broadcast_arrays(np.atleast_1d(np.asarray(n_new, dtype=np.float64)),
                                        np.asarray(prefix, dtype=np.float64))
    if rates.prefill_fit is not None:
        return np.asarray(rates.prefill_fit(n_new, prefix), dtype=np.float64)
    c = cost(spec, n_new, prefix=prefix, phase="prefill", dtype=dtype, family="tiled", tile=tile, lm_head=True,
             elementwise="fused")
    return np.asarray(roofline(c, rates.hw)["total"], dtype=np.float64)


def prefill_s(spec: ModelSpec, rates: Rates, n_new, prefix=0, *, tp: int = 1, dtype: str = "bf16") -> np.ndarray:
    """Prefill time on a TP replica: one-GPU time (roofline or fitted table) / T + all-reduces."""
    n_new = np.atleast_1d(np.asarray(n_new, dtype=np.float64))
    one = prefill_1gpu_s(spec, rates, n_new, prefix, dtype=dtype)
    return one / tp + allreduce_s(spec, n_new, tp, rates.link_bytes_per_s, dtype)


def chunk_schedule(n_new: int, chunk: int, prefix: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(chunk sizes, prefix before each chunk) of a chunked prefill of n_new tokens after ``prefix``."""
    k = -(-int(n_new) // int(chunk))
    sizes = np.full(k, int(chunk), dtype=np.int64)
    sizes[-1] = int(n_new) - (k - 1) * int(chunk)
    starts = int(prefix) + np.arange(k, dtype=np.int64) * int(chunk)
    return sizes, starts


def chunked_prefill_s(spec: ModelSpec, rates: Rates, n_new: int, chunk: int, prefix: int = 0, *, tp: int = 1,
                      dtype: str = "bf16") -> tuple[float, float]:
    """(total time, longest chunk's time) of a prefill run in chunks of ``chunk`` tokens."""
    sizes, starts = chunk_schedule(n_new, chunk, prefix)
    t = prefill_s(spec, rates, sizes, starts, tp=tp, dtype=dtype)
    return float(np.sum(t)), float(np.max(t))


def last_chunk_s(spec: ModelSpec, rates: Rates, n_total, chunk, *, tp: int = 1, dtype: str = "bf16") -> np.ndarray:
    """Time of the last (largest-prefix) chunk of a prefill of n_total tokens; broadcasts n and chunk."""
    n_total, chunk = np.broadcast_arrays(np.asarray(n_total, dtype=np.int64), np.asarray(chunk, dtype=np.int64))
    size = n_total - chunk * ((n_total - 1) // chunk)  # the last chunk may be partial
    return prefill_s(spec, rates, size, n_total - size, tp=tp, dtype=dtype).reshape(n_total.shape)


def decode_parts(spec: ModelSpec, context, *, tp: int = 1, dtype: str = "bf16", kv_dtype: str = "bf16"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per request at context n: (decode FLOPs per GPU, KV bytes read per GPU) for one new token."""
    ctx = np.atleast_1d(np.asarray(context, dtype=np.float64))
    c = cost(spec, ctx, phase="decode", dtype=dtype, family="useful", lm_head=True, elementwise="fused")
    flops = np.asarray(c.flops["total"], dtype=np.float64) / tp
    kv = kv_bytes(spec, ctx, kv_dtype=kv_dtype, tp=tp).astype(np.float64)
    return flops, kv


def decode_weight_read_bytes(spec: ModelSpec, weights_bytes_per_gpu: float, batch, *, dtype: str = "bf16",
                             tp: int = 1) -> np.ndarray:
    """Weight bytes one decode step reads per GPU: all of them, except routed experts no token visits.

    A MoE layer's batch of B tokens visits at most min(experts, B x experts_per_token) experts (the
    bound when every token picks different ones); the others' weights are not read.
    """
    batch = np.asarray(batch, dtype=np.float64)
    w = np.asarray(weights_bytes_per_gpu, dtype=np.float64)
    if spec.moe is None:
        return w + np.zeros_like(batch)
    e = spec.moe
    moe_layers = sum(1 for layer in spec.layers if layer.moe)
    expert_bytes = (3 if spec.mlp_gated else 2) * spec.hidden_size * e.expert_intermediate_size * dtype_bytes(dtype)
    untouched = np.maximum(0.0, e.n_experts - batch * e.n_active)
    return w - moe_layers * untouched * expert_bytes / np.asarray(tp, dtype=np.float64)


def decode_step_s(spec: ModelSpec, rates: Rates, *, weights_bytes_per_gpu: float, flops_per_gpu,
                  kv_read_bytes_per_gpu, batch, tp: int = 1, dtype: str = "bf16") -> np.ndarray:
    """One decode step of ``batch`` requests whose FLOPs and KV reads (per GPU) are already summed."""
    w = decode_weight_read_bytes(spec, weights_bytes_per_gpu, batch, dtype=dtype, tp=tp)
    mem = (w + np.asarray(kv_read_bytes_per_gpu, dtype=np.float64)) / rates.hw.hbm_bytes_per_s
    comp = np.asarray(flops_per_gpu, dtype=np.float64) / rates.hw.peak(dtype)
    return np.maximum(mem, comp) + allreduce_s(spec, batch, tp, rates.link_bytes_per_s, dtype)
