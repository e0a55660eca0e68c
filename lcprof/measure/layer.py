"""One real decoder layer built from a ModelSpec, with seeded random weights.

``DecoderLayer(spec, layer_idx, attention=...)`` is a pre-norm block of the layer's kind::

    attention:  x ─ RMSNorm ─ q/k/v proj ─ RoPE ─ attention(backend) ─ o proj ─(+)─ RMSNorm ─ MLP ─(+)─ out
                └──────────────────────────────────────────────────────────────┘  └──────────────┘
    mixer:      x ─ RMSNorm ─ Mamba / Mamba-2 / Gated DeltaNet / lightning (state) ─(+)─ [RMSNorm ─ MLP ─(+)] ─ out
    MLP only:   x ─ RMSNorm ─ MLP ─(+)─ out

* **Linear-time mixers** (``LayerSpec.mixers`` = ``("mamba2",)``...): the measured layers of
  :mod:`lcprof.measure.mixers`, each with its own seeded init, on a mixer backend (``mixer_backend``,
  :meth:`set_mixer_backend`: ``torch``, ``fla``, ``mamba-ssm``). The "cache" of such a layer is its
  :class:`~lcprof.measure.mixers.common.MixerState` (conv window + recurrent state, constant in n):
  ``layer(x)`` is a prefill from a fresh state, ``layer(x, state)`` continues from ``state`` (one
  token: one recurrent step, decode); ``return_kv`` returns the new state. ``recurrent_reference``
  runs the mixer's step-by-step recurrence instead (the float64 correctness oracle). A layer
  without an MLP (Nemotron-H's ``M`` and ``*``, Falcon-Mamba) ends after the mixer's residual add.

* **Attention**: GQA projections (``n_kv_heads`` K/V heads, optional q/k/v bias), RoPE on the first
  ``rope.rotary_dim`` dims of each head with the frequencies and attention factor of
  :func:`lcprof.cost.rope.inv_freq` (one source of truth; the factor multiplies cos and sin, as
  transformers does), then a backend from :mod:`lcprof.measure.backends`. The mask is the layer's
  kind: causal, sliding window W or chunk C (see ``backends.AttnMask``). ``qk_norm`` "head" (Qwen3,
  Qwen3-Next) normalizes every q and k head with its own RMSNorm(head_dim) before RoPE; "full" and
  "l2" (MiniMax-M2, Llama 4) are not modelled by this layer.
* **MLA** (DeepSeek): ``mla_form='naive'`` decompresses every cached latent to per-head K and V
  (``kv_b``) and attends with qk_head_dim / v_head_dim; ``mla_form='absorbed'`` folds the
  up-projections into the query (``q_absorb``) and the output (``v_unabsorb``) and attends in
  the latent space: one shared K/V "head" of kv_lora_rank + rope dims (MQA). Same math.
* **MLP**: gated (gate, up, down) or plain (up, down) with the config's activation.
* **MoE layers**, two ways (``moe_timing``):
  - ``dense-equivalent`` (default): the router matmul (its top-k is computed and discarded) plus ONE
    gated MLP whose width is ``n_active * expert_intermediate_size + n_shared *
    shared_intermediate_size``. Its FLOPs equal the cost model's active FLOPs (router + n_active
    experts + shared) exactly; its time is a lower bound for a real routed MoE;
  - ``routed``: every expert's weights (``experts_gate_up`` (E, 2 or 1 x I, h), ``experts_down``
    (E, h, I)); the router's scores in fp32 (softmax, or sigmoid when the config's ``scoring_func``
    says so; DeepSeek-V3's group-limited selection and score-correction bias are not modelled) pick
    the top ``n_active`` experts per token (weights renormalized when ``norm_topk_prob`` says so --
    the default -- and scaled by ``routed_scaling_factor``); tokens are grouped by expert, each
    expert runs on its own tokens (a host-side loop over the experts, as transformers' MoE blocks
    do) and the weighted outputs are scattered back with ``index_add_``; shared experts run as one
    dense MLP. The same FLOPs as the dense-equivalent form, plus the routing, gathers and small
    matmuls a real MoE pays.
    ``forced_routing`` (expert indices, (tokens, n_active)) replaces the top-k: the correctness
    check runs the float64 reference on the low-precision run's own routing, so near-tied
    router logits cannot send a token to different experts in the two precisions.

Weights are drawn from a CPU generator seeded by ``seed`` (same weights on every device), normal
with std 1/sqrt(fan_in) so every projection keeps unit variance and the softmax is neither uniform
nor one-hot; norm weights are 1. Build in any dtype; ``.to(torch.float64)`` gives the reference.

Prefill: ``layer(x)`` with x (batch, n, hidden). Decode and any cached step: ``layer(x, cache=c)``
with x (batch, m, hidden) and a :class:`KVCache` of capacity L whose first L - m slots are filled;
the m new tokens sit at positions L - m .. L - 1 and are written into the last m slots.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lcprof.cost.ops import attention_dims
from lcprof.cost.rope import inv_freq
from lcprof.errors import LcprofError
from lcprof.measure.backends import AttnMask, eager_attention
from lcprof.measure.mixers.common import MixerState
from lcprof.measure.tensor_audit import mark
from lcprof.spec import LayerSpec, ModelSpec
from lcprof.spec.layers import GATED_COMBINES

MLA_FORMS = ("naive", "absorbed")


def check_buildable(spec: ModelSpec, layer: LayerSpec) -> None:
    """Refuse, in one line naming the layer, what this block cannot build: parallel token mixers
    (Falcon-H1's attention + Mamba-2 side by side), sparse (DSA) attention, per-layer attention dims,
    a gated attention output with MLA, Llama 4's L2 q/k norm (RMSNorms per head -- Qwen3 -- and over
    all heads -- MiniMax-M2 -- build), Llama 4's query temperature, a mixer kind without a measured
    layer. Every other layer kind builds: attention, one linear-time mixer (Mamba-1, Mamba-2, Gated DeltaNet,
    lightning), or none (an MLP-only layer), each with or without its MLP."""
    from lcprof.measure.mixers import MIXERS

    why = []
    if len(layer.mixers) > 1:
        why.append("parallel token mixers " + "+".join(layer.mixers))
    elif layer.mixers and layer.mixers[0] != "attention" and layer.mixers[0] not in MIXERS:
        why.append(f"token mixer {layer.mixers[0]} (no measured layer)")
    elif layer.attn == "sparse":
        why.append("sparse (DSA) attention")
    if layer.has_attention and layer.dims is not None:
        why.append("per-layer attention dims")
    if layer.has_attention and spec.attn_output_gate and spec.mla is not None:
        why.append("gated attention output with MLA")
    if spec.qk_norm_at(layer) not in ("none", "head", "full"):
        why.append(f"q/k norm {spec.qk_norm!r} (the measured layer has RMSNorms per head or over all heads)")
    if spec.query_temperature_at(layer):
        why.append("Llama 4's query temperature (the measured layer has none)")
    if (spec.output_norms or spec.parallel_block) and (not layer.has_attention or not layer.mlp):
        why.append("output norms or a parallel block on a layer that is not attention + MLP")
    if why:
        idx = next((i for i, lyr in enumerate(spec.layers) if lyr == layer), None)
        where = f"layer {idx}" if idx is not None else "a layer"
        raise LcprofError(f"{spec.name}: {where} is {layer.kind} ({'; '.join(why)}): lcprof's measured "
                          "decoder layer does not build this kind")


def score_ops(spec: ModelSpec, layer: LayerSpec) -> tuple[str, ...]:
    """What this layer's attention applies to its scores besides scale and mask, as
    ``backends.SCORE_OPS`` names them: ``softcap`` (Gemma 2's ``attn_logit_softcapping``), ``sinks``
    (gpt-oss's per-head sink logit). A backend that cannot apply one is not timed for the layer."""
    if not layer.has_attention:
        return ()
    return (("softcap",) if spec.attn_logit_softcap else ()) + (("sinks",) if layer.sinks else ())


#: Config keys of the norms' epsilon, in the order transformers' configs use them (Falcon-Mamba and
#: Nemotron-H spell it layer_norm_epsilon / norm_eps).
NORM_EPS_KEYS = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps")


def norm_eps(spec: ModelSpec) -> float:
    """The RMSNorm epsilon of the config (1e-6 when it names none)."""
    for key in NORM_EPS_KEYS:
        if spec.config.get(key) is not None:
            return float(spec.config[key])
    return 1e-6


def mixer_eps(spec: ModelSpec) -> float:
    """The epsilon of a linear mixer's own norms (Mamba-1's dt/B/C norms, Mamba-2's and Gated
    DeltaNet's gated output norms): the model's, except Falcon-Mamba's ``mixer_rms_eps`` (1e-6)."""
    if spec.model_type == "falcon_mamba" or "mixer_rms_eps" in spec.config:
        return float(spec.config.get("mixer_rms_eps") or 1e-6)
    return norm_eps(spec)


def linear_mixer(layer: LayerSpec) -> str | None:
    """The layer's linear-time mixer kind (``mamba2``, ...), or None (attention or MLP only)."""
    kinds = [m for m in layer.mixers if m != "attention"]
    return kinds[0] if kinds else None


MOE_TIMINGS = ("dense-equivalent", "routed")

#: transformers' default ``norm_topk_prob`` where it is not True (configuration_<type>.py; Jamba's router
#: has no such field and never renormalizes -- modeling_jamba.py's JambaTopKRouter)
_NORM_TOPK_DEFAULT = {"jamba": False, "qwen2_moe": False, "qwen3_moe": False, "deepseek_v2": False}


def norm_topk(spec: ModelSpec) -> bool:
    """Whether a routed MoE renormalizes its top-k weights: the config's ``norm_topk_prob``, else the
    model type's default (True unless :data:`_NORM_TOPK_DEFAULT` says otherwise)."""
    if spec.model_type == "jamba":
        return False
    v = spec.config.get("norm_topk_prob", spec.config.get("moe_renormalize"))  # Kimi Linear: moe_renormalize
    return _NORM_TOPK_DEFAULT.get(spec.model_type, True) if v is None else bool(v)


@dataclass
class KVCache:
    """What one layer caches per token, for ``batch`` sequences and ``capacity`` slots.

    Standard attention: ``a`` = keys after RoPE (batch, L, kv_heads, head_dim), ``b`` = values
    (batch, L, kv_heads, v_head_dim). MLA: ``a`` = normed latent (batch, L, kv_lora_rank),
    ``b`` = the shared rope key after RoPE (batch, L, qk_rope_head_dim).
    """

    a: torch.Tensor
    b: torch.Tensor

    @property
    def capacity(self) -> int:
        return self.a.shape[1]

    @property
    def nbytes(self) -> int:
        return self.a.numel() * self.a.element_size() + self.b.numel() * self.b.element_size()

    def to(self, *args, **kwargs) -> "KVCache":
        return KVCache(self.a.to(*args, **kwargs), self.b.to(*args, **kwargs))


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight, computed in float32 for fp16/bf16 (as transformers does).

    Llama's order (default): the normed x cast back, then times the weight in the input's dtype.
    ``one_centred`` (Gemma, Qwen3-Next, Qwen3.5: ``ModelSpec.norm_one_centred``): the weight product
    in float32 and the cast last, freeing each intermediate as transformers' ``Gemma2RMSNorm`` does;
    the weight is the multiplier itself (transformers stores it less one and adds the 1 back per call,
    a width-sized op this layer folds into the stored weight)."""

    def __init__(self, dim: int, eps: float, one_centred: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.one_centred = one_centred

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if not self.one_centred:
            return self.weight * y.to(x.dtype)
        del xf
        z = y * self.weight  # a low-precision weight is promoted inside the product: no copy of it
        del y
        return z.to(x.dtype)


class LayerNorm(nn.Module):
    """(x - mean(x)) * rsqrt(var(x) + eps) * weight, no bias, in float32 for fp16/bf16 and cast last: the values
    of transformers' ``Cohere2LayerNorm`` (which subtracts the mean twice; this layer keeps the difference),
    freeing each intermediate (what ``cost.model._layer_norm_extra`` and ``cost.ops._layer_norm_bytes`` count)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        d = xf - xf.mean(-1, keepdim=True)
        del xf
        y = d * torch.rsqrt(d.pow(2).mean(-1, keepdim=True) + self.eps)
        del d
        z = y * self.weight  # a low-precision weight is promoted inside the product: no copy of it
        del y
        return z.to(x.dtype)


def block_norm(spec: ModelSpec, dim: int, eps: float) -> nn.Module:
    """One of the layer's own norms (and the model's final one): LayerNorm (Cohere 2) or RMSNorm."""
    return LayerNorm(dim, eps) if spec.layer_norm else RMSNorm(dim, eps, spec.norm_one_centred)


_ACTS = {
    "silu": F.silu, "swish": F.silu,
    "gelu": F.gelu, "gelu_new": lambda t: F.gelu(t, approximate="tanh"),
    "gelu_pytorch_tanh": lambda t: F.gelu(t, approximate="tanh"),
    "gelu_fast": lambda t: F.gelu(t, approximate="tanh"),
    "relu": F.relu,
    # Nemotron-H's squared ReLU, squared in place: the MLP holds up(x) and act(up(x)) only, as every
    # other non-gated activation here (what cost.activation_steps counts)
    "relu2": lambda t: F.relu(t).square_(),
}


def _activation(spec: ModelSpec):
    """The MLP's activation as the spec names it (``ModelSpec.mlp_activation``, read from the config);
    for a gated combine (:data:`lcprof.spec.layers.GATED_COMBINES`) a function of (gate, up)."""
    if spec.mlp_activation == "swiglu_oai":
        return functools.partial(_swiglu_oai, limit=float(spec.config.get("swiglu_limit") or 7.0),
                                 alpha=float(spec.config.get("swiglu_alpha") or 1.702))
    return _ACTS[spec.mlp_activation]


def _residual_add(res: torch.Tensor, out: torch.Tensor, factors: tuple[float, float] | None) -> torch.Tensor:
    """res + out, MiniMax's res * alpha + out * beta (three ops, as its decoder layer runs them), or
    Granite 4's res + out * beta (alpha None; two ops)."""
    if factors is None:
        return res + out
    alpha, beta = factors
    if alpha is None:
        return res + out * beta
    return res * alpha + out * beta


def _swiglu_oai(gate: torch.Tensor, up: torch.Tensor, *, limit: float, alpha: float) -> torch.Tensor:
    """gpt-oss's clamped SwiGLU, op by op as transformers' ``GptOssExperts._apply_gate`` runs it:
    (clamp(up, -L, L) + 1) * g * sigmoid(alpha g), g = clamp(gate, max=L)."""
    g = gate.clamp(max=limit)
    u = up.clamp(min=-limit, max=limit)
    glu = g * torch.sigmoid(g * alpha)
    return (u + 1) * glu


def _query_scale(start: int, m: int, beta: float, original: int, dtype, device) -> torch.Tensor:
    """Ministral 3's per-position query scale, op by op as transformers' ``get_llama_4_attn_scale``:
    1 + beta * log(1 + floor(position / original)) in fp32, cast to q's dtype."""
    pos = torch.arange(start, start + m, device=device)  # int64 positions
    return (1 + beta * torch.log(1 + torch.floor(pos / original))).to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` dims of x (batch, m, heads, dim) (transformers' layout).

    cos/sin (m, rot) already hold the attention factor; dims past ``rot`` pass through.
    """
    rot = cos.shape[-1]
    c = cos[None, :, None, :]  # (1, m, 1, rot)
    s = sin[None, :, None, :]
    if rot == x.shape[-1]:
        return x * c + _rotate_half(x) * s
    xr, xp = x[..., :rot], x[..., rot:]
    return torch.cat((xr * c + _rotate_half(xr) * s, xp), dim=-1)


def _yarn_mscale(scale: float, mscale: float) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


class DecoderLayer(nn.Module):
    """Layer ``layer_idx`` of ``spec`` (see the module docstring)."""

    def __init__(self, spec: ModelSpec, layer_idx: int = 0, *, attention=None, seed: int = 0,
                 mla_form: str = "naive", moe_timing: str = "dense-equivalent", materialize: bool = True,
                 mixer_backend: str = "torch") -> None:
        super().__init__()
        with torch.device("meta"):  # shapes only: no default init, no use of the global RNG
            self._build(spec, layer_idx, attention, mla_form, moe_timing)
        self._rope_cache: dict = {}
        if materialize:  # materialize=False leaves a meta-device layer: shapes and counts only
            for mod in self.modules():
                for pname, p in list(mod._parameters.items()):
                    if p is not None:
                        mod._parameters[pname] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype),
                                                              requires_grad=False)
            self._init_weights(seed)
        # a linear-time mixer brings its own seeded init (A_log, dt bias ...): built after the rest
        self.mixer_kind = linear_mixer(self.lspec)
        self.mixer = None
        self.recurrent_reference = False  # True: the mixer runs its fp64 step-by-step recurrence
        if self.mixer_kind is not None:
            from lcprof.measure.mixers import build_mixer

            # the mixer's own norms (Mamba-1's dt/B/C norms, the gated output norms) use the model's epsilon
            kw: dict = {"eps": mixer_eps(spec)}
            if self.mixer_kind == "lightning":
                # MiniMax: the slopes scaled per layer by 1 - i / (L - 1) (+1e-5 twice, as its modeling
                # code writes it); the output norm is MiniMaxRMSNorm's default 1e-6, not the config's
                L = spec.n_layers
                kw = {"eps": 1e-6, "decay_scale": 1 - layer_idx / (L - 1 + 1e-5) + 1e-5,
                      "block": spec.lightning.block_size}  # the config's block, as the cost model counts it
            self.mixer = build_mixer(spec.mixer(self.mixer_kind), seed=int(seed) * 1009 + layer_idx,
                                     backend=mixer_backend, materialize_weights=materialize, **kw)
            if materialize:
                self.mixer.requires_grad_(False)

    def set_mixer_backend(self, name: str) -> None:
        """Run the linear-time mixer's core on ``name`` (``lcprof.measure.mixer_backends``)."""
        from lcprof.measure.mixer_backends import get_mixer_backend

        if self.mixer is None:
            raise LcprofError(f"{self.spec.name}: layer {self.layer_idx} ({self.lspec.kind}) has no linear-time mixer")
        self.mixer.backend = get_mixer_backend(name, self.mixer_kind).name

    @staticmethod
    def param_count(spec: ModelSpec, layer_idx: int = 0, *, mla_form: str = "naive",
                    moe_timing: str = "dense-equivalent") -> int:
        """Parameters the layer holds (MoE: the dense-equivalent active width), without allocating."""
        meta = DecoderLayer(spec, layer_idx, mla_form=mla_form, moe_timing=moe_timing, materialize=False)
        return sum(p.numel() for p in meta.parameters())

    def _build(self, spec: ModelSpec, layer_idx: int, attention, mla_form: str, moe_timing: str) -> None:
        if not 0 <= layer_idx < spec.n_layers:
            raise LcprofError(f"layer {layer_idx} out of range 0..{spec.n_layers - 1} for {spec.name}")
        if mla_form not in MLA_FORMS:
            raise LcprofError(f"unknown MLA form {mla_form!r}; use {' or '.join(MLA_FORMS)}")
        if moe_timing not in MOE_TIMINGS:
            raise LcprofError(f"unknown MoE timing {moe_timing!r}; known: {', '.join(MOE_TIMINGS)}")
        self.spec = spec
        self.layer_idx = layer_idx
        self.lspec: LayerSpec = spec.layers[layer_idx]
        check_buildable(spec, self.lspec)  # refuse, naming the layer, what this block cannot build
        self.attention = attention or eager_attention
        self.mla_form = mla_form
        self.is_moe = bool(self.lspec.moe and spec.moe is not None)
        self.moe_timing = moe_timing if self.is_moe else "n/a"
        h, H = spec.hidden_size, spec.n_heads
        eps = norm_eps(spec)
        self.act = _activation(spec)
        # MiniMax's residuals (ModelSpec.post_norm_residual, residual_factors): added to the normed
        # input, and as residual x alpha + output x beta
        self.post_norm = spec.post_norm_residual
        factors = spec.residual_factors_at(layer_idx)
        self.mix_factors, self.mlp_factors = factors if factors is not None else (None, None)
        self.gated_combine = spec.mlp_activation in GATED_COMBINES  # act(gate, up), not act(gate) * up
        lyr = self.lspec
        # one norm before each block: the token mixer's (input_norm) and the MLP's (post_attn_norm;
        # an MLP-only layer's single norm is input_norm)
        oc = spec.norm_one_centred
        # OLMo 2/3, EXAONE 4 (output_norms): no norm on a block's input, one on its output
        self.output_norms = spec.output_norms
        self.parallel = spec.parallel_block  # Cohere 2: attention and MLP on one normed input
        if not self.output_norms:
            self.input_norm = block_norm(spec, h, eps)
            if lyr.mixers and lyr.mlp and not self.parallel:
                self.post_attn_norm = block_norm(spec, h, eps)
        self.extra_norms = spec.norms_per_layer >= 4 or self.output_norms  # Gemma 2: after attention and MLP too
        if self.extra_norms:  # the same kind as the others (cost.model._block_norm_extra prices them alike)
            self.attn_out_norm = block_norm(spec, h, eps)
            self.mlp_out_norm = block_norm(spec, h, eps)

        if not lyr.has_attention:
            self.scale = None
        elif spec.mla is None:
            hd, vhd, kvh = spec.head_dim, spec.v_head_dim, spec.n_kv_heads
            self.q_proj = nn.Linear(h, H * hd, bias=spec.qkv_bias)
            self.k_proj = nn.Linear(h, kvh * hd, bias=spec.qkv_bias)
            self.v_proj = nn.Linear(h, kvh * vhd, bias=spec.qkv_bias)
            self.o_proj = nn.Linear(H * vhd, h, bias=spec.o_bias)  # SmolLM3, GPT-NeoX, gpt-oss: o biased
            # Gemma: the query scale is query_pre_attn_scalar^-1/2 (Gemma-2-27B: 144, head_dim 128)
            # Granite 4: the scale itself (attention_multiplier)
            self.scale = spec.attn_scale if spec.attn_scale is not None else \
                1.0 / math.sqrt(spec.query_pre_attn_scalar or hd)
            if spec.attn_output_gate:  # Qwen3-Next: o <- o * sigmoid(x W_gate), one gate per head element
                # the second half of the doubled q_proj, kept as its own projection (same FLOPs and
                # weights; its output does not pin q's storage after RoPE, as cost.activation_steps counts)
                self.q_gate = nn.Linear(h, H * hd, bias=spec.qkv_bias)
            if spec.qk_norm == "head":  # Qwen3, Qwen3-Next: one RMSNorm(head_dim) on every q and k head, before RoPE
                self.q_norm = RMSNorm(hd, eps, oc)
                self.k_norm = RMSNorm(hd, eps, oc)
            elif spec.qk_norm == "full":  # MiniMax-M2: one RMSNorm over all of q, one over all of k, before RoPE
                self.q_norm = RMSNorm(H * hd, eps, oc)
                self.k_norm = RMSNorm(kvh * hd, eps, oc)
        else:
            m = spec.mla
            # the latent norms keep RMSNorm's default epsilon, 1e-6, whatever rms_norm_eps says
            # (transformers' DeepseekV2/V3, KimiLinear, GlmMoeDsa attention: RMSNorm(kv_lora_rank));
            # Kimi Linear's rms_norm_eps is 1e-5
            latent_eps = 1e-6
            if m.q_lora_rank:
                self.q_a = nn.Linear(h, m.q_lora_rank, bias=False)
                self.q_a_norm = RMSNorm(m.q_lora_rank, latent_eps)
                self.q_b = nn.Linear(m.q_lora_rank, H * m.qk_head_dim, bias=False)
            else:
                self.q_proj = nn.Linear(h, H * m.qk_head_dim, bias=False)
            self.kv_a = nn.Linear(h, m.cache_dim, bias=False)  # latent + shared rope key
            self.kv_a_norm = RMSNorm(m.kv_lora_rank, latent_eps)
            self.kv_b = nn.Linear(m.kv_lora_rank, H * (m.qk_nope_head_dim + m.v_head_dim), bias=False)
            self.o_proj = nn.Linear(H * m.v_head_dim, h, bias=False)
            self.scale = 1.0 / math.sqrt(m.qk_head_dim)
            r = spec.rope
            if r is not None and r.type == "yarn" and r.mscale_all_dim:
                # DeepSeek: the softmax scale carries YaRN's mscale(all_dim) squared.
                self.scale *= _yarn_mscale(r.factor, r.mscale_all_dim) ** 2

        # the score ops (score_ops): Gemma 2's soft-capping, gpt-oss's sink logit per head
        self.softcap = spec.attn_logit_softcap if lyr.has_attention else None
        if lyr.has_attention and lyr.sinks:
            self.sinks = nn.Parameter(torch.empty(H))
        if self.is_moe:
            self.router = nn.Linear(h, spec.moe.n_experts, bias=spec.moe.router_bias)  # gpt-oss: biased
            if spec.moe.n_shared and spec.moe.shared_gate:  # Qwen2-MoE / Qwen3-Next: sigmoid(x W) scales the shared expert
                self.shared_gate = nn.Linear(h, 1, bias=False)
        width = self.mlp_width = spec.mlp_width(self.lspec)
        self.forced_routing: torch.Tensor | None = None
        self.last_routing: torch.Tensor | None = None
        if self.is_moe and moe_timing == "routed":
            e = spec.moe
            mats = 2 if spec.mlp_gated else 1
            self.experts_gate_up = nn.Parameter(torch.empty(e.n_experts, mats * e.expert_intermediate_size, h))
            self.experts_down = nn.Parameter(torch.empty(e.n_experts, h, e.expert_intermediate_size))
            if e.expert_bias:  # gpt-oss: every expert projection biased
                self.experts_gate_up_bias = nn.Parameter(torch.empty(e.n_experts, mats * e.expert_intermediate_size))
                self.experts_down_bias = nn.Parameter(torch.empty(e.n_experts, h))
            width = e.n_shared * e.shared_intermediate_size  # the dense MLP below holds the shared experts
            cfg = spec.config
            self.norm_topk = norm_topk(spec)
            self.routed_scale = float(cfg.get("routed_scaling_factor", 1.0) or 1.0)
            # GLM-4.5's router is always sigmoid (transformers' Glm4MoeTopkRouter; its configs name none);
            # Kimi Linear names it moe_router_activation_func (sigmoid by default); MiniMax-M2's scoring_func
            # is sigmoid by default (MiniMaxM2Config; transformers' router is sigmoid whatever it says); LFM2-MoE's
            # router is sigmoid (Lfm2MoeTopKRouter)
            sig = ("glm4_moe", "kimi_linear", "minimax_m2", "lfm2_moe")
            default = "sigmoid" if spec.model_type in sig else "softmax"
            scoring = cfg.get("scoring_func", cfg.get("moe_router_activation_func", default))
            self.sigmoid_scores = str(scoring).lower() == "sigmoid"
        if width:
            bias = spec.mlp_bias  # GPT-NeoX, Seed-OSS / SmolLM3 / Llama with mlp_bias: every projection biased
            if spec.mlp_gated:
                self.gate = nn.Linear(h, width, bias=bias)
            self.up = nn.Linear(h, width, bias=bias)
            self.down = nn.Linear(width, h, bias=bias)

    # ----- construction ------------------------------------------------------------------------
    @torch.no_grad()
    def _init_weights(self, seed: int) -> None:
        g = torch.Generator(device="cpu").manual_seed(int(seed) * 1009 + self.layer_idx)
        for name, p in self.named_parameters():
            # linear weights (out, in), per expert too: unit-variance outputs (per-expert biases are biases)
            if p.dim() >= 2 and not name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif name == "sinks":  # logits of the order of the scores'
                p.copy_(torch.randn(p.shape, generator=g))
            else:  # norm weights
                p.fill_(1.0)

    @property
    def param_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def score_options(self) -> dict:
        """The attention backend's keywords for this layer's score ops (none for most layers)."""
        opts: dict = {}
        if self.softcap:
            opts["softcap"] = self.softcap
        if hasattr(self, "sinks"):
            opts["sinks"] = self.sinks
        return opts

    # ----- shapes seen by the attention backend -----------------------------------------------
    def attention_shapes(self) -> dict:
        """heads, kv_heads, qk_dim, v_dim and scale of the tensors handed to the backend."""
        kv_heads, qk_dim, v_dim = attention_dims(self.spec, self.mla_form)
        return {"heads": self.spec.n_heads, "kv_heads": kv_heads, "qk_dim": qk_dim, "v_dim": v_dim,
                "scale": self.scale}

    def mask_for(self, n_q: int, n_k: int) -> AttnMask:
        """The layer's mask for n_q queries at the end of n_k keys (not yet simplified)."""
        return AttnMask(self.lspec.attn, n_q, n_k, self.lspec.window)

    # ----- RoPE ----------------------------------------------------------------------------------
    def rope_cos_sin(self, start: int, m: int, n_total: int, dtype: torch.dtype,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """cos, sin (m, rotary_dim) for positions start..start+m-1 of a sequence of n_total tokens.

        Computed in float64 from :func:`lcprof.cost.rope.inv_freq` (frequencies depend on n_total
        for dynamic NTK and LongRoPE), attention factor folded in, cast to ``dtype``. Cached: a model
        computes these once per forward and shares them across layers.
        """
        r = self.spec.rope
        if r is None or not self.lspec.rope:
            return None
        key = (start, m, n_total, dtype, str(device))
        hit = self._rope_cache.get(key)
        if hit is None:
            freqs, factor = inv_freq(r, n_total)
            pos = np.arange(start, start + m, dtype=np.float64)
            angles = np.outer(pos, freqs)  # (m, rot/2)
            emb = np.concatenate([angles, angles], axis=-1)  # (m, rot)
            cos = torch.from_numpy(np.cos(emb) * factor).to(device=device, dtype=dtype)
            sin = torch.from_numpy(np.sin(emb) * factor).to(device=device, dtype=dtype)
            self._rope_cache.clear()
            hit = self._rope_cache[key] = (cos, sin)
        return hit

    # ----- caches --------------------------------------------------------------------------------
    def cache_shapes(self, batch: int, capacity: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of the attention cache's two tensors (attention layers only)."""
        s = self.spec
        if not self.lspec.has_attention:
            raise LcprofError(f"{s.name}: layer {self.layer_idx} ({self.lspec.kind}) has no KV cache")
        if s.mla is None:
            return ((batch, capacity, s.n_kv_heads, s.head_dim), (batch, capacity, s.n_kv_heads, s.v_head_dim))
        return ((batch, capacity, s.mla.kv_lora_rank), (batch, capacity, s.mla.qk_rope_head_dim))

    def empty_cache(self, batch: int, capacity: int, *, dtype=None, device=None):
        """An empty KV cache of ``capacity`` slots; a mixer layer's zero state (constant in the
        capacity); None for an MLP-only layer."""
        p = next(self.parameters())
        dtype, device = dtype or p.dtype, device or p.device
        if not self.lspec.has_attention:
            return None if self.mixer is None else self.mixer.empty_state(batch, dtype=dtype, device=device)
        sa, sb = self.cache_shapes(batch, capacity)
        return KVCache(torch.zeros(sa, dtype=dtype, device=device), torch.zeros(sb, dtype=dtype, device=device))

    def random_cache(self, batch: int, capacity: int, *, generator: torch.Generator | None = None,
                     dtype=None, device=None) -> KVCache:
        """A cache of unit-variance values (what a prefill of random tokens looks like, in scale)."""
        p = next(self.parameters())
        dtype, device = dtype or p.dtype, device or p.device
        if not self.lspec.has_attention:  # a mixer's state after some prefill: unit-variance values
            if self.mixer is None:
                return None
            st = self.mixer.empty_state(batch, dtype=dtype, device="cpu")
            # each part in the dtype the mixer keeps it in (KDA: a float32 recurrent state for fp16/bf16)
            def rnd(t):
                return None if t is None else torch.randn(t.shape, generator=generator).to(device=device, dtype=t.dtype)

            return MixerState(rnd(st.conv), rnd(st.ssm))
        sa, sb = self.cache_shapes(batch, capacity)
        return KVCache(torch.randn(sa, generator=generator).to(device=device, dtype=dtype),
                       torch.randn(sb, generator=generator).to(device=device, dtype=dtype))

    # ----- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cache: KVCache | None = None, *, return_kv: bool = False,
                start: int | None = None):
        """x (batch, m, hidden) -> (batch, m, hidden); with ``return_kv`` also the K/V it produced.

        Without ``cache``: a prefill of m tokens at positions 0..m-1. With ``cache`` (capacity L):
        the tokens are at positions L - m .. L - 1, their K/V are written into the cache's last m
        slots, and attention runs over all L cached keys. ``start`` overrides the position of the
        first new token (RoPE only; the sequence is then start + m tokens long): a whole model's
        sliding-window layer caches only the last W keys, whose slots are not their positions.
        """
        # mark(): the steps of cost.activation_steps, for LiveBytes' per-step oracle (no-ops otherwise)
        if not self.lspec.mixers:  # an MLP-only layer (Nemotron-H's "-" and "E" blocks)
            hn = self.input_norm(x)
            mark("mlp/norm")
            y = self._mlp(hn)
            del hn
            out = x + y
            mark("residual")
            return (out, None) if return_kv else out
        if self.output_norms:
            h = x  # OLMo: the block reads x itself
        else:
            h = self.input_norm(x)
            mark("input_norm" if self.mixer is not None else "attn/input_norm")
        if self.mixer is not None:
            a, kv = self._mixer_block(h, cache)
        else:
            a, kv = self._attention_block(h, cache, start)
        if self.parallel:  # Cohere 2: x + attn(h) + mlp(h), the sums in transformers' order
            if not return_kv:
                kv = None
            y = self._mlp(h)
            del h
            xa = x + a
            del a
            out = xa + y
            del xa, y
            mark("residual")
            return (out, kv) if return_kv else out
        # Free what a real model frees (as transformers' layers do): past the token-mixing block only
        # the residual stream and the KV cache (or state) live on. cost.activation_bytes counts this.
        res = h if self.post_norm else x  # MiniMax adds the block's output to its normed input
        del h
        if not return_kv:
            kv = None
        if self.extra_norms:
            a = self.attn_out_norm(a)
            if self.output_norms:
                mark("attn/out_norm")
        x = _residual_add(res, a, self.mix_factors)
        del a, res
        if self.lspec.mlp and (self.post_norm or self.mix_factors is not None):
            mark("mix/residual")  # cost.activation_steps' step of its own (a plain add peaks in the norm's)
        if not self.lspec.mlp:  # Nemotron-H's and Falcon-Mamba's mixer layers end here
            mark("residual")
            return (x, kv) if return_kv else x
        if self.output_norms:
            hn = x  # the MLP reads x + mix itself
        else:
            hn = self.post_attn_norm(x)
            mark("mlp/norm")
        y = self._mlp(hn)
        res = hn if self.post_norm else x
        del hn
        if self.extra_norms:
            y = self.mlp_out_norm(y)
            mark("mlp/out_norm")
        out = _residual_add(res, y, self.mlp_factors)
        del res
        mark("residual")
        return (out, kv) if return_kv else out

    def _mixer_block(self, h: torch.Tensor, state: MixerState | None) -> tuple[torch.Tensor, MixerState]:
        """The linear-time mixer on the normed input, from ``state`` (None: a fresh sequence); with
        ``recurrent_reference`` its float64 token-by-token recurrence instead of the chunked form."""
        if self.recurrent_reference:
            from lcprof.measure.mixers import RECURRENT

            out, conv, ssm = RECURRENT[self.mixer_kind](self.mixer, h, state)
            return out, MixerState(conv, ssm)
        return self.mixer(h, state)

    def _qk_norms(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The RMSNorms of q, then k ((b, m, heads, head_dim) each): per head, or over all heads for "full"
        ((b, m, heads * head_dim) rows: views, no copies); the normed q lives with the projections."""
        b, m, H, hd = q.shape
        kvh = k.shape[2]
        full = self.spec.qk_norm == "full"
        qn = self.q_norm(q.view(b, m, H * hd)).view(b, m, H, hd) if full else self.q_norm(q)
        mark("attn/q_norm")
        kn = self.k_norm(k.view(b, m, kvh * hd)).view(b, m, kvh, hd) if full else self.k_norm(k)
        mark("attn/k_norm")
        return qn, kn

    def _attention_block(self, h: torch.Tensor, cache: KVCache | None,
                         pos: int | None = None) -> tuple[torch.Tensor, KVCache]:
        if self.spec.mla is not None:
            return self._mla_block(h, cache, pos)
        s = self.spec
        b, m, _ = h.shape
        H, kvh, hd, vhd = s.n_heads, s.n_kv_heads, s.head_dim, s.v_head_dim
        n_k = m if cache is None else cache.capacity
        start = n_k - m
        pos = start if pos is None else pos
        q = self.q_proj(h).view(b, m, H, hd)  # (b, m, heads, head_dim)
        gate = self.q_gate(h) if hasattr(self, "q_gate") else None  # (b, m, heads * head_dim)
        k = self.k_proj(h).view(b, m, kvh, hd)  # (b, m, kv_heads, head_dim)
        v = self.v_proj(h).view(b, m, kvh, vhd)  # (b, m, kv_heads, v_head_dim)
        norm_first = hasattr(self, "q_norm") and not s.qk_norm_after_rope
        if norm_first:  # RMSNorm of q and k (qk_norm "head": per head; "full": over all heads), before RoPE
            q, k = self._qk_norms(q, k)
        cs = self.rope_cos_sin(pos, m, pos + m, q.dtype, q.device)
        if cs is not None:  # the projections live until both are rotated
            q_rot = apply_rope(q, *cs)
            mark("attn/rope_q")
            k_rot = apply_rope(k, *cs)
            mark("attn/rope_k")
            q, k = q_rot, k_rot
            del q_rot, k_rot
        if hasattr(self, "q_norm") and not norm_first:  # HunYuan: the norms on the rotated q and k
            q, k = self._qk_norms(q, k)
        if s.query_scaling:  # Ministral 3: q x (1 + beta log(1 + floor(position / original))), per position
            sc = _query_scale(pos, m, *s.query_scaling, q.dtype, q.device)  # (m,) in q's dtype
            qs = q * sc.view(1, m, 1, 1)
            mark("attn/q_scaling")
            q = qs
            del qs, sc
        if cache is None:
            keys, values = k, v
        else:
            cache.a[:, start:] = k
            cache.b[:, start:] = v
            keys, values = cache.a, cache.b  # (b, n_k, kv_heads, *)
        # (b, m, heads, v_head_dim)
        o = self.attention(q, keys, values, self.mask_for(m, n_k), self.scale, **self.score_options())
        if gate is not None:
            sig = torch.sigmoid(gate)  # (b, m, heads * v_head_dim)
            if o.is_contiguous():  # a tiled kernel's (b, m, heads, v) output: gated into a new tensor
                og = o.view(b, m, H * vhd) * sig
                del o, sig
            else:  # eager's transposed output: its token-major copy gated into sigmoid(gate)'s storage
                og = sig.mul_(o.reshape(b, m, H * vhd))
            mark("attn/output_gate")
            out = self.o_proj(og)
            mark("attn/o_proj")
            return out, KVCache(keys, values)
        out = self.o_proj(o.reshape(b, m, H * vhd))
        mark("attn/o_proj")
        return out, KVCache(keys, values)

    def _mla_block(self, h: torch.Tensor, cache: KVCache | None,
                   pos: int | None = None) -> tuple[torch.Tensor, KVCache]:
        s, mla = self.spec, self.spec.mla
        b, m, _ = h.shape
        H, nope, rope_d, lora, vd = (s.n_heads, mla.qk_nope_head_dim, mla.qk_rope_head_dim,
                                     mla.kv_lora_rank, mla.v_head_dim)
        n_k = m if cache is None else cache.capacity
        start = n_k - m
        pos = start if pos is None else pos
        if mla.q_lora_rank:
            qa = self.q_a_norm(self.q_a(h))
            mark("attn/q_a_norm")
            q = self.q_b(qa)
            mark("attn/q_b")
            del qa
        else:
            q = self.q_proj(h)
        q = q.view(b, m, H, nope + rope_d)  # (b, m, heads, qk_head_dim)
        q_nope, q_pe = q[..., :nope], q[..., nope:]
        ckv = self.kv_a(h)  # (b, m, kv_lora_rank + rope)
        latent = self.kv_a_norm(ckv[..., :lora])  # (b, m, kv_lora_rank)
        mark("attn/kv_a_norm")
        k_pe = ckv[..., lora:].unsqueeze(2)  # (b, m, 1, rope)
        cs = self.rope_cos_sin(pos, m, pos + m, q.dtype, q.device)
        if cs is not None:
            q_pe = apply_rope(q_pe, *cs)
            mark("attn/rope_q")
            k_pe = apply_rope(k_pe, *cs)
            mark("attn/rope_k")
        k_pe = k_pe.squeeze(2)  # (b, m, rope)
        if cache is None:
            lat_all, kpe_all = latent, k_pe
        else:
            cache.a[:, start:] = latent
            cache.b[:, start:] = k_pe
            lat_all, kpe_all = cache.a, cache.b  # (b, n_k, lora), (b, n_k, rope)
        mask = self.mask_for(m, n_k)
        if self.mla_form == "naive":
            kv = self.kv_b(lat_all).view(b, n_k, H, nope + vd)  # every cached latent decompressed
            k_nope, v = kv[..., :nope], kv[..., nope:]  # (b, n_k, heads, nope), (b, n_k, heads, v)
            keys = torch.cat((k_nope, kpe_all[:, :, None, :].expand(b, n_k, H, rope_d)), dim=-1)
            queries = torch.cat((q_nope, q_pe), dim=-1)  # (b, m, heads, qk_head_dim)
            o = self.attention(queries, keys, v, mask, self.scale, **self.score_options())  # (b, m, heads, v)
        else:
            w = self.kv_b.weight.view(H, nope + vd, lora)  # (heads, nope + v, lora)
            w_uk, w_uv = w[:, :nope, :], w[:, nope:, :]  # (heads, nope, lora), (heads, v, lora)
            q_lat = torch.einsum("bmhd,hdc->bmhc", q_nope, w_uk)  # (b, m, heads, lora): q_absorb
            queries = torch.cat((q_lat, q_pe), dim=-1)  # (b, m, heads, lora + rope)
            keys = torch.cat((lat_all, kpe_all), dim=-1)[:, :, None, :]  # (b, n_k, 1, lora + rope)
            values = lat_all[:, :, None, :]  # (b, n_k, 1, lora)
            o_lat = self.attention(queries, keys, values, mask, self.scale,
                                   **self.score_options())  # (b, m, heads, lora)
            o = torch.einsum("bmhc,hvc->bmhv", o_lat, w_uv)  # (b, m, heads, v): v_unabsorb
            mark("attn/v_unabsorb")
        out = self.o_proj(o.reshape(b, m, H * vd))
        mark("attn/o_proj")
        return out, KVCache(lat_all, kpe_all)

    def _dense_mlp(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.mlp_gated and self.gated_combine:
            return self.down(self.act(self.gate(x), self.up(x)))
        if self.spec.mlp_gated:
            return self.down(self.act(self.gate(x)) * self.up(x))
        return self.down(self.act(self.up(x)))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        y = self._mlp_out(x)
        mark("mlp/act")  # the segment holds act(gate), up, their product and the down projection
        return y

    def _mlp_out(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_moe and self.moe_timing == "routed":
            return self._routed_moe(x)
        if self.is_moe:
            # Dense-equivalent MoE: the router runs (and its top-k) but does not dispatch; the
            # active experts + shared experts run as one gated MLP of their summed width.
            logits = self.router(x)  # (b, m, n_experts)
            torch.topk(logits, self.spec.moe.n_active, dim=-1)
            if hasattr(self, "shared_gate"):  # one MLP stands for routed + shared: the gate scales it all
                return self._dense_mlp(x).mul_(torch.sigmoid(self.shared_gate(x)))
        return self._dense_mlp(x)

    def _routed_moe(self, x: torch.Tensor) -> torch.Tensor:
        """Top-k routing, tokens grouped per expert, weighted outputs scattered back (+ shared)."""
        e = self.spec.moe
        b, m, h = x.shape
        xt = x.reshape(b * m, h)  # (tokens, h)
        logits = self.router(xt).float()  # (tokens, experts)
        probs = torch.sigmoid(logits) if self.sigmoid_scores else torch.softmax(logits, dim=-1)
        if self.forced_routing is not None:
            top_i = self.forced_routing.to(xt.device)
            top_w = torch.gather(probs, 1, top_i)
        else:
            top_w, top_i = torch.topk(probs, e.n_active, dim=-1)  # (tokens, n_active)
        self.last_routing = top_i
        if self.norm_topk:
            top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        top_w = (top_w * self.routed_scale).to(x.dtype)
        flat = top_i.reshape(-1)  # (tokens * n_active,) expert of each (token, slot)
        order = torch.argsort(flat, stable=True)  # slots grouped by expert
        token_of = order // e.n_active
        weight_of = top_w.reshape(-1)[order]
        counts = torch.bincount(flat, minlength=e.n_experts).tolist()  # host sync, as a loop over experts needs
        out = torch.zeros_like(xt)
        start = 0
        for ex, c in enumerate(counts):
            if c == 0:
                continue
            rows = token_of[start:start + c]
            xe = xt[rows]  # (c, h) this expert's tokens
            gu = xe @ self.experts_gate_up[ex].t()  # (c, 2I) or (c, I)
            if e.expert_bias:
                gu.add_(self.experts_gate_up_bias[ex])  # in place: no tensor the cost model does not count
            if self.spec.mlp_gated:
                gate, up = gu.chunk(2, dim=-1)
                y = self.act(gate, up) if self.gated_combine else self.act(gate) * up
            else:
                y = self.act(gu)
            y = y @ self.experts_down[ex].t()  # (c, h)
            if e.expert_bias:
                y.add_(self.experts_down_bias[ex])
            out.index_add_(0, rows, y * weight_of[start:start + c, None])
            start += c
        if e.n_shared:
            shared = self._dense_mlp(xt)
            if hasattr(self, "shared_gate"):
                shared.mul_(torch.sigmoid(self.shared_gate(xt)))
            out = out + shared
        return out.view(b, m, h)
