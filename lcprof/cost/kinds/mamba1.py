"""Mamba-1 selective-scan mixer (Jamba, Falcon-Mamba, Mamba): parameters, FLOPs, bytes, state.

    x ─ in_proj ─┬─ x ─ conv1d(K) ─ SiLU ─ x_proj ─ dt (R), B, C (N) ─ dt_proj ─ softplus ─ scan ─┐
                 └─ z ──────────────────────────────────────────────────────────────── y * silu(z) ─ out_proj

Per channel c of d_inner with state S_c (N), per token: S_c <- exp(dt_c A_c) S_c + dt_c x_c B;
y_c = S_c . C + D_c x_c. The scan is sequential in the token (mamba_ssm's ``selective_scan_fn``
keeps it in SRAM; lcprof's torch layer loops over tokens): per token the outer product
(dt o x) B^T (2 d_inner N) and the read-out S C (2 d_inner N), for prefill and decode alike.
Jamba normalizes dt, B and C (RMSNorms with weights: ``bcdt_norm``); Falcon-Mamba does without
weights (``bcdt_norm_weights=False``).

State per sequence (vLLM ``mamba1_state_shape``): conv d_inner x (K - 1) and SSM d_inner x N, in
the model dtype unless ``mamba_ssm_cache_dtype`` (``state_dtype``) says otherwise.
No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from lcprof.cost.kinds.common import Op, check_tp, conv_op, linear, positive_ints, state_dtype_bytes
from lcprof.units import dtype_bytes


@dataclass(frozen=True)
class Mamba1Dims:
    hidden: int
    d_inner: int
    d_state: int = 16
    conv_kernel: int = 4
    dt_rank: int | None = None  # None: ceil(hidden / 16), as transformers
    conv_bias: bool = True
    proj_bias: bool = False
    bcdt_norm: bool = False
    bcdt_norm_weights: bool = True
    eps: float = 1e-6

    kind: ClassVar[str] = "mamba"
    label: ClassVar[str] = "Mamba"

    def __post_init__(self):
        positive_ints(self, ("hidden", "d_inner", "d_state", "conv_kernel"), "Mamba")
        if self.dt_rank is not None:
            positive_ints(self, ("dt_rank",), "Mamba")

    @property
    def rank(self) -> int:
        return self.dt_rank if self.dt_rank is not None else -(-self.hidden // 16)

    def params(self) -> dict[str, int]:
        h, di, N, R = self.hidden, self.d_inner, self.d_state, self.rank
        p = {
            "in_proj": h * 2 * di + (2 * di if self.proj_bias else 0),
            "conv": di * self.conv_kernel + (di if self.conv_bias else 0),
            "x_proj": di * (R + 2 * N),
            "dt_proj": R * di + di,
            "A_log": di * N, "D": di,
            "bcdt_norm": (R + 2 * N) if (self.bcdt_norm and self.bcdt_norm_weights) else 0,
            "out_proj": di * h + (h if self.proj_bias else 0),
        }
        p["total"] = sum(p.values())
        return p

    def state_shapes(self, tp: int = 1) -> dict[str, tuple[int, ...]]:
        di = check_tp(self.d_inner, tp, "Mamba inner channels")
        return {"conv": (di, self.conv_kernel - 1), "ssm": (di, self.d_state)}

    def state_bytes(self, dtype: str = "bf16", *, state_dtype: str | None = None, tp: int = 1) -> int:
        sh = self.state_shapes(tp)
        conv = sh["conv"][0] * sh["conv"][1] * dtype_bytes(dtype)
        return int(round(conv + sh["ssm"][0] * sh["ssm"][1] * state_dtype_bytes(dtype, state_dtype)))

    def ops(self, n, prefix=0, *, batch: int = 1, dtype: str = "bf16", state_dtype: str | None = None) -> list[Op]:
        s = dtype_bytes(dtype)
        ss = state_dtype_bytes(dtype, state_dtype)
        n = np.asarray(n, dtype=np.float64)
        b = float(batch)
        t = b * n
        h, di, N, R = self.hidden, self.d_inner, self.d_state, self.rank
        zero = np.zeros_like(t)
        ops = [linear("proj/in", t, h, 2 * di, s),
               conv_op(t, b, di, self.conv_kernel, s, s),
               linear("proj/x", t, di, R + 2 * N, s),
               linear("proj/dt", t, R, di, s)]
        lin = 2 * t * di * N
        ops.append(Op("mixer/state_write", lin, lin, zero))  # (dt o x) B^T
        ops.append(Op("mixer/state_read", lin, lin, zero))  # S C
        # x, dt, z (model dtype) and B, C read, y written; the state read and written once
        core_io = s * t * (4 * di + 2 * N) + 2 * ss * b * di * N
        ops.append(Op("mixer/core_io", zero, zero, core_io))
        ops.append(linear("proj/out", t, di, h, s))
        return ops
