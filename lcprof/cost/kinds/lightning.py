"""Lightning attention (MiniMax-Text-01 / MiniMax-M1): linear attention with a per-head decay.

    x ─ qkv_proj ─ SiLU ─ q, k, v (H x d) ─ linear attention with decay ─ RMSNorm(H d) ─┐
    x ─ output_gate ─ sigmoid ───────────────────────────────────────────────────────── x ─ out_proj

Per head with state KV (d x d) and decay lambda = exp(-slope_h), per token: KV <- lambda KV +
k^T v, o = q KV (no softmax, no denominator: the output RMSNorm does the scaling). transformers'
``MiniMaxLightningAttention`` and lcprof's torch layer run it per block of B tokens (l <= B):
    intra:   (Q K^T o lambda^(t-s), causal) @ V      2 l^2 d + 2 l^2 d
    inter:   (Q o lambda^(t+1)) @ KV                  2 l d^2
    update:  KV <- lambda^l KV + (K o lambda^(l-1-s))^T V   2 l d^2
Decode (n == 1): k^T v and q KV, 4 d^2 per head.

State per sequence (vLLM ``linear_attention_state_shape``): heads x d x d in the model dtype
(``MambaStateDtypeCalculator.linear_attention_state_dtype``); no conv state.
No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from lcprof.cost.kinds.common import Op, check_tp, chunk_sums, linear, positive_ints, state_dtype_bytes
from lcprof.units import dtype_bytes


@dataclass(frozen=True)
class LightningDims:
    hidden: int
    heads: int
    head_dim: int
    block: int = 256
    eps: float = 1e-6

    kind: ClassVar[str] = "lightning"
    label: ClassVar[str] = "lightning attention"

    def __post_init__(self):
        positive_ints(self, ("hidden", "heads", "head_dim", "block"), "lightning attention")

    @property
    def width(self) -> int:
        return self.heads * self.head_dim

    def params(self) -> dict[str, int]:
        h, w = self.hidden, self.width
        p = {"qkv_proj": 3 * h * w, "output_gate": h * w, "norm": w, "out_proj": w * h}
        p["total"] = sum(p.values())
        return p

    def state_shapes(self, tp: int = 1) -> dict[str, tuple[int, ...]]:
        return {"ssm": (check_tp(self.heads, tp, "lightning-attention heads"), self.head_dim, self.head_dim)}

    def state_bytes(self, dtype: str = "bf16", *, state_dtype: str | None = None, tp: int = 1) -> int:
        return int(round(int(np.prod(self.state_shapes(tp)["ssm"])) * state_dtype_bytes(dtype, state_dtype)))

    def ops(self, n, prefix=0, *, batch: int = 1, dtype: str = "bf16", state_dtype: str | None = None) -> list[Op]:
        s = dtype_bytes(dtype)
        ss = state_dtype_bytes(dtype, state_dtype)
        n = np.asarray(n, dtype=np.float64)
        b = float(batch)
        t = b * n
        H, d = self.heads, self.head_dim
        step = n == 1
        _, sq, tri = chunk_sums(n, self.block)
        zero = np.zeros_like(t)
        ops = [linear("proj/qkv", t, self.hidden, 3 * self.width, s),
               linear("proj/gate", t, self.hidden, self.width, s)]
        ops.append(Op("mixer/qk", np.where(step, 0.0, 2 * b * H * d * sq), np.where(step, 0.0, 2 * b * H * d * tri), zero))
        ops.append(Op("mixer/intra_v", np.where(step, 0.0, 2 * b * H * d * sq),
                      np.where(step, 0.0, 2 * b * H * d * tri), zero))
        lin = 2 * t * H * d * d
        ops.append(Op("mixer/state_read", lin, lin, zero))
        ops.append(Op("mixer/state_write", lin, lin, zero))
        core_io = s * t * 4 * self.width + 2 * ss * b * H * d * d  # q, k, v read, o written; state
        ops.append(Op("mixer/core_io", zero, zero, core_io))
        # SiLU on qkv (read, write), RMSNorm (read, write, weight), sigmoid gate (read, write) and
        # the gate product (read 2, write 1)
        ops.append(Op("mixer/norm", zero, zero, s * t * (6 + 2 + 2 + 3) * self.width + s * self.width))
        ops.append(linear("proj/out", t, self.width, self.hidden, s))
        return ops
