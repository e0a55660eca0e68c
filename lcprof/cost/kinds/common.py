"""Shared pieces of the linear-time mixer kinds: chunk sums, projections, the causal conv, state.

The shapes come from the spec (``lcprof.spec.mixers``: ``linears()``, ``other_params()``,
``state_elements()``, the one source of each kind's parameters and state); this package prices them.

FLOPs count 2 per multiply-add of the contractions a mixer runs -- projections, the depthwise
causal convolution, the chunked matrix products, and the recurrent step's outer-product update and
state read-out (each a matrix product with an inner dimension of 1 or of the state). Elementwise
work (decays, gates, softplus, SiLU, norms, the state-passing scale between chunks) is charged to
bytes only, as for attention layers. This is also what ``torch.utils.flop_counter.FlopCounterMode``
counts on lcprof's measured layers (mm/bmm and convolution), except the triangular solve Gated
DeltaNet's chunked form runs (FlopCounterMode has no formula for ``linalg_solve_triangular``).

A work item is ``n`` new tokens per sequence after ``prefix`` tokens already folded into the
state, for ``batch`` sequences. ``n == 1`` runs the recurrent step (the decode kernels:
``selective_state_update``, ``fused_recurrent_gated_delta_rule``); ``n > 1`` runs the chunked
form from the carried state (``mamba_chunk_scan_combined``, ``chunk_gated_delta_rule``). The prefix
changes nothing but the state the step starts from: cost is independent of it.

Bytes are the traffic of the engines' fused kernels (inputs read once, outputs and the state
written once; the chunked kernels' per-chunk states), a model, not a count of lcprof's unfused
torch layer: ``--elementwise`` does not change a mixer's bytes.

No torch.
"""

from __future__ import annotations

import numpy as np

from lcprof.cost.ops import Op, _linear
from lcprof.errors import LcprofError
from lcprof.units import dtype_bytes, dtype_name

__all__ = ["Op", "chunk_sums", "conv_op", "proj_ops", "state_bytes_of", "state_dtype_bytes", "check_tp"]


def proj_ops(mixer, tokens, s: float) -> list[Op]:
    """One op per projection of the spec (``mixer/<name>``): 2 * tokens * d_in * d_out FLOPs."""
    return [_linear(f"mixer/{lin.name}", tokens, lin.d_in, lin.d_out, s) for lin in mixer.linears()]


def chunk_sums(n, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chunks, sum of l^2, sum of l(l+1)/2) over the chunks of n tokens (the last one partial):
    a chunked kernel computes each chunk's full l x l products (executed) of which l(l+1)/2 pairs
    are causal (useful)."""
    if isinstance(chunk, bool) or int(chunk) != chunk or chunk <= 0:
        raise LcprofError(f"chunk size must be a positive integer, got {chunk!r}")
    n = np.asarray(n, dtype=np.float64)
    q = float(chunk)
    full = np.floor(n / q)
    rem = n - full * q
    chunks = full + (rem > 0)
    return chunks, full * q * q + rem * rem, full * q * (q + 1) / 2 + rem * (rem + 1) / 2


def conv_op(tokens, batch: float, channels: int, kernel: int, s: float) -> Op:
    """Depthwise causal conv1d over ``channels``: 2 * tokens * channels * kernel FLOPs; reads the
    inputs, the weights and the carried (kernel - 1)-token conv state, writes the outputs and the
    new conv state."""
    t = np.asarray(tokens, dtype=np.float64)
    flops = 2.0 * t * channels * kernel
    nbytes = s * (2 * t * channels + channels * kernel) + 2 * s * batch * channels * (kernel - 1)
    return Op("mixer/conv", flops, flops, nbytes)


def state_dtype_bytes(dtype: str, override: str | None) -> float:
    """Bytes per state element: ``override`` when given, else the model dtype (vLLM's "auto")."""
    return dtype_bytes(dtype_name(override if override is not None else dtype))


def state_bytes_of(elements: dict[str, int], dtype: str, state_dtype: str | None) -> int:
    """Bytes of a mixer's state: the conv state in the model dtype (vLLM's ``mamba_cache_dtype``
    "auto"), the recurrent state in ``state_dtype`` (``mamba_ssm_cache_dtype``), default the model
    dtype (vllm/model_executor/layers/mamba/mamba_utils.py, ``MambaStateDtypeCalculator``)."""
    total = 0.0
    for name, count in elements.items():
        total += count * (dtype_bytes(dtype) if name == "conv" else state_dtype_bytes(dtype, state_dtype))
    return int(round(total))


def check_tp(count: int, tp: int, what: str) -> int:
    if isinstance(tp, bool) or int(tp) != tp or tp <= 0:
        raise LcprofError(f"tensor-parallel degree must be a positive integer, got {tp!r}")
    if count % tp:
        raise LcprofError(f"TP={tp} does not divide the {count} {what}; use a divisor of it")
    return count // tp


def step_scalars(n, batch: int, dtype: str, state_dtype: str | None):
    """What every kind's ``activation_steps`` starts from: (s, ss, c, low, n, b, t) -- bytes per
    element of the activations, of the recurrent state, of the measured layers' float32 core, whether
    the dtype is below 4 bytes, n as a float array, the batch and the tokens b x n."""
    s = dtype_bytes(dtype)
    c = core_bytes(s)
    n = np.atleast_1d(np.asarray(n, dtype=np.float64))
    b = float(batch)
    return s, state_dtype_bytes(dtype, state_dtype), c, s < 4, n, b, b * n


def core_bytes(s: float) -> float:
    """Bytes per element of the recurrent core of lcprof's measured layers: float32 for fp16/bf16
    (as the kernels accumulate), the dtype itself otherwise."""
    return 4.0 if s < 4 else s


def gated_norm_steps(post, tokens, width: int, groups: int, s: float, *, norm: bool,
                     norm_first: bool) -> dict[str, np.ndarray]:
    """Bytes live in ``lcprof.measure.mixers.common.gated_rmsnorm`` over y (tokens x width) with
    gate z, on top of ``post`` (what lives around it, y and z included): copies of y and z to
    float32 for fp16/bf16, silu(z), y * silu(z), the squares, the per-group mean and rsqrt, the
    normalized product, its cast back and the weight product; ``norm_first`` gates after.
    Without a norm: silu(z) and y * silu(z)."""
    t = np.asarray(tokens, dtype=np.float64)
    y = t * width
    low = s < 4
    c = core_bytes(s)
    if not norm:
        return {"mixer/gate": post + 2 * s * y}
    out: dict[str, np.ndarray] = {}
    if norm_first:
        h = c * y if low else 0.0  # the float32 copy of y (y itself otherwise)
    else:
        out["mixer/norm_gate"] = post + (2 * c * y if low else 0.0) + c * y  # copies of y, z; silu(z)
        out["mixer/norm_gated"] = post + (c * y if low else 0.0) + 2 * c * y  # (old y copy), silu(z), y*silu(z)
        h = c * y
    out["mixer/norm_square"] = post + h + c * y + c * t * groups  # squares, then their mean
    out["mixer/norm_scale"] = post + h + 2 * c * t * groups + c * y  # mean, rsqrt, normalized
    out["mixer/norm_weight"] = post + c * y + (s * y if low else 0.0) + s * y  # normalized, its cast, out
    if norm_first:
        out["mixer/norm_gate"] = post + 3 * s * y  # out, silu(z), out * silu(z)
    return out
