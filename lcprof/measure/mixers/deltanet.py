"""A real Gated DeltaNet mixer from explicit dims, chunked in the WY form (as fla's
``chunk_gated_delta_rule``); see :mod:`lcprof.cost.kinds.deltanet` for the diagram and FLOPs.

Per chunk of l tokens and value head (head-major, core dtype), with g the per-token log decay,
gam = cumsum(g) within the chunk, Gam[t, s] = exp(gam_t - gam_s) for s <= t:

    A      = strict tril(beta_t (K K^T) o Gam)                                     (b, Hv, l, l)
    [U, W] = (I + A)^-1 [beta V, beta K o e^gam]        (unit lower-triangular solve)
    V'     = U - W S
    o      = (Q o e^gam) S + ((Q K^T) o Gam, causal) V'
    S     <- e^gam_l S + (K o e^(gam_l - gam))^T V'

n == 1 runs the recurrent step (decode): S <- e^g S; S <- S + k (beta (v - S^T k))^T; o = S^T q.
q and k are l2-normalized per head and q scaled by 1/sqrt(dk); with Hv > Hk each key head serves
Hv / Hk value heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lcprof.cost.kinds.deltanet import CHUNK
from lcprof.measure.mixer_backends import get_mixer_backend
from lcprof.measure.mixers.common import (MixerState, causal_conv, core_dtype, fill_linear_weights, gated_rmsnorm,
                                          gather, materialize, upper_mask)
from lcprof.measure.tensor_audit import mark


#: the epsilon of q's and k's L2 norms: fla's ``l2norm`` and transformers' fallback fix it at 1e-6
#: (the gated output norm uses the model's rms_norm_eps)
L2_EPS = 1e-6


def _l2norm(x: torch.Tensor, eps: float = L2_EPS) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim, in place (fla's l2norm: rsqrt of sum + eps)."""
    return x.mul_(torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps))


