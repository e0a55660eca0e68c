"""Pieces the measured mixer layers share: seeded weights, the causal depthwise conv with its
carried state, the gated RMSNorm, gathering a chunk into a contiguous head-major tensor.

Layout conventions: activations are (batch, tokens, features); per-chunk tensors are head-major
(batch, heads, chunk, dim) and contiguous, so every matrix product is one ``bmm`` over views (what
``FlopCounterMode`` counts, and no hidden copies for ``LiveBytes`` to find). Low-precision inputs
(bf16, fp16) run the recurrent core in float32, as the Triton kernels accumulate; fp32 and fp64
run it in their own dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lcprof.measure.tensor_audit import mark

LOW_PRECISION = (torch.float16, torch.bfloat16)


def core_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in LOW_PRECISION else dtype


@dataclass
class MixerState:
    """What a mixer layer carries per sequence between calls: the conv state (batch, channels,
    kernel - 1) -- the last inputs of the conv, None for kinds without a conv -- and the recurrent
    state (Mamba: (batch, d_inner, d_state); Mamba-2: (batch, heads, head_dim, d_state); Gated
    DeltaNet: (batch, v_heads, k_dim, v_dim); lightning: (batch, heads, dim, dim); None for LFM2's short
    conv, whose conv state is all it carries)."""

    conv: torch.Tensor | None
    ssm: torch.Tensor | None  # None: a kind with no recurrent state (LFM2's short conv)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.conv, self.ssm) if t is not None)

    def to(self, *args, **kwargs) -> "MixerState":
        return MixerState(*(None if t is None else t.to(*args, **kwargs) for t in (self.conv, self.ssm)))


def materialize(module: nn.Module) -> None:
    """Replace meta parameters by CPU storage (no default init, no use of the global RNG)."""
    for mod in module.modules():
        for pname, p in list(mod._parameters.items()):
            if p is not None:
                mod._parameters[pname] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), requires_grad=False)


def fill_linear_weights(module: nn.Module, g: torch.Generator, skip: tuple[str, ...] = ()) -> None:
    """Linear and conv weights normal with std 1/sqrt(fan in) (unit-variance outputs), biases
    0.1 x normal, norm weights 1; names in ``skip`` are left to the caller."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.split(".")[-1] in skip:
                continue
            if p.dim() >= 2:
                # (out, in) linear weights; (channels, 1, kernel) depthwise conv weights
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.fill_(1.0)


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                conv_state: torch.Tensor | None, *, silu: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal conv1d over x (batch, m, channels) with its carried state, then SiLU (in place;
    ``silu=False``: none, LFM2's short conv).

    The window is the last kernel - 1 inputs (zeros for a fresh sequence) followed by the m new
    ones; ``F.conv1d`` without padding gives exactly m outputs (2 * m * channels * kernel FLOPs).
    Returns (out (batch, channels, m) -- transpose for token-major --, new state (batch, channels,
    kernel - 1)).
    """
    b, m, ch = x.shape
    k = weight.shape[-1]
    prev = conv_state if conv_state is not None else torch.zeros(b, ch, k - 1, dtype=x.dtype, device=x.device)
    window = torch.cat([prev.to(x.dtype), x.transpose(1, 2)], dim=-1)  # (b, channels, m + k - 1)
    del prev
    new_state = window[..., m:].clone()  # (b, channels, k - 1)
    out = F.conv1d(window, weight, bias, groups=ch)  # (b, channels, m)
    mark("mixer/conv")
    del window
    return (F.silu(out, inplace=True) if silu else out), new_state


def upper_mask(cache: dict, l: int, device, strict: bool = False) -> torch.Tensor:
    """Boolean (l, l) mask of the pairs a causal chunk zeroes: above the diagonal (and on it when
    ``strict``), built once per (l, device, strict) in the layer's ``cache`` -- as a model builds it
    once per forward."""
    key = (l, str(device), strict)
    if key not in cache:
        cache[key] = torch.ones(l, l, dtype=torch.bool, device=device).triu(0 if strict else 1)
    return cache[key]


def gather(src: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A contiguous ``dtype`` copy of the view ``src`` (already arranged to ``shape``)."""
    out = torch.empty(shape, dtype=dtype, device=src.device)
    out.copy_(src)
    return out


def gated_rmsnorm(y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, groups: int, eps: float,
                  norm_first: bool, gate: str = "silu") -> torch.Tensor:
    """RMSNorm with a SiLU gate (``gate="sigmoid"``: KDA's sigmoid gate), over ``groups`` groups of
    the last dim, in float32 for fp16/bf16.

    ``norm_first=False`` (Mamba-2's ``norm_before_gate=False``): rmsnorm(y * silu(z)) * weight;
    ``norm_first=True`` (Gated DeltaNet's ``RMSNormGated``): rmsnorm(y) * weight * silu(z).
    y, z: (..., width); ``weight``: (width,) or one group's (width / groups,) shared by the groups.
    Returns (..., width) in y's dtype.
    """
    dt = y.dtype
    cd = core_dtype(dt)
    h = y.to(cd)  # a copy for fp16/bf16; y itself otherwise
    if not norm_first:
        gz = F.silu(z.to(cd))
        mark("mixer/norm_gate")
        h = h * gz
        mark("mixer/norm_gated")
        del gz
    shape = h.shape
    hg = h.view(*shape[:-1], groups, shape[-1] // groups)
    var = hg.pow(2).mean(-1, keepdim=True)
    mark("mixer/norm_square")
    hg = hg * torch.rsqrt(var + eps)
    mark("mixer/norm_scale")
    del var, h
    wv = weight.view(groups, -1) if weight.numel() == shape[-1] else weight.view(1, -1)
    out = (wv * hg.to(dt)).view(shape)
    mark("mixer/norm_weight")
    del hg
    if norm_first:
        out = out * (torch.sigmoid(z) if gate == "sigmoid" else F.silu(z))
        mark("mixer/norm_gate")
    return out
