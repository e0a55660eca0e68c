"""Gated DeltaNet mixer (Qwen3-Next, Qwen3.5): FLOPs, bytes, state of a ``GatedDeltaNetSpec``.

    x ─ in_proj_qkvz ─┬─ q, k (Hk x dk), v (Hv x dv) ─ conv1d(K) ─ SiLU ─ l2norm(q, k) ─┐
                      └─ z (Hv x dv) ───────────────────────────────────────────────────┼─ RMSNormGated ─ out_proj
      in_proj_ba ─ beta = sigmoid(b), g = -exp(A_log) softplus(a + dt_bias) ─ delta rule ┘   norm(o) * silu(z)

Per value head (q, k repeated from the Hk key heads when Hv > Hk) with state S (dk x dv), per
token: S <- exp(g) S; S <- S + k (beta (v - S^T k))^T; o = S^T q.

Chunked prefill (chunk L = ``CHUNK`` = 64: fla's ``chunk_gated_delta_rule`` and transformers'
``torch_chunk_gated_delta_rule``; lcprof's torch layer runs the same products, the WY form), per
chunk of l tokens and value head, 2 FLOPs per multiply-add:
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

State per sequence (``GatedDeltaNetSpec.state_elements``; under TP vLLM's
``MambaStateShapeCalculator.gated_delta_net_state_shape`` splits both): conv
(2 Hk dk + Hv dv) x (K - 1) and the recurrent Hv x dk x dv, in the model dtype unless
``mamba_ssm_cache_dtype`` (``state_dtype``) says otherwise (``MambaStateDtypeCalculator.
gated_delta_net_state_dtype``, vllm/model_executor/layers/mamba/mamba_utils.py).
No torch.
"""

from __future__ import annotations

import numpy as np

from lcprof.cost.kinds.common import (Op, check_tp, chunk_sums, conv_op, gated_norm_steps, proj_ops, state_dtype_bytes,
                                      step_scalars)
from lcprof.units import dtype_bytes

#: Tokens per chunk of the chunked delta rule (fla ``chunk_gated_delta_rule``: BT = 64).
CHUNK = 64


