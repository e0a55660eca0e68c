"""Mamba-2 / SSD mixer (Nemotron-H, Falcon-H1, Bamba, Zamba2): FLOPs, bytes, state of a
``Mamba2Spec`` (whose ``linears()``/``other_params()`` are its parameters).

    x ─ in_proj ─┬─ z ──────────────────────────────────────────────┐
                 ├─ xBC ─ conv1d(K) ─ SiLU ─ x (H x P), B, C (G x N) ├─ gated RMSNorm ─ out_proj
                 └─ dt ─ softplus(dt + dt_bias) ─────────── SSD ─────┘   rmsnorm(y * silu(z))

d_inner = heads x head_dim; conv channels = d_inner + 2 n_groups d_state. Per head h with state S
(head_dim x d_state), per token: S <- exp(dt A_h) S + dt x B^T, y = S C + D x (B, C shared by the
heads of a group).

Chunked prefill (chunk Q = ``chunk_size``, each chunk of l <= Q tokens, as
``mamba_chunk_scan_combined`` and lcprof's torch layer run it), FLOPs per chunk:
    C B^T per group                 2 G l^2 N      (l x N) @ (N x l)
    (C B^T o decay o dt) @ x        2 H l^2 P      (l x l) @ (l x P)
    C @ S^T (the carried state)     2 H l P N      (l x N) @ (N x P)
    (x o decay o dt)^T @ B          2 H l P N      (P x l) @ (l x N)  -> the chunk's new state
The first two are quadratic in l: executed l^2, useful (causal) l(l+1)/2. Passing the state from
chunk to chunk is a scale and an add (bytes only). Decode (n == 1, ``selective_state_update``):
the outer product dt x B^T (2 H P N) and the read-out S C (2 H P N).

State per sequence (``Mamba2Spec.state_elements``; under TP vLLM's
``MambaStateShapeCalculator.mamba2_state_shape``: heads split, groups split or replicated
(``extra_groups_for_head_shards``)): conv in the model dtype, SSM in the model dtype unless
``mamba_ssm_cache_dtype`` (``state_dtype``) says otherwise (``MambaStateDtypeCalculator``,
vllm/model_executor/layers/mamba/mamba_utils.py).
No torch.
"""

from __future__ import annotations

import numpy as np

from lcprof.cost.kinds.common import (Op, check_tp, chunk_sums, conv_op, gated_norm_steps, proj_ops, state_dtype_bytes,
                                      step_scalars)
from lcprof.units import dtype_bytes


def state_elements(m, tp: int = 1) -> dict[str, int]:
    """Per sequence on one of ``tp`` ranks (``Mamba2Spec.state_elements`` at tp = 1)."""
    if tp == 1:
        return m.state_elements()
    heads = check_tp(m.n_heads, tp, "Mamba-2 heads")
    groups = m.n_groups + (0 if m.n_groups % tp == 0 else tp - m.n_groups)
    conv = check_tp(m.d_inner + 2 * groups * m.d_state, tp, "Mamba-2 conv channels")
    return {"conv": conv * (m.d_conv - 1), "ssm": heads * m.head_dim * m.d_state}


def ops(m, n, prefix=0, *, batch: int = 1, dtype: str = "bf16", state_dtype: str | None = None,
        chunk: int | None = None) -> list[Op]:
    s = dtype_bytes(dtype)
    ss = state_dtype_bytes(dtype, state_dtype)
    n = np.asarray(n, dtype=np.float64)
    b = float(batch)
    t = b * n
    H, P, N, G = m.n_heads, m.head_dim, m.d_state, m.n_groups
    step = n == 1  # the recurrent decode kernel; chunked otherwise
    chunks, sq, tri = chunk_sums(n, chunk or m.chunk_size)
    zero = np.zeros_like(t)
    state_elems = b * H * P * N
    in_proj, out_proj = proj_ops(m, t, s)
    out = [in_proj, conv_op(t, b, m.conv_dim, m.d_conv, s)]
    out.append(Op("mixer/intra_cb", np.where(step, 0.0, 2 * b * G * N * sq), np.where(step, 0.0, 2 * b * G * N * tri),
                  np.where(step, 0.0, 2 * 4 * b * G * sq)))  # C B^T written and read back (fp32)
    out.append(Op("mixer/intra_x", np.where(step, 0.0, 2 * b * H * P * sq), np.where(step, 0.0, 2 * b * H * P * tri),
                  zero))
    lin = 2 * t * H * P * N
    out.append(Op("mixer/state_read", lin, lin, zero))  # C S^T (decode: S C)
    out.append(Op("mixer/state_write", lin, lin, zero))  # x^T B (decode: dt x B^T)
    # x, B, C (model dtype) and dt (fp32) read, y written, the state read and written; the
    # chunked kernels also write each chunk's state (fp32) and read it back
    core_io = s * t * (m.d_inner + 2 * G * N) + 4 * t * H + s * t * m.d_inner + 2 * ss * state_elems
    out.append(Op("mixer/core_io", zero, zero, core_io + np.where(step, 0.0, 2 * 4 * chunks * state_elems)))
    # gated RMSNorm: read y and z, write the output, read the weight
    out.append(Op("mixer/norm", zero, zero, s * t * 3 * m.d_inner + (s * m.d_inner if m.norm else 0)))
    out.append(out_proj)
    return out


