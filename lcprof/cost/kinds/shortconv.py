"""LFM2's gated short convolution: FLOPs, bytes, state of a ``ShortConvSpec``.

    x ─ in_proj ─ B, C, x' (c each) ─ B o x' ─ causal depthwise conv1d (K taps) ─ C o . ─ out_proj

Per token: in_proj 2 h 3c, the conv 2 c K, out_proj 2 c h FLOPs; the two gating products are
elementwise (bytes only). Prefill and decode run the same conv (a decode step over the carried
window), so n == 1 needs no other form.

State per sequence (vLLM ``MambaStateShapeCalculator.short_conv_state_shape``): the last K - 1
inputs of each channel, in the model dtype; no recurrent state.
No torch.
"""

from __future__ import annotations

import numpy as np

from lcprof.cost.kinds.common import Op, check_tp, conv_op, proj_ops, step_scalars
from lcprof.units import dtype_bytes


def state_elements(m, tp: int = 1) -> dict[str, int]:
    return {"conv": check_tp(m.channels, tp, "short-conv channels") * (m.kernel - 1)}


def ops(m, n, prefix=0, *, batch: int = 1, dtype: str = "bf16", state_dtype: str | None = None,
        chunk: int | None = None) -> list[Op]:
    s = dtype_bytes(dtype)
    n = np.asarray(n, dtype=np.float64)
    t = float(batch) * n
    zero = np.zeros_like(t)
    in_proj, out_proj = proj_ops(m, t, s)
    # B o x' and C o y: read 2c, write c each (vLLM's ShortConv runs them as torch products)
    gates = Op("mixer/gate", zero, zero, s * t * 6 * m.channels)
    return [in_proj, conv_op(t, float(batch), m.channels, m.kernel, s), gates, out_proj]


def activation_steps(m, n, *, batch: int = 1, dtype: str = "bf16", prefix=0, chunk: int | None = None,
                     state_dtype: str | None = None) -> dict[str, np.ndarray]:
    """Bytes live at each step of lcprof's measured short-conv layer (``lcprof.measure.mixers.shortconv``)
    over n new tokens: the input and in_proj's output (B, C, x'), B o x', the conv window (the K - 1
    carried inputs and the n new ones), the new conv state and the conv output, C o y, out_proj. Weights and
    the carried-in state are not counted. Arrays over n."""
    s, _, _, _, n, b, t = step_scalars(n, batch, dtype, state_dtype)
    c, K = m.channels, m.kernel
    X = s * t * m.hidden_size
    Z = 3 * s * t * c
    u = s * t * c  # B o x', the conv output, C o y: one of each size
    cs = s * b * c * (K - 1)
    return {"mixer/in_proj": X + Z, "mixer/bx": X + Z + u,
            "mixer/conv": X + Z + u + s * b * c * (n + K - 1) + cs + u,
            "mixer/gate": X + Z + u + cs + u,
            "mixer/out_proj": X + cs + u + s * t * m.hidden_size}
