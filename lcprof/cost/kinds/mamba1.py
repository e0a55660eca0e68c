"""Mamba-1 selective-scan mixer (Jamba, Falcon-Mamba, Mamba): FLOPs, bytes, state of a ``MambaSpec``.

    x ─ in_proj ─┬─ x ─ conv1d(K) ─ SiLU ─ x_proj ─ dt (R), B, C (N) ─ dt_proj ─ softplus ─ scan ─┐
                 └─ z ──────────────────────────────────────────────────────────────── y * silu(z) ─ out_proj

Per channel c of d_inner with state S_c (N), per token: S_c <- exp(dt_c A_c) S_c + dt_c x_c B;
y_c = S_c . C + D_c x_c. The scan is sequential in the token (mamba_ssm's ``selective_scan_fn``
keeps it in SRAM; lcprof's torch layer loops over tokens): per token the outer product
(dt o x) B^T (2 d_inner N) and the read-out S C (2 d_inner N), for prefill and decode alike.
Jamba normalizes dt, B and C (RMSNorms with weights: ``bcdt_norm="weighted"``); Falcon-Mamba does
without weights (``"unweighted"``).

State per sequence (vLLM ``mamba1_state_shape``): conv d_inner x (K - 1) and SSM d_inner x N, in
the model dtype unless ``mamba_ssm_cache_dtype`` (``state_dtype``) says otherwise.
No torch.
"""

from __future__ import annotations

import numpy as np

from lcprof.cost.kinds.common import Op, check_tp, conv_op, core_bytes, proj_ops, state_dtype_bytes, step_scalars
from lcprof.units import dtype_bytes


def state_elements(m, tp: int = 1) -> dict[str, int]:
    if tp == 1:
        return m.state_elements()
    di = check_tp(m.d_inner, tp, "Mamba inner channels")
    return {"conv": (m.d_conv - 1) * di, "ssm": di * m.d_state}


def ops(m, n, prefix=0, *, batch: int = 1, dtype: str = "bf16", state_dtype: str | None = None,
        chunk: int | None = None) -> list[Op]:
    s = dtype_bytes(dtype)
    ss = state_dtype_bytes(dtype, state_dtype)
    n = np.asarray(n, dtype=np.float64)
    b = float(batch)
    t = b * n
    di, N = m.d_inner, m.d_state
    zero = np.zeros_like(t)
    in_proj, x_proj, dt_proj, out_proj = proj_ops(m, t, s)
    out = [in_proj, conv_op(t, b, di, m.d_conv, s), x_proj, dt_proj]
    lin = 2 * t * di * N
    out.append(Op("mixer/state_write", lin, lin, zero))  # (dt o x) B^T
    out.append(Op("mixer/state_read", lin, lin, zero))  # S C
    # x, dt, z, y (model dtype) and B, C read or written; the state read and written once
    core_io = s * t * (4 * di + 2 * N) + 2 * ss * b * di * N
    out.append(Op("mixer/core_io", zero, zero, core_io))
    out.append(out_proj)
    return out


def _rms_peak(width: int, t, s: float, weighted: bool) -> np.ndarray:
    """Transient bytes of one of the dt/B/C RMSNorms over ``width``: the float32 copy of its input
    (fp16/bf16; it lives through the norm), the squares and their mean, the scaled product, its cast
    back and, with weights (Jamba), the weighted result."""
    c = core_bytes(s)
    y = t * width
    copy = c * y if s < 4 else 0.0 * y
    cast = s * y if s < 4 else 0.0 * y  # fp32: the scaled product is the result
    peaks = [copy + c * y + c * t, copy + c * y + cast]
    if weighted:
        peaks.append(copy + 2 * s * y)
    return np.maximum.reduce(peaks)


def activation_steps(m, n, *, batch: int = 1, dtype: str = "bf16", prefix=0, chunk: int | None = None,
                     state_dtype: str | None = None) -> dict[str, np.ndarray]:
    """Bytes live at each memory-heavy step of lcprof's measured Mamba layer
    (``lcprof.measure.mixers.mamba1``) over n new tokens: the input, in_proj's output, the conv
    window and output, x_proj (a batched product over the transposed conv output: no copy of it),
    Jamba's dt/B/C norms, dt, A, the
    state and the output buffer; one token's decay and outer-product update inside the scan; then
    the gate and out_proj. Weights and the carried-in state are not counted. Arrays over n."""
    s, ss, c, low, n, b, t = step_scalars(n, batch, dtype, state_dtype)
    di, N, R, K = m.d_inner, m.d_state, m.dt_rank, m.d_conv
    S_el = b * di * N
    X, XZ = s * t * m.hidden_size, s * t * 2 * di
    cs = s * b * di * (K - 1)
    st: dict[str, np.ndarray] = {"mixer/in_proj": X + XZ,
                                 "mixer/conv": X + XZ + s * b * di * (n + K - 1) + cs + s * t * di}
    base0 = X + XZ + s * t * di + cs
    dbc = s * t * (R + 2 * N)
    st["mixer/x_proj"] = base0 + dbc
    normed = 0.0
    if m.bcdt_norm != "none":
        for i, width in enumerate((R, N, N)):
            st[f"mixer/bcdt_norm{i}"] = base0 + dbc + normed + _rms_peak(width, t, s, m.bcdt_norm == "weighted")
            normed = normed + s * t * width
    pre = base0 + dbc + normed
    st["mixer/dt"] = pre + 2 * c * t * di
    st["mixer/A"] = pre + c * t * di + 2 * c * di * N
    loop = pre + c * t * di + c * di * N + (c * di if low else 0.0) + c * S_el + s * t * di
    xt = c * b * di if low else 0.0
    st["mixer/scan_decay"] = loop + xt + 2 * c * S_el
    st["mixer/scan_update"] = loop + xt + c * b * di + (c * b * N if low else 0.0) + c * S_el
    post = X + XZ + cs + ss * S_el + s * t * di
    st["mixer/state_out"] = post + (c * S_el if ss != c else 0.0)
    st["mixer/gate"] = post + 2 * s * t * di
    st["mixer/out_proj"] = X + cs + ss * S_el + s * t * di + s * t * m.hidden_size
    return st
