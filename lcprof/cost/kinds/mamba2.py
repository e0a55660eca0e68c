"""Mamba-2 / SSD mixer (Nemotron-H, Falcon-H1, Bamba, Zamba2): parameters, FLOPs, bytes, state.

    x ─ in_proj ─┬─ z ──────────────────────────────────────────────┐
                 ├─ xBC ─ conv1d(K) ─ SiLU ─ x (H x P), B, C (G x N) ├─ gated RMSNorm ─ out_proj
                 └─ dt ─ softplus(dt + dt_bias) ─────────── SSD ─────┘   rmsnorm(y * silu(z))

d_inner = heads x head_dim; conv channels = d_inner + 2 n_groups d_state; in_proj width =
2 d_inner + 2 n_groups d_state + heads. Per head h with state S (head_dim x d_state), per token:
S <- exp(dt A_h) S + dt x B^T, y = S C + D x (B, C shared by the heads of a group).

Chunked prefill (chunk Q, each chunk of l <= Q tokens, as ``mamba_chunk_scan_combined`` and
lcprof's torch layer run it), FLOPs per chunk, 2 per multiply-add:
    C B^T per group                 2 G l^2 N      (l x N) @ (N x l)
    (C B^T o decay o dt) @ x        2 H l^2 P      (l x l) @ (l x P)
    C @ S^T (the carried state)     2 H l P N      (l x N) @ (N x P)
    (x o decay o dt)^T @ B          2 H l P N      (P x l) @ (l x N)  -> the chunk's new state
The first two are quadratic in l: executed l^2, useful (causal) l(l+1)/2. Passing the state from
chunk to chunk is a scale and an add (bytes only).
Decode (n == 1, ``selective_state_update``): the outer product dt x B^T (2 H P N) and the read-out
S C (2 H P N).

State per sequence (vLLM ``MambaStateShapeCalculator.mamba2_state_shape``): conv
(d_inner + 2 G N) x (K - 1) and SSM heads x head_dim x d_state, in the model dtype unless
``mamba_ssm_cache_dtype`` (``state_dtype`` here) says otherwise -- vLLM
vllm/model_executor/layers/mamba/mamba_utils.py (``MambaStateDtypeCalculator``).
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
class Mamba2Dims:
    hidden: int
    heads: int
    head_dim: int
    d_state: int
    n_groups: int = 1
    conv_kernel: int = 4
    chunk: int = 256
    conv_bias: bool = True
    proj_bias: bool = False
    norm_groups: int | None = None  # groups of the gated RMSNorm (mamba_ssm: n_groups); None -> n_groups
    norm: bool = True  # gated RMSNorm (Falcon-H1's mamba_rms_norm=False: y * silu(z) only)
    eps: float = 1e-5

    kind: ClassVar[str] = "mamba2"
    label: ClassVar[str] = "Mamba-2"

    def __post_init__(self):
        positive_ints(self, ("hidden", "heads", "head_dim", "d_state", "n_groups", "conv_kernel", "chunk"), "Mamba-2")
        if self.heads % self.n_groups:
            raise LcprofError(f"Mamba-2: {self.heads} heads are not a multiple of n_groups {self.n_groups}")
        if self.d_inner % self.norm_group_count:
            raise LcprofError(f"Mamba-2: d_inner {self.d_inner} is not a multiple of the norm's groups")

    @property
    def d_inner(self) -> int:
        return self.heads * self.head_dim

    @property
    def norm_group_count(self) -> int:
        return self.n_groups if self.norm_groups is None else self.norm_groups

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.n_groups * self.d_state

    @property
    def in_proj_width(self) -> int:
        return 2 * self.d_inner + 2 * self.n_groups * self.d_state + self.heads

    # ----- parameters -----------------------------------------------------------------------
    def params(self) -> dict[str, int]:
        h, w = self.hidden, self.in_proj_width
        p = {
            "in_proj": h * w + (w if self.proj_bias else 0),
            "conv": self.conv_dim * self.conv_kernel + (self.conv_dim if self.conv_bias else 0),
            "dt_bias": self.heads, "A_log": self.heads, "D": self.heads,
            "norm": self.d_inner if self.norm else 0,
            "out_proj": self.d_inner * h + (h if self.proj_bias else 0),
        }
        p["total"] = sum(p.values())
        return p

    # ----- state --------------------------------------------------------------------------
    def state_shapes(self, tp: int = 1) -> dict[str, tuple[int, ...]]:
        """Per sequence on one of ``tp`` ranks (heads, and the groups, split; vLLM replicates
        groups when tp does not divide them: ``extra_groups_for_head_shards``)."""
        heads = check_tp(self.heads, tp, "Mamba-2 heads")
        groups = self.n_groups + (0 if self.n_groups % tp == 0 else tp - self.n_groups)
        conv = (self.d_inner + 2 * groups * self.d_state) // tp
        return {"conv": (conv, self.conv_kernel - 1), "ssm": (heads, self.head_dim, self.d_state)}

    def state_bytes(self, dtype: str = "bf16", *, state_dtype: str | None = None, tp: int = 1) -> int:
        """Conv state in ``dtype``, SSM state in ``state_dtype`` (default ``dtype``), per sequence."""
        sh = self.state_shapes(tp)
        conv = sh["conv"][0] * sh["conv"][1] * dtype_bytes(dtype)
        ssm = int(np.prod(sh["ssm"])) * state_dtype_bytes(dtype, state_dtype)
        return int(round(conv + ssm))

    # ----- FLOPs and bytes ----------------------------------------------------------------------
    def ops(self, n, prefix=0, *, batch: int = 1, dtype: str = "bf16", state_dtype: str | None = None) -> list[Op]:
        s = dtype_bytes(dtype)
        ss = state_dtype_bytes(dtype, state_dtype)
        n = np.asarray(n, dtype=np.float64)
        b = float(batch)
        t = b * n
        H, P, N, G = self.heads, self.head_dim, self.d_state, self.n_groups
        step = n == 1  # the recurrent decode kernel; chunked otherwise
        chunks, sq, tri = chunk_sums(n, self.chunk)
        state_elems = b * H * P * N
        ops = [linear("proj/in", t, self.hidden, self.in_proj_width, s),
               conv_op(t, b, self.conv_dim, self.conv_kernel, s, s)]
        # inputs x, B, C (model dtype) and dt (fp32) read; y written; state read and written;
        # the chunked kernels also write each chunk's state (fp32) and read it back
        core_io = s * t * (self.d_inner + 2 * G * N) + 4 * t * H + s * t * self.d_inner + 2 * ss * state_elems
        chunk_states = np.where(step, 0.0, 2 * 4 * chunks * state_elems)
        cb_exec = np.where(step, 0.0, 2 * b * G * N * sq)
        cb_use = np.where(step, 0.0, 2 * b * G * N * tri)
        cb_bytes = np.where(step, 0.0, 2 * 4 * b * G * sq)  # C B^T written and read (fp32)
        ops.append(Op("mixer/intra_cb", cb_exec, cb_use, cb_bytes))
        x_exec = np.where(step, 0.0, 2 * b * H * P * sq)
        x_use = np.where(step, 0.0, 2 * b * H * P * tri)
        zero = np.zeros_like(t)
        ops.append(Op("mixer/intra_x", x_exec, x_use, zero))
        lin = 2 * t * H * P * N
        ops.append(Op("mixer/state_read", lin, lin, zero))  # C S^T (decode: S C)
        ops.append(Op("mixer/state_write", lin, lin, zero))  # x^T B (decode: dt x B^T)
        ops.append(Op("mixer/core_io", zero, zero, core_io + chunk_states))
        ops.append(Op("mixer/norm", zero, zero,
                      s * t * 3 * self.d_inner + (s * self.d_inner if self.norm else 0)))  # read y, z; write
        ops.append(linear("proj/out", t, self.d_inner, self.hidden, s))
        return ops
