"""Gated DeltaNet mixer (Qwen3-Next, Qwen3.5): parameters, FLOPs, bytes, state.

    x ─ in_proj_qkvz ─┬─ q, k (Hk x dk), v (Hv x dv) ─ conv1d(K) ─ SiLU ─ l2norm(q, k) ─┐
                      └─ z (Hv x dv) ───────────────────────────────────────────────────┼─ RMSNormGated ─ out_proj
      in_proj_ba ─ beta = sigmoid(b), g = -exp(A_log) softplus(a + dt_bias) ─ delta rule ┘   norm(o) * silu(z)

Per value head (q, k repeated from the Hk key heads when Hv > Hk) with state S (dk x dv), per
token: S <- exp(g) S; S <- S + k (beta (v - S^T k))^T; o = S^T q.

Chunked prefill (chunk L, ``chunk_gated_delta_rule``; lcprof's torch layer runs the same products,
the WY form), per chunk of l tokens and value head, 2 FLOPs per multiply-add:
    K K^T                                    2 l^2 dk
    solve (I + A) [U W] = beta [V, K o e^g]  (dk + dv) l (l - 1)   unit lower-triangular,
                                             A = strict tril(beta K K^T o decay)
    V' = U - W S                             2 l dk dv
    Q K^T                                    2 l^2 dk
    o = (Q o e^g) S + (Q K^T o decay) V'     2 l dk dv + 2 l^2 dv
    S <- e^g_l S + (K o e^(g_l - g))^T V'    2 l dk dv
K K^T, Q K^T and the intra-chunk product are executed over l^2 pairs (l(l+1)/2 causal: useful;
K K^T's strictly lower l(l-1)/2). Decode (n == 1, ``fused_recurrent_gated_delta_rule``): S^T k,
the rank-1 update and S^T q: 6 dk dv per value head.

State per sequence (vLLM ``MambaStateShapeCalculator.gated_delta_net_state_shape``): conv
(2 Hk dk + Hv dv) x (K - 1) and the recurrent Hv x dv x dk, in the model dtype unless
``mamba_ssm_cache_dtype`` (``state_dtype``) says otherwise (``MambaStateDtypeCalculator.
gated_delta_net_state_dtype``, vllm/model_executor/layers/mamba/mamba_utils.py).
No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from lcprof.cost.kinds.common import Op, check_tp, chunk_sums, conv_op, linear, positive_ints, state_dtype_bytes
from lcprof.errors import LcprofError
from lcprof.units import dtype_bytes


@dataclass(frozen=True)
class GatedDeltaNetDims:
    hidden: int
    k_heads: int
    v_heads: int
    k_dim: int
    v_dim: int
    conv_kernel: int = 4
    chunk: int = 64
    eps: float = 1e-6

    kind: ClassVar[str] = "gated_deltanet"
    label: ClassVar[str] = "Gated DeltaNet"

    def __post_init__(self):
        positive_ints(self, ("hidden", "k_heads", "v_heads", "k_dim", "v_dim", "conv_kernel", "chunk"), "Gated DeltaNet")
        if self.v_heads % self.k_heads:
            raise LcprofError(f"Gated DeltaNet: {self.v_heads} value heads are not a multiple of {self.k_heads} key heads")

    @property
    def key_width(self) -> int:
        return self.k_heads * self.k_dim

    @property
    def value_width(self) -> int:
        return self.v_heads * self.v_dim

    @property
    def conv_dim(self) -> int:
        return 2 * self.key_width + self.value_width

    def params(self) -> dict[str, int]:
        h = self.hidden
        p = {
            "in_proj_qkvz": h * (2 * self.key_width + 2 * self.value_width),
            "in_proj_ba": h * 2 * self.v_heads,
            "conv": self.conv_dim * self.conv_kernel,
            "dt_bias": self.v_heads, "A_log": self.v_heads,
            "norm": self.v_dim,  # one RMSNormGated weight shared by the heads
            "out_proj": self.value_width * h,
        }
        p["total"] = sum(p.values())
        return p

    def state_shapes(self, tp: int = 1) -> dict[str, tuple[int, ...]]:
        vh = check_tp(self.v_heads, tp, "Gated DeltaNet value heads")
        check_tp(self.k_heads, tp, "Gated DeltaNet key heads")
        return {"conv": (self.conv_dim // tp, self.conv_kernel - 1), "ssm": (vh, self.v_dim, self.k_dim)}

    def state_bytes(self, dtype: str = "bf16", *, state_dtype: str | None = None, tp: int = 1) -> int:
        sh = self.state_shapes(tp)
        conv = sh["conv"][0] * sh["conv"][1] * dtype_bytes(dtype)
        ssm = int(np.prod(sh["ssm"])) * state_dtype_bytes(dtype, state_dtype)
        return int(round(conv + ssm))

    def ops(self, n, prefix=0, *, batch: int = 1, dtype: str = "bf16", state_dtype: str | None = None) -> list[Op]:
        s = dtype_bytes(dtype)
        ss = state_dtype_bytes(dtype, state_dtype)
        n = np.asarray(n, dtype=np.float64)
        b = float(batch)
        t = b * n
        Hv, dk, dv = self.v_heads, self.k_dim, self.v_dim
        step = n == 1
        _, sq, tri = chunk_sums(n, self.chunk)
        zero = np.zeros_like(t)
        ops = [linear("proj/qkvz", t, self.hidden, 2 * self.key_width + 2 * self.value_width, s),
               linear("proj/ba", t, self.hidden, 2 * Hv, s),
               conv_op(t, b, self.conv_dim, self.conv_kernel, s, s)]
        quad = 2 * b * Hv * dk * sq
        ops.append(Op("mixer/kk", np.where(step, 0.0, quad), np.where(step, 0.0, 2 * b * Hv * dk * (tri - n)), zero))
        solve = b * Hv * (dk + dv) * (sq - n)  # sum over chunks of (dk + dv) l (l - 1)
        ops.append(Op("mixer/solve", np.where(step, 0.0, solve), np.where(step, 0.0, solve), zero))
        ops.append(Op("mixer/qk", np.where(step, 0.0, quad), np.where(step, 0.0, 2 * b * Hv * dk * tri), zero))
        ops.append(Op("mixer/intra_v", np.where(step, 0.0, 2 * b * Hv * dv * sq),
                      np.where(step, 0.0, 2 * b * Hv * dv * tri), zero))
        lin = 2 * t * Hv * dk * dv
        ops.append(Op("mixer/state_read", 2 * lin, 2 * lin, zero))  # W S and (Q o e^g) S; decode: S^T k, S^T q
        ops.append(Op("mixer/state_write", lin, lin, zero))  # (K o e^..)^T V'; decode: the rank-1 update
        # q, k, v (model dtype) and g, beta (fp32) read, o written, the state read and written
        core_io = s * t * (2 * Hv * dk + 2 * Hv * dv) + 8 * t * Hv + 2 * ss * b * Hv * dk * dv
        ops.append(Op("mixer/core_io", zero, zero, core_io))
        ops.append(Op("mixer/norm", zero, zero, s * t * 3 * self.value_width + s * self.v_dim))
        ops.append(linear("proj/out", t, self.value_width, self.hidden, s))
        return ops
