"""A real Mamba-1 selective-scan mixer from explicit dims; see :mod:`lcprof.cost.kinds.mamba1`.

The scan runs token by token (the recurrence is sequential; mamba_ssm's CUDA kernel keeps it in
SRAM): per token, with dt (b, d_inner), x (b, d_inner), B, C (b, N), state S (b, d_inner, N):

    S <- exp(dt A) o S + (dt o x) B^T        (an outer product: one bmm, 2 b d_inner N)
    y  = S C + D o x                          (one bmm, 2 b d_inner N)

Jamba's dt/B/C RMSNorms (``bcdt_norm``) run on the x_proj outputs, with weights unless
``bcdt_norm_weights`` is False (Falcon-Mamba).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lcprof.errors import LcprofError
from lcprof.measure.mixer_backends import get_mixer_backend
from lcprof.measure.mixers.common import MixerState, causal_conv, core_dtype, fill_linear_weights, gather, materialize
from lcprof.measure.tensor_audit import mark


def _rms(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    xf = x.to(core_dtype(x.dtype))
    y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return y if weight is None else weight * y


class Mamba1Mixer(nn.Module):
    """x (batch, m, hidden) -> (batch, m, hidden), with the carried :class:`MixerState`."""

    def __init__(self, spec, *, eps: float = 1e-6, seed: int = 0, backend: str = "torch",
                 materialize_weights: bool = True) -> None:
        super().__init__()
        self.spec = d = spec  # a lcprof.spec.MambaSpec
        self.backend = get_mixer_backend(backend, d.kind).name
        self.eps = eps
        R, N, di = d.dt_rank, d.d_state, d.d_inner
        lin = {x.name: x for x in d.linears()}
        with torch.device("meta"):
            for name in ("in_proj", "x_proj", "dt_proj", "out_proj"):
                setattr(self, name, nn.Linear(lin[name].d_in, lin[name].d_out, bias=lin[name].bias))
            self.conv_weight = nn.Parameter(torch.empty(di, 1, d.d_conv))
            self.conv_bias = nn.Parameter(torch.empty(di)) if d.conv_bias else None
            self.A_log = nn.Parameter(torch.empty(di, N))
            self.D = nn.Parameter(torch.empty(di))
            if d.bcdt_norm == "weighted":
                self.dt_norm = nn.Parameter(torch.empty(R))
                self.b_norm = nn.Parameter(torch.empty(N))
                self.c_norm = nn.Parameter(torch.empty(N))
        if materialize_weights:
            materialize(self)
            self._init(seed)

    @torch.no_grad()
    def _init(self, seed: int) -> None:
        g = torch.Generator().manual_seed(int(seed) * 7919 + 1)
        fill_linear_weights(self, g, skip=("A_log", "D", "bias"))
        d = self.spec
        # S4D-real init A_c = -(1..N); dt in [1e-3, 1e-1] through dt_proj's bias (softplus^-1)
        self.A_log.copy_(torch.log(torch.arange(1, d.d_state + 1, dtype=torch.float64)).expand(d.d_inner, -1))
        self.D.fill_(1.0)
        dt = torch.exp(torch.rand(d.d_inner, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        if self.conv_bias is not None:
            self.conv_bias.copy_(0.1 * torch.randn(d.d_inner, generator=g))
        for lin in (self.in_proj, self.out_proj):
            if lin.bias is not None:
                lin.bias.copy_(0.1 * torch.randn(lin.bias.shape, generator=g))

    def empty_state(self, batch: int, *, dtype=None, device=None) -> MixerState:
        d = self.spec
        p = self.out_proj.weight
        dtype, device = dtype or p.dtype, device or p.device
        return MixerState(torch.zeros(batch, d.d_inner, d.d_conv - 1, dtype=dtype, device=device),
                          torch.zeros(batch, d.d_inner, d.d_state, dtype=dtype, device=device))

    def _mamba_ssm(self, conv, dt, A, Bm, Cm, Dv, S, y, *, fresh: bool) -> torch.Tensor:
        """The scan on mamba_ssm's kernels: selective_scan_fn (prefill, zero state only) or
        selective_state_update (one token)."""
        from lcprof.measure.mixer_backends import mamba_ssm_scan, mamba_ssm_state_update

        m = conv.shape[-1]
        if m == 1:
            y[:, 0] = mamba_ssm_state_update(S, conv[..., 0].contiguous(), dt[:, 0], A, Bm[:, 0].contiguous(),
                                             Cm[:, 0].contiguous(), Dv)
            return S
        if not fresh:
            raise LcprofError("mamba-ssm's selective_scan_fn starts from a zero state: a prefill after a cached "
                              "prefix runs on the torch backend")
        out, last = mamba_ssm_scan(conv, dt.transpose(1, 2).contiguous(), A, Bm.transpose(1, 2).contiguous(),
                                   Cm.transpose(1, 2).contiguous(), Dv)
        y.copy_(out.transpose(1, 2))
        return last

    @staticmethod
    def _scan(xs, dt, A, Bm, Cm, Dv, S, y) -> None:
        """Token by token: S <- exp(dt A) o S + (dt o x) B^T; y = S C + D o x."""
        sc = S.dtype
        for t in range(xs.shape[1]):
            dtt = dt[:, t]  # (b, di)
            xt = xs[:, t].to(sc)  # (b, di)
            S.mul_(torch.exp(dtt[..., None] * A))
            mark("mixer/scan_decay")
            S.add_((dtt * xt)[..., None] @ Bm[:, t, None, :].to(sc))  # outer product: 2 b di N
            yt = (S @ Cm[:, t, :, None].to(sc))[..., 0]  # read-out: 2 b di N
            y[:, t] = yt.addcmul_(xt, Dv)
            mark("mixer/scan_update")  # the update's segment holds the read-out too (less)
            del dtt, xt, yt  # not alive into the next token's step

    def forward(self, x: torch.Tensor, state: MixerState | None = None, *,
                state_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, MixerState]:
        d = self.spec
        b, m, _ = x.shape
        di, N, R = d.d_inner, d.d_state, d.dt_rank
        xz = self.in_proj(x)  # (b, m, 2 di)
        mark("mixer/in_proj")
        conv, conv_state = causal_conv(xz[..., :di], self.conv_weight, self.conv_bias,
                                       None if state is None else state.conv)
        xs = conv.transpose(1, 2)  # (b, m, di) view
        dbc = self.x_proj(xs)  # (b, m, R + 2N)
        mark("mixer/x_proj")
        dt_low, Bm, Cm = dbc[..., :R], dbc[..., R:R + N], dbc[..., R + N:]
        if d.bcdt_norm != "none":
            w = (lambda nm: getattr(self, nm)) if d.bcdt_norm == "weighted" else (lambda nm: None)
            normed = []
            for i, (src, nm) in enumerate(((dt_low, "dt_norm"), (Bm, "b_norm"), (Cm, "c_norm"))):
                normed.append(_rms(src, w(nm), self.eps))
                mark(f"mixer/bcdt_norm{i}")
            dt_low, Bm, Cm = normed
            del normed, src
        sc = core_dtype(x.dtype)
        dt = F.softplus(self.dt_proj(dt_low).to(sc))  # (b, m, di)
        mark("mixer/dt")
        A = -torch.exp(self.A_log.to(sc))  # (di, N)
        mark("mixer/A")
        Dv = self.D.to(sc)
        S = torch.zeros(b, di, N, dtype=sc, device=x.device) if state is None else gather(state.ssm, (b, di, N), sc)
        y = torch.empty(b, m, di, dtype=x.dtype, device=x.device)
        if self.backend == "mamba-ssm":
            S = self._mamba_ssm(conv, dt, A, Bm, Cm, Dv, S, y, fresh=state is None)
        else:
            self._scan(xs, dt, A, Bm, Cm, Dv, S, y)
        del dt, dbc, dt_low, Bm, Cm, conv, xs, A, Dv
        new_state = MixerState(conv_state, S.to(state_dtype or x.dtype))
        mark("mixer/state_out")
        del S
        out = y * F.silu(xz[..., di:])
        mark("mixer/gate")
        del y, xz
        out = self.out_proj(out)
        mark("mixer/out_proj")
        return out, new_state