def state_elements(m, tp: int = 1) -> dict[str, int]:
    if tp == 1:
        return m.state_elements()
    vh = check_tp(m.num_v_heads, tp, "Gated DeltaNet value heads")
    check_tp(m.num_k_heads, tp, "Gated DeltaNet key heads")
    return {"conv": (m.conv_kernel - 1) * m.conv_dim // tp, "recurrent": vh * m.head_k_dim * m.head_v_dim}


def ops(m, n, prefix=0, *, batch: int = 1, dtype: str = "bf16", state_dtype: str | None = None,
        chunk: int | None = None) -> list[Op]:
    s = dtype_bytes(dtype)
    ss = state_dtype_bytes(dtype, state_dtype)
    n = np.asarray(n, dtype=np.float64)
    b = float(batch)
    t = b * n
    Hv, dk, dv = m.num_v_heads, m.head_k_dim, m.head_v_dim
    step = n == 1
    _, sq, tri = chunk_sums(n, chunk or CHUNK)
    zero = np.zeros_like(t)
    qkvz, ba, out_proj = proj_ops(m, t, s)
    out = [qkvz, ba, conv_op(t, b, m.conv_dim, m.conv_kernel, s)]
    quad = 2 * b * Hv * dk * sq
    out.append(Op("mixer/kk", np.where(step, 0.0, quad), np.where(step, 0.0, 2 * b * Hv * dk * (tri - n)), zero))
    solve = b * Hv * (dk + dv) * (sq - n)  # sum over chunks of (dk + dv) l (l - 1)
    out.append(Op("mixer/solve", np.where(step, 0.0, solve), np.where(step, 0.0, solve), zero))
    out.append(Op("mixer/qk", np.where(step, 0.0, quad), np.where(step, 0.0, 2 * b * Hv * dk * tri), zero))
    out.append(Op("mixer/intra_v", np.where(step, 0.0, 2 * b * Hv * dv * sq),
                  np.where(step, 0.0, 2 * b * Hv * dv * tri), zero))
    lin = 2 * t * Hv * dk * dv
    out.append(Op("mixer/state_read", 2 * lin, 2 * lin, zero))  # W S and (Q o e^g) S; decode: S^T k, S^T q
    out.append(Op("mixer/state_write", lin, lin, zero))  # (K o e^..)^T V'; decode: the rank-1 update
    # q, k (repeated per value head), v (model dtype) and g, beta (fp32) read, o written, the
    # state read and written
    core_io = s * t * (2 * Hv * dk + 2 * Hv * dv) + 8 * t * Hv + 2 * ss * b * Hv * dk * dv
    out.append(Op("mixer/core_io", zero, zero, core_io))
    out.append(Op("mixer/norm", zero, zero, s * t * 3 * m.value_dim + s * m.head_v_dim))
    out.append(out_proj)
    return out


def activation_steps(m, n, *, batch: int = 1, dtype: str = "bf16", prefix=0, chunk: int | None = None,
                     state_dtype: str | None = None) -> dict[str, np.ndarray]:
    """Bytes live at each memory-heavy step of lcprof's measured Gated DeltaNet layer
    (``lcprof.measure.mixers.deltanet``) over n new tokens: the input, the projections, the conv
    window and output, beta and g, the state and the output buffer; inside the chunk loop one
    chunk's q, k (l2-normalized, repeated per value head), v, the (l x l) decay, K K^T and
    Q K^T, the solve's right-hand side and solution, V', the partial outputs and the state update
    (decode: S^T k and the rank-1 update); then the gated RMSNorm and out_proj. Weights and the
    carried-in state are not counted. Arrays over n."""
    s, ss, c, low, n, b, t = step_scalars(n, batch, dtype, state_dtype)
    Hv, dk, dv, K, cd, vw = m.num_v_heads, m.head_k_dim, m.head_v_dim, m.conv_kernel, m.conv_dim, m.value_dim
    qkvz, ba, _ = m.linears()
    S_el = b * Hv * dk * dv
    X, QZ, BA = s * t * m.hidden_size, s * t * qkvz.d_out, s * t * ba.d_out
    cs = s * b * cd * (K - 1)
    cout = s * b * cd * n
    st: dict[str, np.ndarray] = {"mixer/in_proj": X + QZ, "mixer/in_proj_ba": X + QZ + BA,
                                 "mixer/conv": X + QZ + BA + s * b * cd * (n + K - 1) + cs + cout}
    base0 = X + QZ + BA + cout + cs
    # beta, then softplus(a + dt_bias) with its input (and, fp16/bf16, dt_bias's float32 copy),
    # then -exp(A_log) (exp and its negation) times it: the larger of the two moments
    st["mixer/gates"] = base0 + 2 * c * t * Hv + np.maximum(c * t * Hv + (c * Hv if low else 0.0), 2 * c * Hv)
    loop = base0 + 2 * c * t * Hv + c * S_el + s * t * vw
    l = np.minimum(n, float(chunk or CHUNK))
    qk1, v1, ch, sq = c * b * Hv * l * dk, c * b * Hv * l * dv, c * b * Hv * l, c * b * Hv * l * l
    chunked = n > 1
    st["mixer/chunk_l2norm"] = loop + 3 * qk1 + ch  # q, k being normalized, its squares and their sum
    st["mixer/chunk_kk"] = np.where(chunked, loop + 2 * qk1 + v1 + ch + 2 * sq, 0.0)
    st["mixer/chunk_rhs"] = np.where(chunked, loop + 3 * qk1 + 2 * v1 + 3 * ch + 2 * sq, 0.0)
    st["mixer/chunk_solve"] = np.where(chunked, loop + 4 * qk1 + 2 * v1 + 2 * ch + 2 * sq, 0.0)
    st["mixer/chunk_vprime"] = np.where(chunked, loop + 3 * qk1 + 3 * v1 + 2 * ch + sq, 0.0)
    st["mixer/chunk_qk"] = np.where(chunked, loop + 2 * qk1 + v1 + 2 * ch + 2 * sq, 0.0)
    st["mixer/chunk_intra"] = np.where(chunked, loop + 2 * qk1 + 2 * v1 + 2 * ch + sq, 0.0)
    st["mixer/chunk_state_in"] = np.where(chunked, loop + 2 * qk1 + 3 * v1 + 2 * ch, 0.0)
    st["mixer/chunk_out"] = np.where(chunked, loop + qk1 + 2 * v1 + ch, 0.0)  # k, V', o written out, gam
    # k, V', gam and either the decay to the chunk's end (made first) or the state update
    st["mixer/chunk_state"] = np.where(chunked, loop + qk1 + v1 + ch + np.maximum(ch, c * S_el), 0.0)
    st["mixer/step_kv"] = np.where(chunked, 0.0, loop + 2 * qk1 + 2 * v1)
    st["mixer/step"] = np.where(chunked, 0.0, loop + 2 * qk1 + v1 + c * S_el)
    post = X + QZ + cs + ss * S_el + s * t * vw
    st["mixer/state_out"] = post + (c * S_el if ss != c else 0.0)
    st.update(gated_norm_steps(post, t, vw, Hv, s, norm=True, norm_first=True))
    st["mixer/out_proj"] = X + cs + ss * S_el + s * t * vw + s * t * m.hidden_size
    return st
