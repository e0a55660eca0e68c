"""A real lightning-attention layer (MiniMax-Text-01 / M1) from explicit dims, run per block as
transformers' ``MiniMaxLightningAttention`` runs it; see :mod:`lcprof.cost.kinds.lightning`.

Per block of l tokens and head (head-major, core dtype), with lambda = exp(-slope) and in-block
positions t = 0..l-1:

    o  = ((Q K^T) o lambda^(t-s), causal) V  +  (Q o lambda^(t+1)) KV
    KV <- lambda^l KV + (K o lambda^(l-1-s))^T V

n == 1 runs the recurrent step (decode): KV <- lambda KV + k^T v; o = q KV. The slopes are
ALiBi's (2^(-8 (h+1) / H) for a power-of-two H), scaled by ``1 - layer / (layers - 1) + 1e-5``
as MiniMax scales them per layer (``decay_scale``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lcprof.cost.kinds.lightning import BLOCK
from lcprof.measure.mixer_backends import get_mixer_backend
from lcprof.measure.mixers.common import MixerState, core_dtype, fill_linear_weights, gather, materialize, upper_mask
from lcprof.measure.tensor_audit import mark


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's head slopes: a geometric sequence from 2^(-8/H'), H' the next power of two below,
    interleaved for the remaining heads (the ALiBi paper's recipe)."""
    def pow2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]

    if math.log2(heads).is_integer():
        return torch.tensor(pow2(heads), dtype=torch.float64)
    closest = 2 ** math.floor(math.log2(heads))
    return torch.tensor(pow2(closest) + pow2(2 * closest)[0::2][:heads - closest], dtype=torch.float64)


class LightningAttention(nn.Module):
    """x (batch, m, hidden) -> (batch, m, hidden), with the carried :class:`MixerState`."""

    def __init__(self, spec, *, block: int | None = None, eps: float = 1e-6, decay_scale: float = 1.0, seed: int = 0,
                 backend: str = "torch", materialize_weights: bool = True) -> None:
        super().__init__()
        self.spec = d = spec  # a lcprof.spec.LightningSpec
        self.backend = get_mixer_backend(backend, d.kind).name
        self.block = int(block or BLOCK)
        self.eps = eps
        qkv, gate, out = d.linears()
        with torch.device("meta"):
            self.qkv_proj = nn.Linear(qkv.d_in, qkv.d_out, bias=qkv.bias)
            self.output_gate = nn.Linear(gate.d_in, gate.d_out, bias=gate.bias)
            self.norm_weight = nn.Parameter(torch.empty(d.n_heads * d.head_dim))
            self.out_proj = nn.Linear(out.d_in, out.d_out, bias=out.bias)
        self.slopes = tuple(float(v) for v in alibi_slopes(d.n_heads) * decay_scale)  # stays float64 under .to()
        self._masks: dict = {}
        if materialize_weights:
            materialize(self)
            fill_linear_weights(self, torch.Generator().manual_seed(int(seed) * 7919 + 5))

    def empty_state(self, batch: int, *, dtype=None, device=None) -> MixerState:
        d = self.spec
        p = self.out_proj.weight
        return MixerState(None, torch.zeros(batch, d.n_heads, d.head_dim, d.head_dim, dtype=dtype or p.dtype,
                                            device=device or p.device))

    def _upper(self, l: int, device) -> torch.Tensor:
        return upper_mask(self._masks, l, device)

    def forward(self, x: torch.Tensor, state: MixerState | None = None, *,
                state_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, MixerState]:
        d = self.spec
        b, m, _ = x.shape
        H, hd = d.n_heads, d.head_dim
        w = H * hd
        qkv = F.silu(self.qkv_proj(x), inplace=True)  # (b, m, 3 H d)
        mark("mixer/qkv")
        sc = core_dtype(x.dtype)
        logl = -torch.tensor(self.slopes, dtype=sc, device=x.device)  # log lambda per head (H,)
        S = torch.zeros(b, H, hd, hd, dtype=sc, device=x.device) if state is None else gather(state.ssm, (b, H, hd, hd), sc)
        o = torch.empty(b, m, H, hd, dtype=x.dtype, device=x.device)
        for t0 in range(0, m, self.block):
            t1 = min(t0 + self.block, m)
            l = t1 - t0

            def head(i):
                src = qkv[:, t0:t1].reshape(b, l, H, 3 * hd)[..., i * hd:(i + 1) * hd].permute(0, 2, 1, 3)
                return gather(src, (b, H, l, hd), sc)

            q, k, v = head(0), head(1), head(2)
            if l == 1 and m == 1:  # decode: KV <- lambda KV + k^T v; o = q KV
                S.mul_(logl.exp()[:, None, None]).add_(k.transpose(-1, -2) @ v)  # 2 b H d^2
                mark("mixer/step")
                o[:, t0:t1] = (q @ S).transpose(1, 2)  # 2 b H d^2
                mark("mixer/step_out")
                del q, k, v
                continue
            pos = torch.arange(l, dtype=sc, device=x.device)
            diff = pos[:, None] - pos[None, :]  # t - s
            dec = (diff * logl[:, None, None]).masked_fill_(self._upper(l, x.device), float("-inf")).exp_()  # (H, l, l)
            mark("mixer/chunk_decay")
            del diff
            qk = q @ k.transpose(-1, -2)  # 2 b H l^2 d
            qk.mul_(dec)
            mark("mixer/chunk_qk")
            del dec
            oc = qk @ v  # 2 b H l^2 d
            mark("mixer/chunk_intra")
            del qk
            qd = q.mul_(((pos + 1)[None, :] * logl[:, None]).exp()[..., None])  # Q o lambda^(t+1)
            oc.add_(qd @ S)  # 2 b H l d^2
            mark("mixer/chunk_state_in")
            del qd, q
            o[:, t0:t1] = oc.transpose(1, 2)
            mark("mixer/chunk_out")
            del oc
            kd = k.mul_(((l - 1 - pos)[None, :] * logl[:, None]).exp()[..., None])  # K o lambda^(l-1-s)
            S.mul_((l * logl).exp()[:, None, None]).add_(kd.transpose(-1, -2) @ v)  # 2 b H l d^2
            mark("mixer/chunk_state")
            del kd, k, v, pos
        del qkv, logl
        new_state = MixerState(None, S.to(state_dtype or x.dtype))
        mark("mixer/state_out")
        del S
        ov = o.view(b, m, w)
        of = ov.to(sc)
        var = of.pow(2).mean(-1, keepdim=True)
        mark("mixer/norm_square")
        scaled = of * torch.rsqrt(var + self.eps)
        mark("mixer/norm_scale")
        normed = scaled.to(x.dtype)
        mark("mixer/norm_cast")
        del scaled, of, var, ov, o
        y = self.norm_weight * normed
        mark("mixer/norm_weight")
        del normed
        y = y * torch.sigmoid(self.output_gate(x))
        mark("mixer/gate")
        out = self.out_proj(y)
        mark("mixer/out_proj")
        return out, new_state
