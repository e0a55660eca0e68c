"""Step-by-step recurrent references for the mixer layers, written from the papers' equations.

Each takes a mixer (for its weights), x (batch, m, hidden) and an optional carried state, runs
token by token with no chunking and no shared helpers (its own conv window, its own norms), and
returns (out, conv state, recurrent state). Run in float64 they are the correctness oracle of the
chunked layers: prefill against the recurrence, and prefill-then-decode with the carried state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _conv_steps(u: torch.Tensor, weight: torch.Tensor, bias, conv_state):
    """u (b, m, ch) through a depthwise causal conv token by token: out_t = sum_j w_j u_{t-K+1+j}
    (+ bias), SiLU. Returns (out (b, m, ch), last K - 1 inputs (b, ch, K - 1))."""
    b, m, ch = u.shape
    k = weight.shape[-1]
    hist = (torch.zeros(b, ch, k - 1, dtype=u.dtype) if conv_state is None else conv_state.to(u.dtype)).clone()
    outs = []
    for t in range(m):
        window = torch.cat([hist, u[:, t, :, None]], dim=-1)  # (b, ch, K)
        o = (window * weight[:, 0, :]).sum(-1)
        if bias is not None:
            o = o + bias
        outs.append(o * torch.sigmoid(o))
        hist = window[..., 1:]
    return torch.stack(outs, dim=1), hist


def _rms(x, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def mamba2_recurrent(mixer, x, state=None):
    d = mixer.spec
    b, m, _ = x.shape
    H, P, N, G, di = d.n_heads, d.head_dim, d.d_state, d.n_groups, d.d_inner
    zxbcdt = F.linear(x, mixer.in_proj.weight, mixer.in_proj.bias)
    z, xbc, dtr = zxbcdt[..., :di], zxbcdt[..., di:di + d.conv_dim], zxbcdt[..., di + d.conv_dim:]
    xbc, conv = _conv_steps(xbc, mixer.conv_weight, mixer.conv_bias, None if state is None else state.conv)
    A = -torch.exp(mixer.A_log)
    S = torch.zeros(b, H, P, N, dtype=x.dtype) if state is None else state.ssm.to(x.dtype).clone()
    ys = []
    for t in range(m):
        xt = xbc[:, t, :di].reshape(b, H, P)
        Bt = xbc[:, t, di:di + G * N].reshape(b, G, N)
        Ct = xbc[:, t, di + G * N:].reshape(b, G, N)
        dt = F.softplus(dtr[:, t] + mixer.dt_bias)  # (b, H)
        yt = torch.empty(b, H, P, dtype=x.dtype)
        for h in range(H):
            gi = h // (H // G)
            S[:, h] = torch.exp(dt[:, h] * A[h])[:, None, None] * S[:, h] \
                + dt[:, h, None, None] * xt[:, h, :, None] * Bt[:, gi, None, :]
            yt[:, h] = (S[:, h] * Ct[:, gi, None, :]).sum(-1) + mixer.D[h] * xt[:, h]
        ys.append(yt.reshape(b, di))
    y = torch.stack(ys, dim=1)
    silu_z = z * torch.sigmoid(z)
    if not d.norm:
        gated = y * silu_z
    elif d.norm_before_gate:
        gated = _rms(y.view(b, m, G, di // G), mixer.eps).view(b, m, di) * mixer.norm_weight * silu_z
    else:
        gated = _rms((y * silu_z).view(b, m, G, di // G), mixer.eps).view(b, m, di) * mixer.norm_weight
    return F.linear(gated, mixer.out_proj.weight, mixer.out_proj.bias), conv, S


def deltanet_recurrent(mixer, x, state=None):
    d = mixer.spec
    b, m, _ = x.shape
    Hk, Hv, dk, dv, kw = d.num_k_heads, d.num_v_heads, d.head_k_dim, d.head_v_dim, d.key_dim
    qkvz = F.linear(x, mixer.in_proj_qkvz.weight)
    ba = F.linear(x, mixer.in_proj_ba.weight)
    qkv, conv = _conv_steps(qkvz[..., :d.conv_dim], mixer.conv_weight, None, None if state is None else state.conv)
    z = qkvz[..., d.conv_dim:].reshape(b, m, Hv, dv)
    S = torch.zeros(b, Hv, dk, dv, dtype=x.dtype) if state is None else state.ssm.to(x.dtype).clone()
    outs = []
    for t in range(m):
        q = qkv[:, t, :kw].reshape(b, Hk, dk)
        k = qkv[:, t, kw:2 * kw].reshape(b, Hk, dk)
        v = qkv[:, t, 2 * kw:].reshape(b, Hv, dv)
        q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6) / math.sqrt(dk)  # fla's fixed L2 epsilon
        k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
        beta = torch.sigmoid(ba[:, t, :Hv])
        g = -torch.exp(mixer.A_log) * F.softplus(ba[:, t, Hv:] + mixer.dt_bias)
        o = torch.empty(b, Hv, dv, dtype=x.dtype)
        for h in range(Hv):
            kh, qh = k[:, h // (Hv // Hk)], q[:, h // (Hv // Hk)]
            Sh = torch.exp(g[:, h])[:, None, None] * S[:, h]  # decay
            pred = (Sh * kh[:, :, None]).sum(1)  # S^T k
            Sh = Sh + kh[:, :, None] * (beta[:, h, None] * (v[:, h] - pred))[:, None, :]
            S[:, h] = Sh
            o[:, h] = (Sh * qh[:, :, None]).sum(1)  # S^T q
        outs.append(o)
    o = torch.stack(outs, dim=1)  # (b, m, Hv, dv)
    y = _rms(o, mixer.eps) * mixer.norm_weight * (z * torch.sigmoid(z))
    return F.linear(y.reshape(b, m, Hv * dv), mixer.out_proj.weight), conv, S


def kda_recurrent(mixer, x, state=None):
    """Kimi Delta Attention token by token (transformers' ``recurrent_kimi_delta_attention``):
    per head, S <- e^g o S (g a head_dim vector scaling S's rows), u = beta (v - S^T k),
    S <- S + k u^T, o = S^T q; then o_norm(o) * sigmoid(gate), o_proj."""
    d = mixer.spec
    b, m, _ = x.shape
    H, hd, w = d.n_heads, d.head_dim, d.width
    qkv, conv = _conv_steps(F.linear(x, mixer.qkv_proj.weight), mixer.conv_weight, None,
                            None if state is None else state.conv)
    f = F.linear(F.linear(x, mixer.f_a_proj.weight), mixer.f_b_proj.weight)
    g = (-torch.exp(mixer.A_log)[:, None] * F.softplus(f + mixer.dt_bias).reshape(b, m, H, hd))
    beta = torch.sigmoid(F.linear(x, mixer.b_proj.weight))
    z = F.linear(F.linear(x, mixer.g_a_proj.weight), mixer.g_b_proj.weight).reshape(b, m, H, hd)
    S = torch.zeros(b, H, hd, hd, dtype=x.dtype) if state is None else state.ssm.to(x.dtype).clone()
    outs = []
    for t in range(m):
        q = qkv[:, t, :w].reshape(b, H, hd)
        k = qkv[:, t, w:2 * w].reshape(b, H, hd)
        v = qkv[:, t, 2 * w:].reshape(b, H, hd)
        q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6) / math.sqrt(hd)
        k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
        o = torch.empty(b, H, hd, dtype=x.dtype)
        for h in range(H):
            Sh = torch.exp(g[:, t, h])[:, :, None] * S[:, h]  # row c of S times e^(g[c])
            u = beta[:, t, h, None] * (v[:, h] - (Sh * k[:, h, :, None]).sum(1))
            Sh = Sh + k[:, h, :, None] * u[:, None, :]
            S[:, h] = Sh
            o[:, h] = (Sh * q[:, h, :, None]).sum(1)
        outs.append(o)
    o = torch.stack(outs, dim=1)  # (b, m, H, d)
    y = _rms(o, mixer.eps) * mixer.norm_weight * torch.sigmoid(z)
    return F.linear(y.reshape(b, m, w), mixer.o_proj.weight), conv, S


def lightning_recurrent(mixer, x, state=None):
    d = mixer.spec
    b, m, _ = x.shape
    H, hd = d.n_heads, d.head_dim
    qkv = F.silu(F.linear(x, mixer.qkv_proj.weight)).reshape(b, m, H, 3 * hd)
    lam = torch.exp(-torch.tensor(mixer.slopes, dtype=x.dtype))
    S = torch.zeros(b, H, hd, hd, dtype=x.dtype) if state is None else state.ssm.to(x.dtype).clone()
    outs = []
    for t in range(m):
        q, k, v = qkv[:, t, :, :hd], qkv[:, t, :, hd:2 * hd], qkv[:, t, :, 2 * hd:]
        S = lam[None, :, None, None] * S + k[..., :, None] * v[..., None, :]
        outs.append((q[..., :, None] * S).sum(-2))
    o = torch.stack(outs, dim=1).reshape(b, m, H * hd)
    y = _rms(o, mixer.eps) * mixer.norm_weight * torch.sigmoid(F.linear(x, mixer.output_gate.weight))
    return F.linear(y, mixer.out_proj.weight), None, S


def mamba1_recurrent(mixer, x, state=None):
    d = mixer.spec
    b, m, _ = x.shape
    di, N, R = d.d_inner, d.d_state, d.dt_rank
    xz = F.linear(x, mixer.in_proj.weight, mixer.in_proj.bias)
    xs, conv = _conv_steps(xz[..., :di], mixer.conv_weight, mixer.conv_bias, None if state is None else state.conv)
    dbc = F.linear(xs, mixer.x_proj.weight)
    dt_low, Bm, Cm = dbc[..., :R], dbc[..., R:R + N], dbc[..., R + N:]
    if d.bcdt_norm != "none":
        dt_low, Bm, Cm = _rms(dt_low, mixer.eps), _rms(Bm, mixer.eps), _rms(Cm, mixer.eps)
        if d.bcdt_norm == "weighted":
            dt_low, Bm, Cm = dt_low * mixer.dt_norm, Bm * mixer.b_norm, Cm * mixer.c_norm
    dt = F.softplus(F.linear(dt_low, mixer.dt_proj.weight, mixer.dt_proj.bias))
    A = -torch.exp(mixer.A_log)
    S = torch.zeros(b, di, N, dtype=x.dtype) if state is None else state.ssm.to(x.dtype).clone()
    ys = []
    for t in range(m):
        S = torch.exp(dt[:, t, :, None] * A) * S + (dt[:, t] * xs[:, t])[..., None] * Bm[:, t, None, :]
        ys.append((S * Cm[:, t, None, :]).sum(-1) + mixer.D * xs[:, t])
    y = torch.stack(ys, dim=1) * F.silu(xz[..., di:])
    return F.linear(y, mixer.out_proj.weight, mixer.out_proj.bias), conv, S


def short_conv_recurrent(mixer, x, state=None):
    """LFM2's gated short conv token by token: u_t = B_t x'_t, y_t = C_t sum_j w_j u_(t-K+1+j) (+ bias), no
    activation. Returns (out, last K - 1 inputs, None: no recurrent state)."""
    d = mixer.spec
    b, m, _ = x.shape
    c, k = d.channels, d.kernel
    bcx = F.linear(x, mixer.in_proj.weight, mixer.in_proj.bias)
    Bm, Cm, xp = bcx[..., :c], bcx[..., c:2 * c], bcx[..., 2 * c:]
    u = Bm * xp
    hist = (torch.zeros(b, c, k - 1, dtype=x.dtype) if state is None else state.conv.to(x.dtype)).clone()
    ys = []
    for t in range(m):
        window = torch.cat([hist, u[:, t, :, None]], dim=-1)  # (b, c, K)
        o = (window * mixer.conv_weight[:, 0, :]).sum(-1)
        if mixer.conv_bias is not None:
            o = o + mixer.conv_bias
        ys.append(Cm[:, t] * o)
        hist = window[..., 1:]
    y = torch.stack(ys, dim=1)
    return F.linear(y, mixer.out_proj.weight, mixer.out_proj.bias), hist, None
