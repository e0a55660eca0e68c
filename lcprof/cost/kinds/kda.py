"""Kimi Delta Attention, KDA (Kimi Linear): FLOPs, bytes, state of a ``KimiDeltaSpec``.

    x ─ q/k/v_proj ─ conv1d(K) ─ SiLU ─ l2norm(q, k) ─────────────────┐
      ─ f_a_proj ─ f_b_proj ─ g = -exp(A_log) softplus(. + dt_bias) ─┤ delta rule ─ o_norm(o) * sigmoid(z) ─ o_proj
      ─ b_proj ─ beta = sigmoid(.)  (H) ─────────────────────────────┘               │
      ─ g_a_proj ─ g_b_proj ─ z (H x d) ────────────────────────────────────────────┘
    (g and z: H x d per token)

Per head with state S (d x d), per token: S <- e^g o S (g a d-vector: each row of S its own decay);
S <- S + k (beta (v - S^T k))^T; o = S^T q. Gated DeltaNet is the case of g equal across channels.

Chunked prefill (fla's ``chunk_kda``: chunks of L = ``CHUNK`` = 64, the pairs of a chunk in
sub-chunks of ``SUB`` = 16), per chunk of l tokens and head, 2 FLOPs per multiply-add:
    Akk = (K K^T with per-channel decays)   2 d x (pairs computed)        s < t useful
    Aqk = (Q K^T with per-channel decays)   2 d x (pairs computed)        s <= t useful
      the pairs of a sub-chunk row with the sub-chunks before it are one matrix product
      (``mixer/kk``, ``mixer/qk``); those inside a diagonal sub-chunk (l_I^2 each) are formed with
      their (l_I, l_I, d) decays and summed elementwise (``mixer/kk_diag``, ``mixer/qk_diag``);
      the sub-chunks above the diagonal are never computed
    solve (I + beta Akk) [U W] = [beta V, beta K o e^gam]   2 d l (l - 1)
    V' = U - W S                             2 l d^2
    o = (Q o e^gam) S + Aqk V'               2 l d^2 + 2 l^2 d
    S <- e^gam_l o S + (K o e^(gam_l - gam))^T V'   2 l d^2
Decode (n == 1, ``fused_recurrent_kda``): S^T k, the rank-1 update and S^T q: 6 d^2 per head.

State per sequence (``KimiDeltaSpec.state_elements``): conv 3 H d x (K - 1) in the model dtype and
the recurrent H x d x d **in float32 whatever the model's dtype or mamba_ssm_cache_dtype**
(:func:`fixed_state_dtype`): vLLM's ``MambaStateDtypeCalculator.kda_state_dtype`` returns float32
for it, and transformers' cache keeps it so too. Under TP vLLM splits
the heads (q/k/v, f_b, g_b and b_proj column-parallel, o_proj row-parallel, f_a and g_a replicated).
No torch.
"""

from __future__ import annotations

import numpy as np

from lcprof.cost.kinds.common import Op, check_tp, chunk_sums, conv_op, gated_norm_steps, proj_ops, step_scalars
from lcprof.errors import LcprofError
from lcprof.units import dtype_bytes, dtype_name

#: Tokens per chunk of the chunked KDA (fla ``chunk_kda``: chunk_size = 64).
CHUNK = 64
#: Tokens per sub-chunk of a chunk's pair products (fla ``chunk_kda_fwd_intra``: BC = 16).
SUB = 16


def fixed_state_dtype(dtype: str) -> str:
    """The dtype KDA's recurrent state is kept in for a model in ``dtype``: float32, or the dtype itself
    when wider (a float64 measurement) -- never narrower, whatever state dtype is asked for."""
    return "fp32" if dtype_bytes(dtype) <= 4 else dtype_name(dtype)


def recurrent_bytes(dtype: str) -> float:
    """Bytes per element of KDA's recurrent state (:func:`fixed_state_dtype`)."""
    return dtype_bytes(fixed_state_dtype(dtype))


