"""A real Kimi Delta Attention (KDA) mixer from explicit dims, chunked in the WY form with fla's
``chunk_kda`` layout (chunks of ``CHUNK`` = 64 tokens, pairs inside a chunk in sub-chunks of
``SUB`` = 16); see :mod:`lcprof.cost.kinds.kda` for the diagram and FLOPs.

KDA is Gated DeltaNet with a per-channel decay: the log decay g_t is a head_dim vector per head and
token, so the pair weights inside a chunk are sums over channels, not a product of two scalars.
Per chunk of l tokens and head (head-major, core dtype), gam = cumsum(g) within the chunk (l, d):

    Akk[t, s] = sum_c k_t[c] k_s[c] e^(gam_t[c] - gam_s[c])        s < t
    Aqk[t, s] = sum_c q_t[c] k_s[c] e^(gam_t[c] - gam_s[c])        s <= t
    [U, W]    = (I + beta Akk)^-1 [beta V, beta K o e^gam]     (unit lower-triangular solve)
    V'        = U - W S
    o         = (Q o e^gam) S + Aqk V'
    S        <- e^gam_l o S + (K o e^(gam_l - gam))^T V'

The pair sums are computed without ever exponentiating a positive number: for the rows of sub-chunk
I (first token i0) and the columns s < i0, e^(gam_t - gam_s) = e^(gam_t - gam_i0) e^(gam_i0 - gam_s),
both factors <= 1, so that block is one matrix product (as fla's ``chunk_kda_fwd_kernel_intra_sub_inter``);
inside the diagonal sub-block the (l_I, l_I, d) decays are formed and summed elementwise.

n == 1 runs the recurrent step (decode): S <- e^g o S; S <- S + k (beta (v - S^T k))^T; o = S^T q.
q and k are l2-normalized per head and q scaled by 1/sqrt(d) (``use_qk_l2norm_in_kernel``); the
output is o_norm(o) * sigmoid(g_b(g_a(x))) (transformers' ``KimiLinearRMSNormGated``), then o_proj.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lcprof.cost.kinds.kda import CHUNK, SUB
from lcprof.measure.mixer_backends import get_mixer_backend
from lcprof.measure.mixers.common import (MixerState, causal_conv, core_dtype, fill_linear_weights, gated_rmsnorm,
                                          gather, materialize, upper_mask)
from lcprof.measure.mixers.deltanet import _l2norm
from lcprof.measure.tensor_audit import mark


class KimiDeltaMixer(nn.Module):
    """x (batch, m, hidden) -> (batch, m, hidden), with the carried :class:`MixerState`.

    The three q/k/v projections are one (3 w, h) weight (``qkv_proj``: the same parameters and FLOPs
    as the checkpoint's q_proj, k_proj, v_proj, one output the conv reads whole)."""

    def __init__(self, spec, *, chunk: int | None = None, sub: int | None = None, eps: float = 1e-6, seed: int = 0,
                 backend: str = "torch", materialize_weights: bool = True) -> None:
        super().__init__()
        self.spec = d = spec  # a lcprof.spec.KimiDeltaSpec
        self.backend = get_mixer_backend(backend, d.kind).name
        self.chunk = int(chunk or CHUNK)
        self.sub = int(sub or SUB)
        self.eps = eps
        h, w, hd = d.hidden_size, d.width, d.head_dim
        with torch.device("meta"):
            self.qkv_proj = nn.Linear(h, 3 * w, bias=False)
            self.f_a_proj = nn.Linear(h, hd, bias=False)
            self.f_b_proj = nn.Linear(hd, w, bias=False)
            self.b_proj = nn.Linear(h, d.n_heads, bias=False)
            self.g_a_proj = nn.Linear(h, hd, bias=False)
            self.g_b_proj = nn.Linear(hd, w, bias=False)
            self.conv_weight = nn.Parameter(torch.empty(d.conv_dim, 1, d.conv_kernel))
            self.A_log = nn.Parameter(torch.empty(d.n_heads))
            self.dt_bias = nn.Parameter(torch.empty(w))
            self.norm_weight = nn.Parameter(torch.empty(hd))
            self.o_proj = nn.Linear(w, h, bias=False)
        self._masks: dict = {}
        if materialize_weights:
            materialize(self)
            self._init(seed)

    @torch.no_grad()
    def _init(self, seed: int) -> None:
        g = torch.Generator().manual_seed(int(seed) * 7919 + 5)
        fill_linear_weights(self, g, skip=("dt_bias", "A_log"))
        d = self.spec
        self.A_log.copy_(torch.log(1 + 15 * torch.rand(d.n_heads, generator=g)))  # A in [1, 16], as fla inits it
        dt = torch.exp(torch.rand(d.width, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus of dt in [1e-3, 0.1]

    def empty_state(self, batch: int, *, dtype=None, device=None) -> MixerState:
        """The zero state of a model in ``dtype``: the conv window in it, the recurrent state in float32
        for fp16/bf16 (as ``forward`` returns it, and as the engines keep it)."""
        d = self.spec
        p = self.o_proj.weight
        dtype, device = dtype or p.dtype, device or p.device
        return MixerState(torch.zeros(batch, d.conv_dim, d.conv_kernel - 1, dtype=dtype, device=device),
                          torch.zeros(batch, d.n_heads, d.head_dim, d.head_dim, dtype=core_dtype(dtype), device=device))

    def forward(self, x: torch.Tensor, state: MixerState | None = None, *,
                state_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, MixerState]:
        d = self.spec
        b, m, _ = x.shape
        H, hd, w = d.n_heads, d.head_dim, d.width
        qkv = self.qkv_proj(x)  # (b, m, 3 w)
        mark("mixer/in_proj")
        fa = self.f_a_proj(x)  # (b, m, d)
        fb = self.f_b_proj(fa)  # (b, m, w)
        del fa
        mark("mixer/f_proj")
        bp = self.b_proj(x)  # (b, m, H)
        mark("mixer/b_proj")
        conv, conv_state = causal_conv(qkv, self.conv_weight, None, None if state is None else state.conv)
        del qkv
        qkv = conv.transpose(1, 2)  # (b, m, 3 w) view
        sc = core_dtype(x.dtype)
        beta = torch.sigmoid(bp.to(sc))  # (b, m, H)
        del bp
        g = F.softplus(fb.to(sc) + self.dt_bias.to(sc)).view(b, m, H, hd)
        g.mul_(-torch.exp(self.A_log.to(sc))[:, None])  # per-channel log decay (b, m, H, d)
        del fb
        mark("mixer/gates")
        S = (torch.zeros(b, H, hd, hd, dtype=sc, device=x.device) if state is None
             else gather(state.ssm, (b, H, hd, hd), sc))
        o = torch.empty(b, m, H, hd, dtype=x.dtype, device=x.device)
        step = self._step if m == 1 else self._chunks
        step(qkv, beta, g, S, o)
        del qkv, conv, beta, g
        new_state = MixerState(conv_state, S.to(state_dtype or sc))  # float32 for fp16/bf16, as the engines keep it
        mark("mixer/state_out")
        del S
        ga = self.g_a_proj(x)  # (b, m, d)
        z = self.g_b_proj(ga)  # (b, m, w): the output gate
        del ga
        mark("mixer/g_proj")
        y = gated_rmsnorm(o.view(b, m, w), z, self.norm_weight, H, self.eps, norm_first=True, gate="sigmoid")
        del o, z
        out = self.o_proj(y)
        mark("mixer/out_proj")
        return out, new_state

    def _heads(self, qkv, t0: int, t1: int, sc) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k (l2-normalized, q scaled), v: (b, H, l, d) contiguous copies in the core dtype."""
        d = self.spec
        b = qkv.shape[0]
        l = t1 - t0
        H, hd, w = d.n_heads, d.head_dim, d.width

        def part(i):
            return gather(qkv[:, t0:t1, i * w:(i + 1) * w].reshape(b, l, H, hd).permute(0, 2, 1, 3), (b, H, l, hd), sc)

        q, k = _l2norm(part(0)), _l2norm(part(1))
        mark("mixer/chunk_l2norm")
        q.mul_(1.0 / math.sqrt(hd))
        return q, k, part(2)

    def _step(self, qkv, beta, g, S, o) -> None:
        d = self.spec
        b = qkv.shape[0]
        H, hd = d.n_heads, d.head_dim
        q, k, v = self._heads(qkv, 0, 1, S.dtype)  # (b, H, 1, d)
        S.mul_(g[:, 0].exp()[..., None])  # per-channel decay of the state's rows
        kv = k @ S  # (b, H, 1, d): S^T k, 2 b H d^2
        delta = v.sub_(kv).mul_(beta[:, 0, :, None, None])
        mark("mixer/step_kv")
        del kv
        S.add_(k.transpose(-1, -2) @ delta)  # rank-1 update: 2 b H d^2
        del delta, k
        o[:, 0] = (q @ S).view(b, H, hd)  # S^T q: 2 b H d^2
        mark("mixer/step")

    def _pairs(self, q, k, gam) -> tuple[torch.Tensor, torch.Tensor]:
        """Akk (strictly lower) and Aqk (lower, diagonal included): (b, H, l, l), see the module docstring."""
        b, H, l, hd = k.shape
        A = torch.zeros(b, H, l, l, dtype=k.dtype, device=k.device)
        P = torch.zeros(b, H, l, l, dtype=k.dtype, device=k.device)
        for i0 in range(0, l, self.sub):
            i1 = min(i0 + self.sub, l)
            ref = gam[:, :, i0:i0 + 1]  # (b, H, 1, d) view
            er = (gam[:, :, i0:i1] - ref).exp_()  # e^(gam_t - gam_i0) <= 1, (b, H, ci, d)
            if i0:
                kc = (ref - gam[:, :, :i0]).exp_().mul_(k[:, :, :i0])  # k_s e^(gam_i0 - gam_s) <= |k_s|
                kr = k[:, :, i0:i1] * er
                A[:, :, i0:i1, :i0] = kr @ kc.transpose(-1, -2)  # 2 b H ci i0 d
                del kr
                qr = q[:, :, i0:i1] * er
                P[:, :, i0:i1, :i0] = qr @ kc.transpose(-1, -2)
                del qr, kc
            del er
            gd = gam[:, :, i0:i1]
            dec = gd[:, :, :, None, :] - gd[:, :, None, :, :]  # (b, H, ci, ci, d): gam_t - gam_s
            dec.masked_fill_(upper_mask(self._masks, i1 - i0, dec.device)[..., None], float("-inf")).exp_()
            kt = k[:, :, i0:i1]
            A[:, :, i0:i1, i0:i1] = (kt[:, :, :, None, :] * dec).mul_(kt[:, :, None, :, :]).sum(-1)
            P[:, :, i0:i1, i0:i1] = (q[:, :, i0:i1, None, :] * dec).mul_(kt[:, :, None, :, :]).sum(-1)
            del dec
        A.masked_fill_(upper_mask(self._masks, l, A.device, strict=True), 0.0)
        return A, P

    def _chunks(self, qkv, beta, g, S, o) -> None:
        d = self.spec
        b, m, _ = qkv.shape
        H, hd = d.n_heads, d.head_dim
        sc = S.dtype
        for t0 in range(0, m, self.chunk):
            t1 = min(t0 + self.chunk, m)
            l = t1 - t0
            q, k, v = self._heads(qkv, t0, t1, sc)
            bh = beta[:, t0:t1].transpose(1, 2)  # (b, H, l) view
            gam = torch.cumsum(g[:, t0:t1].transpose(1, 2), dim=2)  # (b, H, l, d)
            A, P = self._pairs(q, k, gam)
            A.mul_(bh[..., None])
            mark("mixer/chunk_pairs")
            eg = gam.exp()  # (b, H, l, d)
            rhs = torch.empty(b, H, l, 2 * hd, dtype=sc, device=qkv.device)
            torch.mul(v, bh[..., None], out=rhs[..., :hd])
            torch.mul(k, eg, out=rhs[..., hd:]).mul_(bh[..., None])
            mark("mixer/chunk_rhs")
            del v
            uw = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)  # (I + A)^-1 rhs
            mark("mixer/chunk_solve")
            del A, rhs
            vp = uw[..., :hd] - uw[..., hd:] @ S  # V' = U - W S: 2 b H l d^2
            mark("mixer/chunk_vprime")
            del uw
            oc = P @ vp  # Aqk V': 2 b H l^2 d
            mark("mixer/chunk_intra")
            del P
            oc.add_(q.mul_(eg) @ S)  # (Q o e^gam) S: 2 b H l d^2
            mark("mixer/chunk_state_in")
            del q, eg
            o[:, t0:t1] = oc.transpose(1, 2)
            mark("mixer/chunk_out")
            del oc
            last = gam[:, :, -1:].clone()  # (b, H, 1, d)
            kd = k.mul_(gam.sub_(last).neg_().exp_())  # K o e^(gam_l - gam), in place
            S.mul_(last.exp_().transpose(-1, -2)).add_(kd.transpose(-1, -2) @ vp)  # 2 b H l d^2
            mark("mixer/chunk_state")
            del kd, k, vp, gam, last, bh
