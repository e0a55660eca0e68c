"""Lightning attention (MiniMax-Text-01 / MiniMax-M1): FLOPs, bytes, state of a ``LightningSpec``.

    x ─ qkv_proj ─ SiLU ─ q, k, v (H x d) ─ linear attention with decay ─ RMSNorm(H d) ─┐
    x ─ output_gate ─ sigmoid ───────────────────────────────────────────────────────── x ─ out_proj

Per head with state KV (d x d) and decay lambda = exp(-slope_h), per token: KV <- lambda KV +
k^T v, o = q KV (no softmax, no denominator: the output RMSNorm does the scaling). transformers'
``MiniMaxLightningAttention`` and lcprof's torch layer run it per block of B tokens (``BLOCK`` =
256, MiniMax's ``block_size``; l <= B):
    intra:   (Q K^T o lambda^(t-s), causal) @ V      2 l^2 d + 2 l^2 d
    inter:   (Q o lambda^(t+1)) @ KV                  2 l d^2
    update:  KV <- lambda^l KV + (K o lambda^(l-1-s))^T V   2 l d^2
Decode (n == 1): k^T v and q KV, 4 d^2 per head.

State per sequence (vLLM ``linear_attention_state_shape``): heads x d x d in the model dtype
(``MambaStateDtypeCalculator.linear_attention_state_dtype``); no conv state.
No torch.
"""

from __future__ import annotations

import numpy as np

from lcprof.cost.kinds.common import Op, check_tp, chunk_sums, proj_ops, state_dtype_bytes, step_scalars
from lcprof.units import dtype_bytes

#: Tokens per block (MiniMax-Text-01 / M1 ``block_size``; transformers' MiniMaxConfig default).
BLOCK = 256


def block_size(m) -> int:
    """The spec's lightning block (a ``block_size`` field when the spec carries one), else ``BLOCK``:
    the intra-block products grow with it (2 l^2 d per block of l), the state products do not."""
    return int(getattr(m, "block_size", None) or BLOCK)


def state_elements(m, tp: int = 1) -> dict[str, int]:
    if tp == 1:
        return m.state_elements()
    return {"kv": check_tp(m.n_heads, tp, "lightning-attention heads") * m.head_dim * m.head_dim}


def ops(m, n, prefix=0, *, batch: int = 1, dtype: str = "bf16", state_dtype: str | None = None,
        chunk: int | None = None) -> list[Op]:
    s = dtype_bytes(dtype)
    ss = state_dtype_bytes(dtype, state_dtype)
    n = np.asarray(n, dtype=np.float64)
    b = float(batch)
    t = b * n
    H, d = m.n_heads, m.head_dim
    w = H * d
    step = n == 1
    _, sq, tri = chunk_sums(n, chunk or block_size(m))
    zero = np.zeros_like(t)
    qkv, gate, out_proj = proj_ops(m, t, s)
    out = [qkv, gate]
    out.append(Op("mixer/qk", np.where(step, 0.0, 2 * b * H * d * sq), np.where(step, 0.0, 2 * b * H * d * tri), zero))
    out.append(Op("mixer/intra_v", np.where(step, 0.0, 2 * b * H * d * sq),
                  np.where(step, 0.0, 2 * b * H * d * tri), zero))
    lin = 2 * t * H * d * d
    out.append(Op("mixer/state_read", lin, lin, zero))
    out.append(Op("mixer/state_write", lin, lin, zero))
    core_io = s * t * 4 * w + 2 * ss * b * H * d * d  # q, k, v read, o written; the state
    out.append(Op("mixer/core_io", zero, zero, core_io))
    # SiLU on qkv (read, write), RMSNorm (read, write, weight), sigmoid gate (read, write) and
    # the gate product (read 2, write 1)
    out.append(Op("mixer/norm", zero, zero, s * t * (6 + 2 + 2 + 3) * w + s * w))
    out.append(out_proj)
    return out


def activation_steps(m, n, *, batch: int = 1, dtype: str = "bf16", prefix=0, chunk: int | None = None,
                     state_dtype: str | None = None) -> dict[str, np.ndarray]:
    """Bytes live at each memory-heavy step of lcprof's measured lightning-attention layer
    (``lcprof.measure.mixers.lightning``) over n new tokens: the input, SiLU(qkv), the state and the
    output buffer; inside the block loop one block's q, k, v, the (heads x l x l) decay and
    Q K^T, the partial outputs and the state update; then the RMSNorm, the sigmoid gate and
    out_proj. Weights and the carried-in state are not counted. Arrays over n."""
    s, ss, c, low, n, b, t = step_scalars(n, batch, dtype, state_dtype)
    H, d = m.n_heads, m.head_dim
    w = H * d
    S_el = b * H * d * d
    X = s * t * m.hidden_size
    st: dict[str, np.ndarray] = {"mixer/qkv": X + 3 * s * t * w}
    loop = X + 3 * s * t * w + c * H + c * S_el + s * t * w
    l = np.minimum(n, float(chunk or block_size(m)))
    qd, sqb = c * b * H * l * d, c * b * H * l * l
    chunked = n > 1
    st["mixer/chunk_decay"] = np.where(chunked, loop + 3 * qd + c * l + c * l * l + c * H * l * l, 0.0)
    st["mixer/chunk_qk"] = np.where(chunked, loop + 3 * qd + c * l + c * H * l * l + sqb, 0.0)
    st["mixer/chunk_intra"] = np.where(chunked, loop + 4 * qd + c * l + sqb, 0.0)
    st["mixer/chunk_state_in"] = np.where(chunked, loop + 5 * qd + c * l, 0.0)
    st["mixer/chunk_out"] = np.where(chunked, loop + 3 * qd + c * l, 0.0)  # k, v, the block's output written out
    # k, v, the positions and either the decays lambda^(l-1-s) per head (made first: the exponent
    # and its exp, heads x l each) or the state update
    st["mixer/chunk_state"] = np.where(chunked, loop + 2 * qd + c * l + np.maximum(c * S_el, 2 * c * H * l), 0.0)
    st["mixer/step"] = np.where(chunked, 0.0, loop + 3 * qd + c * S_el)
    st["mixer/step_out"] = np.where(chunked, 0.0, loop + 4 * qd)
    tw = t * w
    post = X + ss * S_el + s * tw
    st["mixer/state_out"] = post + (c * S_el if ss != c else 0.0)
    copy = c * tw if low else 0.0  # the float32 copy of the output
    st["mixer/norm_square"] = post + copy + c * tw + c * t
    st["mixer/norm_scale"] = post + copy + 2 * c * t + c * tw
    st["mixer/norm_cast"] = post + copy + c * t + c * tw + (s * tw if low else 0.0)
    st["mixer/norm_weight"] = X + ss * S_el + 2 * s * tw
    st["mixer/gate"] = X + ss * S_el + 3 * s * tw
    st["mixer/out_proj"] = X + ss * S_el + s * tw + s * t * m.hidden_size
    return st