def state_elements(m, tp: int = 1) -> dict[str, int]:
    if tp == 1:
        return m.state_elements()
    h = check_tp(m.n_heads, tp, "KDA heads")
    return {"conv": (m.conv_kernel - 1) * m.conv_dim // tp, "recurrent": h * m.head_dim * m.head_dim}


def _diag_pairs(l, sub: int) -> np.ndarray:
    """Pairs (t, s) inside the diagonal sub-chunks of a chunk of l tokens: sum of l_I^2."""
    full = np.floor(l / sub)
    rem = l - full * sub
    return full * sub * sub + rem * rem


def sub_chunk_pairs(n, chunk: int, sub: int) -> tuple[np.ndarray, np.ndarray]:
    """(pairs inside the diagonal sub-chunks, pairs below them) over the chunks of n tokens: a chunk
    of l tokens computes sum l_I^2 pairs elementwise and (l^2 - sum l_I^2) / 2 by matrix products."""
    if isinstance(sub, bool) or int(sub) != sub or sub <= 0:
        raise LcprofError(f"sub-chunk size must be a positive integer, got {sub!r}")
    n = np.asarray(n, dtype=np.float64)
    q = float(chunk)
    full = np.floor(n / q)
    rem = n - full * q
    diag = full * _diag_pairs(q, sub) + _diag_pairs(rem, sub)
    below = full * (q * q - _diag_pairs(q, sub)) / 2 + (rem * rem - _diag_pairs(rem, sub)) / 2
    return diag, below


def ops(m, n, prefix=0, *, batch: int = 1, dtype: str = "bf16", state_dtype: str | None = None,
        chunk: int | None = None, sub: int | None = None) -> list[Op]:
    s = dtype_bytes(dtype)
    ss = recurrent_bytes(dtype)  # the engines' float32 state, whatever ``state_dtype`` says
    n = np.asarray(n, dtype=np.float64)
    b = float(batch)
    t = b * n
    H, d, w = m.n_heads, m.head_dim, m.width
    step = n == 1
    L = chunk or CHUNK
    _, sq, tri = chunk_sums(n, L)
    diag, below = sub_chunk_pairs(n, L, sub or SUB)
    zero = np.zeros_like(t)

    def chunked(v):
        return np.where(step, 0.0, v)

    lin = proj_ops(m, t, s)
    out = lin[:-1] + [conv_op(t, b, m.conv_dim, m.conv_kernel, s)]
    # the decay's gate: f_b's output (model dtype) and dt_bias read, g written in float32
    out.append(Op("mixer/gate_prep", zero, zero, s * t * w + 4 * w + 4 * H + 4 * t * w))
    pair = 2 * b * H * d
    out.append(Op("mixer/kk", chunked(pair * below), chunked(pair * below), zero))
    out.append(Op("mixer/kk_diag", chunked(pair * diag), chunked(pair * (tri - n - below)), zero))
    out.append(Op("mixer/qk", chunked(pair * below), chunked(pair * below), zero))
    out.append(Op("mixer/qk_diag", chunked(pair * diag), chunked(pair * (tri - below)), zero))
    solve = b * H * 2 * d * (sq - n)  # sum over chunks of (d + d) l (l - 1)
    out.append(Op("mixer/solve", chunked(solve), chunked(solve), zero))
    out.append(Op("mixer/intra_v", chunked(2 * b * H * d * sq), chunked(2 * b * H * d * tri), zero))
    sd = 2 * t * H * d * d
    out.append(Op("mixer/state_read", 2 * sd, 2 * sd, zero))  # W S and (Q o e^gam) S; decode: S^T k, S^T q
    out.append(Op("mixer/state_write", sd, sd, zero))  # (K o e^..)^T V'; decode: the rank-1 update
    # q, k, v read and o written (model dtype), g (float32, per channel) and beta (float32) read,
    # the state read and written
    core_io = s * t * 4 * w + 4 * t * w + 4 * t * H + 2 * ss * b * H * d * d
    out.append(Op("mixer/core_io", zero, zero, core_io))
    out.append(Op("mixer/norm", zero, zero, s * t * 3 * w + s * d))  # o and z read, y written; o_norm
    out.append(lin[-1])  # o_proj
    return out


def _pair_step(l, d: int, sub: int) -> np.ndarray:
    """Elements per (batch x head) the pair loop adds at its fullest, over its sub-chunks: the
    diagonal sub-chunk's (l_I, l_I, d) decays, their product with a key and its sum over channels
    (2 l_I^2 d + l_I^2); a lower sub-chunk's row decays, the decayed keys before it, the decayed
    rows and their product (2 l_I d + i0 d + l_I i0)."""
    l = np.asarray(l, dtype=np.float64)
    top = np.zeros_like(l)
    for j in range(int(np.ceil(float(np.max(l, initial=0.0)) / sub))):
        i0 = float(j * sub)
        ci = np.clip(l - i0, 0.0, float(sub))
        here = ci > 0
        diag = 2 * ci * ci * d + ci * ci
        below = (2 * ci * d + i0 * d + ci * i0) if j else np.zeros_like(l)
        top = np.where(here, np.maximum(top, np.maximum(diag, below)), top)
    return top


def activation_steps(m, n, *, batch: int = 1, dtype: str = "bf16", prefix=0, chunk: int | None = None,
                     state_dtype: str | None = None, sub: int | None = None) -> dict[str, np.ndarray]:
    """Bytes live at each memory-heavy step of lcprof's measured KDA layer
    (``lcprof.measure.mixers.kda``) over n new tokens: the input, the q/k/v projection, the decay's
    low-rank pair and beta's projection, the conv window and output, beta and the per-channel decay;
    inside the chunk loop one chunk's q, k, v (float32 for fp16/bf16), its cumulative decays, the
    two (l x l) pair matrices and the pair loop's temporaries, the solve's right-hand side and
    solution, V', the partial outputs and the state update (decode: S^T k and the rank-1 update);
    then the output gate's low-rank pair, the sigmoid-gated RMSNorm and o_proj. Weights and the
    carried-in state are not counted. Arrays over n."""
    # the measured layer carries its state in float32 (the core's dtype) unless asked for another
    s, ss, c, low, n, b, t = step_scalars(n, batch, dtype, state_dtype)
    ss = ss if state_dtype is not None else c
    H, d, w, K, cd, hid = m.n_heads, m.head_dim, m.width, m.conv_kernel, m.conv_dim, m.hidden_size
    S_el = b * H * d * d
    X, QKV, FB, BP = s * t * hid, s * t * cd, s * t * w, s * t * H
    cs = s * b * cd * (K - 1)
    cout = s * b * cd * n
    st: dict[str, np.ndarray] = {"mixer/in_proj": X + QKV, "mixer/f_proj": X + QKV + s * t * d + FB,
                                 "mixer/b_proj": X + QKV + FB + BP,
                                 "mixer/conv": X + QKV + FB + BP + s * b * cd * (n + K - 1) + cs + cout}
    base0 = X + cout + cs
    beta, gw = c * t * H, c * t * w
    st["mixer/gates"] = np.maximum.reduce([
        X + QKV + FB + BP + cs + cout,  # the conv's SiLU, the projections still held
        base0 + FB + BP + (beta if low else 0.0) + beta,  # sigmoid(b) (and b's float32 copy)
        base0 + FB + beta + ((gw + c * w) if low else 0.0) + gw,  # f_b(.) + dt_bias (their float32 copies)
        base0 + FB + beta + 2 * gw,  # its softplus
        base0 + FB + beta + gw + 2 * c * H])  # -exp(A_log) (exp, negation)
    loop = base0 + beta + gw + c * S_el + s * t * w
    l = np.minimum(n, float(chunk or CHUNK))
    bh = c * b * H
    qk1, ch, sq = bh * l * d, bh * l, bh * l * l
    chunked = n > 1
    st["mixer/chunk_l2norm"] = loop + 3 * qk1 + ch  # q, k being normalized, its squares and their sum
    pairs = loop + 3 * qk1 + qk1 + 2 * sq  # q, k, v, the cumulative decays, Akk and Aqk
    st["mixer/chunk_pairs"] = np.where(chunked, pairs + bh * _pair_step(l, d, sub or SUB), 0.0)
    st["mixer/chunk_rhs"] = np.where(chunked, pairs + qk1 + 2 * qk1, 0.0)  # e^gam, [beta V, beta K o e^gam]
    st["mixer/chunk_solve"] = np.where(chunked, loop + 2 * qk1 + 2 * qk1 + 2 * sq + 4 * qk1, 0.0)
    st["mixer/chunk_vprime"] = np.where(chunked, loop + 6 * qk1 + 2 * qk1 + sq, 0.0)  # [U W], W S, V'
    st["mixer/chunk_intra"] = np.where(chunked, loop + 4 * qk1 + 2 * qk1 + sq, 0.0)  # V', Aqk V'
    st["mixer/chunk_state_in"] = np.where(chunked, loop + 5 * qk1 + 2 * qk1, 0.0)  # + (Q o e^gam) S
    st["mixer/chunk_out"] = np.where(chunked, loop + 3 * qk1 + qk1, 0.0)  # k, V', o, the decays
    # k, the decays, V', the decay to the chunk's end and the state update
    st["mixer/chunk_state"] = np.where(chunked, loop + 3 * qk1 + bh * d + c * S_el, 0.0)
    st["mixer/step_kv"] = np.where(chunked, 0.0, loop + 4 * qk1)  # q, k, v and e^g or S^T k
    st["mixer/step"] = np.where(chunked, 0.0, loop + 3 * qk1 + c * S_el)
    post = X + cs + ss * S_el + s * t * w
    st["mixer/state_out"] = post + (c * S_el if ss != c else 0.0)
    st["mixer/g_proj"] = post + s * t * d + s * t * w
    st.update(gated_norm_steps(post + s * t * w, t, w, H, s, norm=True, norm_first=True))
    st["mixer/out_proj"] = X + cs + ss * S_el + s * t * w + s * t * hid
    return st
