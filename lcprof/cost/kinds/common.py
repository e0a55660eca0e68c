"""Shared pieces of the linear-time mixer kinds: chunk sums, projections, the causal conv, state.

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

No torch.
"""

from __future__ import annotations

import numpy as np

from lcprof.cost.ops import Op, _linear
from lcprof.errors import LcprofError
from lcprof.units import dtype_bytes, dtype_name

__all__ = ["Op", "linear", "chunk_sums", "conv_op", "state_dtype_bytes", "check_tp", "positive_ints"]

linear = _linear


def positive_ints(obj, names: tuple[str, ...], label: str) -> None:
    """Validate dims fields: positive integers (``__post_init__`` of the dims dataclasses)."""
    for nm in names:
        v = getattr(obj, nm)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise LcprofError(f"{label}: {nm} must be a positive integer, got {v!r}")


def chunk_sums(n, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chunks, sum of l^2, sum of l(l+1)/2) over the chunks of n tokens (the last one partial):
    a chunked kernel computes each chunk's full l x l products (executed) of which l(l+1)/2 pairs
    are causal (useful)."""
    n = np.asarray(n, dtype=np.float64)
    q = float(chunk)
    full = np.floor(n / q)
    rem = n - full * q
    chunks = full + (rem > 0)
    return chunks, full * q * q + rem * rem, full * q * (q + 1) / 2 + rem * (rem + 1) / 2


def conv_op(tokens, batch: float, channels: int, kernel: int, s: float, state_s: float) -> Op:
    """Depthwise causal conv1d over ``channels``: 2 * tokens * channels * kernel FLOPs; reads the
    inputs, the weights and the carried (kernel - 1)-token conv state, writes the outputs and the
    new conv state."""
    t = np.asarray(tokens, dtype=np.float64)
    flops = 2.0 * t * channels * kernel
    nbytes = s * (2 * t * channels + channels * kernel) + 2 * state_s * batch * channels * (kernel - 1)
    return Op("mixer/conv", flops, flops, nbytes)


def state_dtype_bytes(dtype: str, override: str | None) -> float:
    """Bytes per state element: ``override`` when given, else the model dtype (vLLM's "auto")."""
    return dtype_bytes(dtype_name(override if override is not None else dtype))


def check_tp(heads: int, tp: int, what: str) -> int:
    if isinstance(tp, bool) or int(tp) != tp or tp <= 0:
        raise LcprofError(f"tensor-parallel degree must be a positive integer, got {tp!r}")
    if heads % tp:
        raise LcprofError(f"TP={tp} does not divide the {heads} {what}; use a divisor of it")
    return heads // tp