class GatedDeltaNetMixer(nn.Module):
    """x (batch, m, hidden) -> (batch, m, hidden), with the carried :class:`MixerState`."""

    def __init__(self, spec, *, chunk: int | None = None, eps: float = 1e-6, seed: int = 0, backend: str = "torch",
                 materialize_weights: bool = True) -> None:
        super().__init__()
        self.spec = d = spec  # a lcprof.spec.GatedDeltaNetSpec
        self.backend = get_mixer_backend(backend, d.kind).name
        self.chunk = int(chunk or CHUNK)
        self.eps = eps
        qkvz, ba, out = d.linears()
        with torch.device("meta"):
            self.in_proj_qkvz = nn.Linear(qkvz.d_in, qkvz.d_out, bias=qkvz.bias)
            self.in_proj_ba = nn.Linear(ba.d_in, ba.d_out, bias=ba.bias)
            self.conv_weight = nn.Parameter(torch.empty(d.conv_dim, 1, d.conv_kernel))
            self.dt_bias = nn.Parameter(torch.empty(d.num_v_heads))
            self.A_log = nn.Parameter(torch.empty(d.num_v_heads))
            self.norm_weight = nn.Parameter(torch.empty(d.head_v_dim))
            self.out_proj = nn.Linear(out.d_in, out.d_out, bias=out.bias)
        self._masks: dict = {}
        if materialize_weights:
            materialize(self)
            self._init(seed)

    @torch.no_grad()
    def _init(self, seed: int) -> None:
        g = torch.Generator().manual_seed(int(seed) * 7919 + 3)
        fill_linear_weights(self, g, skip=("dt_bias", "A_log"))
        hv = self.spec.num_v_heads
        self.A_log.copy_(torch.log(1 + 15 * torch.rand(hv, generator=g)))  # A in [1, 16]
        dt = torch.exp(torch.rand(hv, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def empty_state(self, batch: int, *, dtype=None, device=None) -> MixerState:
        d = self.spec
        p = self.out_proj.weight
        dtype, device = dtype or p.dtype, device or p.device
        return MixerState(torch.zeros(batch, d.conv_dim, d.conv_kernel - 1, dtype=dtype, device=device),
                          torch.zeros(batch, d.num_v_heads, d.head_k_dim, d.head_v_dim, dtype=dtype, device=device))

    def _tril(self, l: int, device, strict: bool) -> torch.Tensor:
        return upper_mask(self._masks, l, device, strict)

    def forward(self, x: torch.Tensor, state: MixerState | None = None, *,
                state_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, MixerState]:
        d = self.spec
        b, m, _ = x.shape
        Hv, dk, dv = d.num_v_heads, d.head_k_dim, d.head_v_dim
        vw = d.value_dim
        qkvz = self.in_proj_qkvz(x)  # (b, m, 2 Hk dk + 2 Hv dv)
        mark("mixer/in_proj")
        ba = self.in_proj_ba(x)  # (b, m, 2 Hv)
        mark("mixer/in_proj_ba")
        conv, conv_state = causal_conv(qkvz[..., :d.conv_dim], self.conv_weight, None,
                                       None if state is None else state.conv)
        qkv = conv.transpose(1, 2)  # (b, m, conv_dim) view
        sc = core_dtype(x.dtype)
        beta = torch.sigmoid(ba[..., :Hv].to(sc))  # (b, m, Hv)
        g = F.softplus(ba[..., Hv:].to(sc) + self.dt_bias.to(sc)).mul_(-torch.exp(self.A_log.to(sc)))  # log decay
        mark("mixer/gates")
        S = torch.zeros(b, Hv, dk, dv, dtype=sc, device=x.device) if state is None else gather(state.ssm, (b, Hv, dk, dv), sc)
        o = torch.empty(b, m, Hv, dv, dtype=x.dtype, device=x.device)
        if self.backend == "fla":
            S = self._fla(qkv, beta, g, S, o)
        else:
            step = self._step if m == 1 else self._chunks
            step(qkv, beta, g, S, o)
        del qkv, conv, beta, g, ba
        new_state = MixerState(conv_state, S.to(state_dtype or x.dtype))
        mark("mixer/state_out")
        del S
        z = qkvz[..., d.conv_dim:]  # (b, m, Hv dv) view
        y = gated_rmsnorm(o.view(b, m, vw), z, self.norm_weight, Hv, self.eps, norm_first=True)
        del o, z, qkvz
        out = self.out_proj(y)
        mark("mixer/out_proj")
        return out, new_state

    def _fla(self, qkv, beta, g, S, o) -> torch.Tensor:
        """The core on fla's kernels: q, k repeated to the value heads, normalized in the kernel."""
        from lcprof.measure.mixer_backends import fla_gated_delta

        d = self.spec
        b, m, _ = qkv.shape
        r, kw = d.num_v_heads // d.num_k_heads, d.key_dim

        def heads(lo, hi, count, dim):
            x = qkv[..., lo:hi].reshape(b, m, count, dim)
            return (x.repeat_interleave(r, dim=2) if count != d.num_v_heads else x).contiguous()

        q = heads(0, kw, d.num_k_heads, d.head_k_dim)
        k = heads(kw, 2 * kw, d.num_k_heads, d.head_k_dim)
        v = heads(2 * kw, d.conv_dim, d.num_v_heads, d.head_v_dim)
        out, final = fla_gated_delta(q, k, v, g.contiguous(), beta.contiguous(), S, 1.0 / math.sqrt(d.head_k_dim),
                                     step=(m == 1))
        o.copy_(out)
        return final

    def _heads(self, qkv, t0: int, t1: int, sc) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k (b, Hv, l, dk) -- key heads repeated for their value heads --, v (b, Hv, l, dv)."""
        d = self.spec
        b = qkv.shape[0]
        l = t1 - t0
        Hk, Hv, dk, dv, kw = d.num_k_heads, d.num_v_heads, d.head_k_dim, d.head_v_dim, d.key_dim
        r = Hv // Hk

        def keyside(lo):
            src = qkv[:, t0:t1, lo:lo + kw].reshape(b, l, Hk, dk).permute(0, 2, 1, 3)[:, :, None]
            out = torch.empty(b, Hk, r, l, dk, dtype=sc, device=qkv.device)
            out.copy_(src.expand(b, Hk, r, l, dk))
            return _l2norm(out.view(b, Hv, l, dk))

        q, k = keyside(0), keyside(kw)
        mark("mixer/chunk_l2norm")
        q.mul_(1.0 / math.sqrt(dk))
        v = gather(qkv[:, t0:t1, 2 * kw:].reshape(b, l, Hv, dv).permute(0, 2, 1, 3), (b, Hv, l, dv), sc)
        return q, k, v

    def _step(self, qkv, beta, g, S, o) -> None:
        d = self.spec
        b = qkv.shape[0]
        Hv, dv = d.num_v_heads, d.head_v_dim
        q, k, v = self._heads(qkv, 0, 1, S.dtype)  # (b, Hv, 1, *)
        S.mul_(g[:, 0].exp()[..., None, None])
        kv = k @ S  # (b, Hv, 1, dv): S^T k, 2 b Hv dk dv
        delta = v.sub_(kv).mul_(beta[:, 0, :, None, None])
        mark("mixer/step_kv")
        del kv
        S.add_(k.transpose(-1, -2) @ delta)  # rank-1 update: 2 b Hv dk dv
        del delta, k
        o[:, 0] = (q @ S).view(b, Hv, dv)  # S^T q: 2 b Hv dk dv
        mark("mixer/step")  # the update's segment holds the read-out too (less)

    def _chunks(self, qkv, beta, g, S, o) -> None:
        d = self.spec
        b, m, _ = qkv.shape
        Hv, dk, dv = d.num_v_heads, d.head_k_dim, d.head_v_dim
        sc = S.dtype
        for t0 in range(0, m, self.chunk):
            t1 = min(t0 + self.chunk, m)
            l = t1 - t0
            q, k, v = self._heads(qkv, t0, t1, sc)
            bh = beta[:, t0:t1].transpose(1, 2)  # (b, Hv, l) view
            gam = torch.cumsum(g[:, t0:t1].transpose(1, 2), dim=-1)  # (b, Hv, l)
            decay = gam[..., :, None] - gam[..., None, :]  # (b, Hv, l, l)
            decay.masked_fill_(self._tril(l, decay.device, strict=False), float("-inf")).exp_()
            A = k @ k.transpose(-1, -2)  # K K^T: 2 b Hv l^2 dk
            A.mul_(decay).mul_(bh[..., None]).masked_fill_(self._tril(l, A.device, strict=True), 0.0)
            mark("mixer/chunk_kk")
            eg = gam.exp()  # (b, Hv, l)
            rhs = torch.empty(b, Hv, l, dv + dk, dtype=sc, device=qkv.device)
            torch.mul(v, bh[..., None], out=rhs[..., :dv])
            torch.mul(k, (bh * eg)[..., None], out=rhs[..., dv:])
            mark("mixer/chunk_rhs")
            del v
            uw = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)  # (I + A)^-1 rhs
            mark("mixer/chunk_solve")
            del A, rhs
            vp = uw[..., :dv] - uw[..., dv:] @ S  # V' = U - W S: 2 b Hv l dk dv
            mark("mixer/chunk_vprime")
            del uw
            qk = q @ k.transpose(-1, -2)  # Q K^T: 2 b Hv l^2 dk
            qk.mul_(decay)
            mark("mixer/chunk_qk")
            del decay
            oc = qk @ vp  # 2 b Hv l^2 dv
            mark("mixer/chunk_intra")
            del qk
            oc.add_(q.mul_(eg[..., None]) @ S)  # (Q o e^gam) S: 2 b Hv l dk dv
            mark("mixer/chunk_state_in")
            del q, eg
            o[:, t0:t1] = oc.transpose(1, 2)
            mark("mixer/chunk_out")
            del oc
            last = gam[..., -1:]  # (b, Hv, 1)
            kd = k.mul_((last - gam).exp_()[..., None])  # K o e^(gam_l - gam), in place
            S.mul_(last.exp()[..., None]).add_(kd.transpose(-1, -2) @ vp)  # 2 b Hv l dk dv
            mark("mixer/chunk_state")
            del kd, k, vp, gam, last, bh