def activation_steps(m, n, *, batch: int = 1, dtype: str = "bf16", prefix=0, chunk: int | None = None,
                     state_dtype: str | None = None) -> dict[str, np.ndarray]:
    """Bytes live at each memory-heavy step of lcprof's measured Mamba-2 layer
    (``lcprof.measure.mixers.mamba2``) over n new tokens: the input, in_proj's output (z, xBC, dt),
    the conv window and output, dt, the state and the output buffer; inside the chunk loop one
    chunk's x, B, C, cumulative decays, the (l x l) decay and C B^T, the partial outputs and the
    chunk-state product (decode: the outer-product update); then the gated RMSNorm and out_proj.
    Weights and the carried-in state are not counted (they exist before the call). Arrays over n.
    """
    s, ss, c, low, n, b, t = step_scalars(n, batch, dtype, state_dtype)
    H, P, N, G, K, cd, di = m.n_heads, m.head_dim, m.d_state, m.n_groups, m.d_conv, m.conv_dim, m.d_inner
    width = m.linears()[0].d_out
    S_el = b * H * P * N
    X, Z = s * t * m.hidden_size, s * t * width
    cs = s * b * cd * (K - 1)
    cout = s * b * cd * n
    st: dict[str, np.ndarray] = {"mixer/in_proj": X + Z, "mixer/conv": X + Z + s * b * cd * (n + K - 1) + cs + cout}
    base0 = X + Z + cout + cs
    st["mixer/dt"] = base0 + c * H + 2 * c * t * H + (c * H if low else 0.0)
    loop = base0 + c * H + c * t * H + (c * H if low else 0.0) + c * S_el + s * t * di
    q = float(chunk or m.chunk_size)
    l = np.minimum(n, q)
    core = c * b * l * (H * P + 2 * G * N)  # x, B, C of one chunk
    acum = c * b * H * l
    sq_h, sq_g, lp = c * b * H * l * l, c * b * G * l * l, c * b * H * l * P
    chunked = n > 1
    st["mixer/chunk_cb"] = np.where(chunked, loop + core + acum + sq_h + sq_g, 0.0)
    st["mixer/chunk_intra"] = np.where(chunked, loop + core + acum + sq_h + lp, 0.0)
    st["mixer/chunk_state_in"] = np.where(chunked, loop + core + 2 * acum + 2 * lp, 0.0)
    st["mixer/chunk_decay"] = np.where(chunked, loop + core + 2 * acum + lp, 0.0)
    st["mixer/chunk_state"] = np.where(chunked, loop + c * b * l * 2 * G * N + acum + lp + c * S_el, 0.0)
    st["mixer/step"] = np.where(chunked, 0.0, loop + c * b * (2 * H * P + 2 * G * N) + c * S_el)
    post = X + Z + cs + ss * S_el + s * t * di
    st["mixer/state_out"] = post + (c * S_el if ss != c else 0.0)
    st.update(gated_norm_steps(post, t, di, G, s, norm=m.norm, norm_first=m.norm_before_gate))
    st["mixer/out_proj"] = X + cs + ss * S_el + s * t * di + s * t * m.hidden_size
    return st
