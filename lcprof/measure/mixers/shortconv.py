"""A real gated short-convolution layer (LFM2) from explicit dims, as transformers' ``Lfm2ShortConv``
computes it; see :mod:`lcprof.cost.kinds.shortconv`.

    x ─ in_proj ─ B, C, x' ─ B o x' ─ causal depthwise conv1d (K taps, no activation) ─ C o . ─ out_proj

The conv carries the last K - 1 inputs of each channel (:class:`MixerState` ``conv``); there is no
recurrent state. Decode (m == 1) runs the same conv over the carried window.
"""

from __future__ import annotations

import torch
from torch import nn

from lcprof.measure.mixer_backends import get_mixer_backend
from lcprof.measure.mixers.common import MixerState, causal_conv, fill_linear_weights, materialize
from lcprof.measure.tensor_audit import mark


class ShortConvMixer(nn.Module):
    """x (batch, m, hidden) -> (batch, m, hidden), with the carried :class:`MixerState`."""

    def __init__(self, spec, *, eps: float = 1e-6, seed: int = 0, backend: str = "torch",
                 materialize_weights: bool = True) -> None:
        super().__init__()
        self.spec = d = spec  # a lcprof.spec.ShortConvSpec
        self.backend = get_mixer_backend(backend, d.kind).name
        inp, out = d.linears()
        with torch.device("meta"):
            self.in_proj = nn.Linear(inp.d_in, inp.d_out, bias=inp.bias)
            self.conv_weight = nn.Parameter(torch.empty(d.channels, 1, d.kernel))  # depthwise (c, 1, K)
            self.conv_bias = nn.Parameter(torch.empty(d.channels)) if d.bias else None
            self.out_proj = nn.Linear(out.d_in, out.d_out, bias=out.bias)
        if materialize_weights:
            materialize(self)
            fill_linear_weights(self, torch.Generator().manual_seed(int(seed) * 7919 + 11))

    def empty_state(self, batch: int, *, dtype=None, device=None) -> MixerState:
        d, p = self.spec, self.out_proj.weight
        return MixerState(torch.zeros(batch, d.channels, d.kernel - 1, dtype=dtype or p.dtype,
                                      device=device or p.device), None)

    def forward(self, x: torch.Tensor, state: MixerState | None = None, *,
                state_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, MixerState]:
        c = self.spec.channels
        b, m, _ = x.shape
        bcx = self.in_proj(x)  # (b, m, 3c): B, C, x' -- transformers' chunk order
        mark("mixer/in_proj")
        bg, cg, xp = bcx.split(c, dim=-1)  # views
        bx = bg * xp  # (b, m, c)
        mark("mixer/bx")
        del bg, xp
        conv, new_conv = causal_conv(bx, self.conv_weight, self.conv_bias, None if state is None else state.conv,
                                     silu=False)  # (b, c, m), (b, c, K - 1)
        del bx
        y = torch.empty(b, m, c, dtype=x.dtype, device=x.device)
        torch.mul(cg, conv.transpose(1, 2), out=y)  # token-major, as out_proj reads it
        mark("mixer/gate")
        del bcx, cg, conv
        out = self.out_proj(y)
        mark("mixer/out_proj")
        return out, MixerState(new_conv, None)
