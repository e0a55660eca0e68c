"""A real Mamba-2 (SSD) mixer from explicit dims, chunked as the Triton kernels run it.

See :mod:`lcprof.cost.kinds.mamba2` for the layer's diagram and FLOP formulas; this module runs
exactly those products (one ``bmm`` each, per chunk, batched over batch x heads or groups):

    per chunk of l tokens (head-major, core dtype):  acum = cumsum(dt * A)          (b, H, l)
    decay[t, s] = exp(acum_t - acum_s) * dt_s for s <= t, else 0                    (b, H, l, l)
    y  = (decay o (C B^T)) @ x  +  exp(acum) o (C @ S^T)  +  D x                    (b, H, l, P)
    S <- exp(acum_l) S  +  (x o exp(acum_l - acum) dt)^T @ B                        (b, H, P, N)

n == 1 runs the recurrent step instead (decode): S <- exp(dt A) S + (dt x) B^T; y = S C + D x.
The state is carried in ``state_dtype`` (default: the layer's dtype, vLLM's "auto") and computed
in float32 for fp16/bf16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lcprof.measure.mixer_backends import get_mixer_backend
from lcprof.measure.mixers.common import (MixerState, causal_conv, core_dtype, fill_linear_weights, gated_rmsnorm,
                                          gather, materialize, upper_mask)
from lcprof.measure.tensor_audit import mark


class Mamba2Mixer(nn.Module):
    """x (batch, m, hidden) -> (batch, m, hidden), with the carried :class:`MixerState`."""

    def __init__(self, spec, *, chunk: int | None = None, eps: float = 1e-5, seed: int = 0, backend: str = "torch",
                 materialize_weights: bool = True) -> None:
        super().__init__()
        self.spec = d = spec  # a lcprof.spec.Mamba2Spec
        self.backend = get_mixer_backend(backend, d.kind).name
        self.chunk = int(chunk or d.chunk_size)
        self.eps = eps
        in_proj, out_proj = d.linears()
        with torch.device("meta"):
            self.in_proj = nn.Linear(in_proj.d_in, in_proj.d_out, bias=in_proj.bias)
            self.conv_weight = nn.Parameter(torch.empty(d.conv_dim, 1, d.d_conv))
            self.conv_bias = nn.Parameter(torch.empty(d.conv_dim)) if d.conv_bias else None
            self.dt_bias = nn.Parameter(torch.empty(d.n_heads))
            self.A_log = nn.Parameter(torch.empty(d.n_heads))
            self.D = nn.Parameter(torch.empty(d.n_heads))
            self.norm_weight = nn.Parameter(torch.empty(d.d_inner)) if d.norm else None
            self.out_proj = nn.Linear(out_proj.d_in, out_proj.d_out, bias=out_proj.bias)
        self._masks: dict = {}
        if materialize_weights:
            materialize(self)
            self._init(seed)

    @torch.no_grad()
    def _init(self, seed: int) -> None:
        g = torch.Generator().manual_seed(int(seed) * 7919 + 2)
        fill_linear_weights(self, g, skip=("dt_bias", "A_log", "D"))
        h = self.spec.n_heads
        # A in [1, 16] (Mamba-2's init); dt in [1e-3, 1e-1] log-uniform, stored as softplus^-1
        self.A_log.copy_(torch.log(1 + 15 * torch.rand(h, generator=g)))
        dt = torch.exp(torch.rand(h, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.D.fill_(1.0)

    def empty_state(self, batch: int, *, dtype=None, device=None) -> MixerState:
        d = self.spec
        p = self.in_proj.weight
        dtype, device = dtype or p.dtype, device or p.device
        return MixerState(torch.zeros(batch, d.conv_dim, d.d_conv - 1, dtype=dtype, device=device),
                          torch.zeros(batch, d.n_heads, d.head_dim, d.d_state, dtype=dtype, device=device))

    def _upper(self, l: int, device) -> torch.Tensor:
        return upper_mask(self._masks, l, device)

    def forward(self, x: torch.Tensor, state: MixerState | None = None, *,
                state_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, MixerState]:
        d = self.spec
        b, m, _ = x.shape
        H, P, N, G, di = d.n_heads, d.head_dim, d.d_state, d.n_groups, d.d_inner
        zxbcdt = self.in_proj(x)  # (b, m, 2 di + 2 G N + H)
        mark("mixer/in_proj")
        z = zxbcdt[..., :di]
        conv, conv_state = causal_conv(zxbcdt[..., di:di + d.conv_dim], self.conv_weight, self.conv_bias,
                                       None if state is None else state.conv)
        xbc = conv.transpose(1, 2)  # (b, m, conv_dim) view
        sc = core_dtype(x.dtype)
        A = -torch.exp(self.A_log.to(sc))  # (H,)
        dt = F.softplus(zxbcdt[..., di + d.conv_dim:].to(sc) + self.dt_bias.to(sc))  # (b, m, H)
        mark("mixer/dt")
        Dv = self.D.to(sc)
        S = torch.zeros(b, H, P, N, dtype=sc, device=x.device) if state is None else gather(state.ssm, (b, H, P, N), sc)
        y = torch.empty(b, m, H, P, dtype=x.dtype, device=x.device)
        if self.backend == "mamba-ssm":
            S = self._mamba_ssm(xbc, dt, A, Dv, S, y)
        elif m == 1:
            self._step(xbc, dt, A, Dv, S, y)
        else:
            self._chunks(xbc, dt, A, Dv, S, y)
        del xbc, conv, dt, A, Dv
        out_dtype = state_dtype or x.dtype
        new_state = MixerState(conv_state, S.to(out_dtype))
        mark("mixer/state_out")
        del S
        yv = y.view(b, m, di)
        if d.norm:
            g = gated_rmsnorm(yv, z, self.norm_weight, G, self.eps, norm_first=d.norm_before_gate)
        else:
            g = yv * F.silu(z)
            mark("mixer/gate")
        del y, yv, z, zxbcdt
        out = self.out_proj(g)
        mark("mixer/out_proj")
        return out, new_state

    def _mamba_ssm(self, xbc, dt, A, Dv, S, y) -> torch.Tensor:
        """The core on mamba_ssm's kernels (SSD chunk scan; selective_state_update for decode)."""
        from lcprof.measure.mixer_backends import mamba_ssm_ssd, mamba_ssm_state_update

        d = self.spec
        b, m, _ = xbc.shape
        H, P, N, G, di = d.n_heads, d.head_dim, d.d_state, d.n_groups, d.d_inner
        xc = xbc.contiguous()  # (b, m, conv_dim)
        xh = xc[..., :di].reshape(b, m, H, P)
        Bm = xc[..., di:di + G * N].reshape(b, m, G, N)
        Cm = xc[..., di + G * N:].reshape(b, m, G, N)
        if m == 1:
            y[:, 0] = mamba_ssm_state_update(S, xh[:, 0], dt[:, 0], A, Bm[:, 0], Cm[:, 0], Dv)
            return S
        out, final = mamba_ssm_ssd(xh, dt, A, Bm, Cm, Dv, S, self.chunk)
        y.copy_(out)
        return final

    def _step(self, xbc, dt, A, Dv, S, y) -> None:
        """One token: S <- exp(dt A) S + (dt x) B^T, y = S C + D x (per group of heads)."""
        d = self.spec
        b = xbc.shape[0]
        H, P, N, G, di = d.n_heads, d.head_dim, d.d_state, d.n_groups, d.d_inner
        hg = H // G
        sc = S.dtype
        xh = gather(xbc[:, 0, :di].reshape(b, H, P), (b, H, P), sc)
        Bg = gather(xbc[:, 0, di:di + G * N].reshape(b, G, 1, N), (b, G, 1, N), sc)
        Cg = gather(xbc[:, 0, di + G * N:].reshape(b, G, N, 1), (b, G, N, 1), sc)
        dt1 = dt[:, 0]  # (b, H)
        S.mul_(torch.exp(dt1 * A)[..., None, None])
        u = (xh * dt1[..., None]).view(b, G, hg * P, 1)
        S.view(b, G, hg * P, N).add_(u @ Bg)  # outer product: 2 b H P N
        del u
        yh = S.view(b, G, hg * P, N) @ Cg  # (b, G, hg P, 1): 2 b H P N
        yh = yh.view(b, H, P).addcmul_(xh, Dv[:, None])
        y[:, 0] = yh
        mark("mixer/step")  # the update's segment holds the read-out too (less)

    def _chunks(self, xbc, dt, A, Dv, S, y) -> None:
        d = self.spec
        b, m, _ = xbc.shape
        H, P, N, G, di = d.n_heads, d.head_dim, d.d_state, d.n_groups, d.d_inner
        hg = H // G
        sc = S.dtype
        for t0 in range(0, m, self.chunk):
            t1 = min(t0 + self.chunk, m)
            l = t1 - t0
            xh = gather(xbc[:, t0:t1, :di].reshape(b, l, H, P).permute(0, 2, 1, 3), (b, H, l, P), sc)
            Bg = gather(xbc[:, t0:t1, di:di + G * N].reshape(b, l, G, N).permute(0, 2, 1, 3), (b, G, l, N), sc)
            Cg = gather(xbc[:, t0:t1, di + G * N:].reshape(b, l, G, N).permute(0, 2, 1, 3), (b, G, l, N), sc)
            dth = dt[:, t0:t1].transpose(1, 2)  # (b, H, l) view
            acum = torch.cumsum(dth * A[:, None], dim=-1)  # (b, H, l)
            # intra-chunk: decay o (C B^T) o dt_s, causal, then @ x
            L = acum[..., :, None] - acum[..., None, :]  # (b, H, l, l)
            L.masked_fill_(self._upper(l, L.device), float("-inf")).exp_().mul_(dth[..., None, :])
            cb = Cg @ Bg.transpose(-1, -2)  # (b, G, l, l): 2 b G l^2 N
            mark("mixer/chunk_cb")
            L.view(b, G, hg, l, l).mul_(cb[:, :, None])
            del cb
            yc = L @ xh  # (b, H, l, P): 2 b H l^2 P
            mark("mixer/chunk_intra")
            del L
            # the carried state's contribution: exp(acum_t) (C_t . S)
            yo = Cg @ S.view(b, G, hg * P, N).transpose(-1, -2)  # (b, G, l, hg P): 2 b H l P N
            ea = acum.exp()
            yo.view(b, G, l, hg, P).mul_(ea.view(b, G, hg, l).transpose(2, 3)[..., None])
            yc.view(b, G, hg, l, P).add_(yo.view(b, G, l, hg, P).transpose(2, 3))
            mark("mixer/chunk_state_in")
            del yo, ea
            yc.addcmul_(xh, Dv[:, None, None])
            y[:, t0:t1] = yc.transpose(1, 2)
            del yc
            # the state at the end of the chunk
            last = acum[..., -1:]  # (b, H, 1)
            w = (last - acum).exp_().mul_(dth)  # decay to the chunk's end, times dt
            xw = torch.empty(b, H, P, l, dtype=sc, device=xh.device)
            torch.mul(xh.transpose(-1, -2), w[..., None, :], out=xw)  # (b, H, P, l)
            mark("mixer/chunk_decay")
            del w, xh
            st = xw.view(b, G, hg * P, l) @ Bg  # (b, G, hg P, N): 2 b H P l N
            del xw
            S.mul_(last.exp()[..., None]).add_(st.view(b, H, P, N))
            mark("mixer/chunk_state")
            del st, Bg, Cg, acum, last, dth
