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

from lcprof.cost.kinds.common import Op, check_tp, conv_op, proj_ops, state_bytes_of, state_dtype_bytes
from lcprof.units import dtype_bytes


def state_elements(m, tp: int = 1) -> dict[str, int]:
    if tp == 1:
        return m.state_elements()
    di = check_tp(m.d_inner, tp, "Mamba inner channels")
    return {"conv": (m.d_conv - 1) * di, "ssm": di * m.d_state}


def state_bytes(m, dtype: str = "bf16", *, state_dtype: str | None = None, tp: int = 1) -> int:
    return state_bytes_of(state_elements(m, tp), dtype, state_dtype)


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
