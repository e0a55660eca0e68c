"""Linear-time token mixers and the DSA indexer: their shapes, parameters and per-request state.

Each spec is the ONE source of truth for its kind: ``linears()`` lists its matrix products as
``Linear(name, d_in, d_out, bias)`` (what parameter counts and FLOPs are both built from; a token
through ``Linear`` costs 2 * d_in * d_out FLOPs), ``other_params()`` its remaining parameters
(convolution weights, A_log, D, dt_bias, norms), and ``state_elements()`` what one request holds
between steps, constant in n (elements; the dtype is the engine's). Shapes follow the modules
transformers builds (cited per class). No torch.

Convolution state: the last ``d_conv - 1`` inputs of every conv channel, as the causal-conv1d
kernels, vLLM and SGLang keep it (transformers' eager cache keeps ``d_conv`` columns).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

from lcprof.errors import LcprofError


class Linear(NamedTuple):
    """One matrix product of a token: x (d_in) @ W (d_in, d_out) [+ b (d_out)]."""

    name: str
    d_in: int
    d_out: int
    bias: bool = False

    @property
    def params(self) -> int:
        return self.d_in * self.d_out + (self.d_out if self.bias else 0)


def _positive(obj, *names: str) -> None:
    for nm in names:
        v = getattr(obj, nm)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise LcprofError(f"{type(obj).__name__}: {nm} must be a positive integer, got {v!r}")


class _Mixer:
    """Shared accessors: parameter count and state elements from the per-kind tables."""

    kind: str = ""

    def linears(self) -> tuple[Linear, ...]:  # pragma: no cover - overridden
        raise NotImplementedError

    def other_params(self) -> dict[str, int]:  # pragma: no cover - overridden
        raise NotImplementedError

    def state_elements(self) -> dict[str, int]:
        return {}

    @property
    def params(self) -> int:
        return sum(lin.params for lin in self.linears()) + sum(self.other_params().values())

    @property
    def state_elements_total(self) -> int:
        return sum(self.state_elements().values())

    def as_record(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class MambaSpec(_Mixer):
    """Mamba-1 selective scan (transformers ``MambaMixer``; Jamba's ``JambaMambaMixer`` adds RMSNorms
    over dt, B and C; Falcon-Mamba normalizes them without weights).

    in_proj: h -> 2 d_inner (x and the gate z); depthwise causal conv over x (d_conv taps);
    x_proj: d_inner -> dt_rank + 2 d_state (dt, B, C); dt_proj: dt_rank -> d_inner (always biased);
    A_log (d_inner, d_state), D (d_inner); out_proj: d_inner -> h.
    State: conv (d_conv - 1) x d_inner, SSM d_inner x d_state.
    """

    hidden_size: int
    d_inner: int
    d_state: int
    d_conv: int
    dt_rank: int
    conv_bias: bool = True
    proj_bias: bool = False
    bcdt_norm: str = "none"  # "none", "weighted" (Jamba: RMSNorm with weights), "unweighted" (Falcon-Mamba)

    kind = "mamba"

    def __post_init__(self) -> None:
        _positive(self, "hidden_size", "d_inner", "d_state", "d_conv", "dt_rank")
        if self.bcdt_norm not in ("none", "weighted", "unweighted"):
            raise LcprofError(f"MambaSpec: bcdt_norm must be none, weighted or unweighted, got {self.bcdt_norm!r}")

    def linears(self) -> tuple[Linear, ...]:
        h, d = self.hidden_size, self.d_inner
        return (Linear("in_proj", h, 2 * d, self.proj_bias),
                Linear("x_proj", d, self.dt_rank + 2 * self.d_state, False),
                Linear("dt_proj", self.dt_rank, d, True),
                Linear("out_proj", d, h, self.proj_bias))

    def other_params(self) -> dict[str, int]:
        d = self.d_inner
        out = {"conv1d.weight": d * self.d_conv, "A_log": d * self.d_state, "D": d}
        if self.conv_bias:
            out["conv1d.bias"] = d
        if self.bcdt_norm == "weighted":
            out["dt_layernorm"] = self.dt_rank
            out["b_layernorm"] = self.d_state
            out["c_layernorm"] = self.d_state
        return out

    def state_elements(self) -> dict[str, int]:
        return {"conv": (self.d_conv - 1) * self.d_inner, "ssm": self.d_inner * self.d_state}


@dataclass(frozen=True)
class Mamba2Spec(_Mixer):
    """Mamba-2 / SSD (transformers ``Mamba2Mixer``, ``NemotronHMamba2Mixer``, ``FalconH1Mixer``).

    d_inner = n_heads x head_dim; conv_dim = d_inner + 2 n_groups d_state (x, B, C are convolved);
    in_proj: h -> d_inner (z) + conv_dim + n_heads (dt); depthwise conv over conv_dim (d_conv taps);
    dt_bias, A_log, D per head; a gated RMSNorm over d_inner (grouped by n_groups) unless ``norm``
    is False (Falcon-H1's ``mamba_rms_norm``); out_proj: d_inner -> h.
    State: conv (d_conv - 1) x conv_dim, SSM n_heads x head_dim x d_state.
    """

    hidden_size: int
    n_heads: int
    head_dim: int
    d_state: int
    n_groups: int
    d_conv: int
    chunk_size: int
    conv_bias: bool = True
    proj_bias: bool = False
    norm: bool = True
    norm_before_gate: bool = False

    kind = "mamba2"

    def __post_init__(self) -> None:
        _positive(self, "hidden_size", "n_heads", "head_dim", "d_state", "n_groups", "d_conv", "chunk_size")
        if self.n_heads % self.n_groups:
            raise LcprofError(f"Mamba2Spec: {self.n_heads} heads are not a multiple of {self.n_groups} groups")

    @property
    def d_inner(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.n_groups * self.d_state

    def linears(self) -> tuple[Linear, ...]:
        h = self.hidden_size
        return (Linear("in_proj", h, self.d_inner + self.conv_dim + self.n_heads, self.proj_bias),
                Linear("out_proj", self.d_inner, h, self.proj_bias))

    def other_params(self) -> dict[str, int]:
        out = {"conv1d.weight": self.conv_dim * self.d_conv, "dt_bias": self.n_heads,
               "A_log": self.n_heads, "D": self.n_heads}
        if self.conv_bias:
            out["conv1d.bias"] = self.conv_dim
        if self.norm:
            out["norm"] = self.d_inner
        return out

    def state_elements(self) -> dict[str, int]:
        return {"conv": (self.d_conv - 1) * self.conv_dim, "ssm": self.n_heads * self.head_dim * self.d_state}


@dataclass(frozen=True)
class GatedDeltaNetSpec(_Mixer):
    """Gated DeltaNet (transformers ``Qwen3NextGatedDeltaNet``; Qwen3.5 splits the same in_proj).

    key_dim = num_k_heads x head_k_dim, value_dim = num_v_heads x head_v_dim;
    in_proj_qkvz: h -> 2 key_dim + 2 value_dim (q, k, v, output gate z); in_proj_ba: h -> 2 num_v_heads
    (beta, decay); depthwise conv (no bias) over q, k, v (conv_dim = 2 key_dim + value_dim);
    dt_bias, A_log per value head; a gated RMSNorm over head_v_dim; out_proj: value_dim -> h.
    q and k heads are repeated to the value heads (num_v_heads / num_k_heads each).
    State: conv (conv_kernel - 1) x conv_dim, recurrent num_v_heads x head_k_dim x head_v_dim.
    """

    hidden_size: int
    num_k_heads: int
    num_v_heads: int
    head_k_dim: int
    head_v_dim: int
    conv_kernel: int

    kind = "gated_deltanet"

    def __post_init__(self) -> None:
        _positive(self, "hidden_size", "num_k_heads", "num_v_heads", "head_k_dim", "head_v_dim", "conv_kernel")
        if self.num_v_heads % self.num_k_heads:
            raise LcprofError(f"GatedDeltaNetSpec: {self.num_v_heads} value heads are not a multiple of "
                              f"{self.num_k_heads} key heads")

    @property
    def key_dim(self) -> int:
        return self.num_k_heads * self.head_k_dim

    @property
    def value_dim(self) -> int:
        return self.num_v_heads * self.head_v_dim

    @property
    def conv_dim(self) -> int:
        return 2 * self.key_dim + self.value_dim

    def linears(self) -> tuple[Linear, ...]:
        h = self.hidden_size
        return (Linear("in_proj_qkvz", h, 2 * self.key_dim + 2 * self.value_dim),
                Linear("in_proj_ba", h, 2 * self.num_v_heads),
                Linear("out_proj", self.value_dim, h))

    def other_params(self) -> dict[str, int]:
        return {"conv1d.weight": self.conv_dim * self.conv_kernel, "dt_bias": self.num_v_heads,
                "A_log": self.num_v_heads, "norm": self.head_v_dim}

    def state_elements(self) -> dict[str, int]:
        return {"conv": (self.conv_kernel - 1) * self.conv_dim,
                "recurrent": self.num_v_heads * self.head_k_dim * self.head_v_dim}


@dataclass(frozen=True)
class KimiDeltaSpec(_Mixer):
    """Kimi Delta Attention, KDA (transformers ``KimiLinearDeltaAttention``; Kimi Linear): a gated
    delta rule whose decay is per channel (a dk-vector per head and token) instead of one scalar.

    q_proj, k_proj, v_proj: h -> n_heads head_dim each; a depthwise causal conv (no bias) over q, k, v
    (conv_dim = 3 n_heads head_dim; the checkpoint's q/k/v_conv1d are its three thirds); the decay
    from a low-rank pair f_a_proj: h -> head_dim, f_b_proj: head_dim -> n_heads head_dim, plus
    dt_bias (n_heads head_dim) and A_log (n_heads); beta from b_proj: h -> n_heads; the output gate
    from g_a_proj: h -> head_dim, g_b_proj: head_dim -> n_heads head_dim; a sigmoid-gated RMSNorm
    over head_dim (o_norm); o_proj: n_heads head_dim -> h.
    State: conv (conv_kernel - 1) x conv_dim, recurrent n_heads x head_dim x head_dim.
    """

    hidden_size: int
    n_heads: int
    head_dim: int
    conv_kernel: int

    kind = "kda"

    def __post_init__(self) -> None:
        _positive(self, "hidden_size", "n_heads", "head_dim", "conv_kernel")

    @property
    def width(self) -> int:
        """n_heads x head_dim: the width of q, k, v, the decay and the output gate."""
        return self.n_heads * self.head_dim

    @property
    def conv_dim(self) -> int:
        return 3 * self.width

    def linears(self) -> tuple[Linear, ...]:
        h, w, d = self.hidden_size, self.width, self.head_dim
        return (Linear("q_proj", h, w), Linear("k_proj", h, w), Linear("v_proj", h, w),
                Linear("f_a_proj", h, d), Linear("f_b_proj", d, w), Linear("b_proj", h, self.n_heads),
                Linear("g_a_proj", h, d), Linear("g_b_proj", d, w), Linear("o_proj", w, h))

    def other_params(self) -> dict[str, int]:
        return {"conv1d.weight": self.conv_dim * self.conv_kernel, "A_log": self.n_heads, "dt_bias": self.width,
                "o_norm": self.head_dim}

    def state_elements(self) -> dict[str, int]:
        return {"conv": (self.conv_kernel - 1) * self.conv_dim,
                "recurrent": self.n_heads * self.head_dim * self.head_dim}


@dataclass(frozen=True)
class LightningSpec(_Mixer):
    """Lightning (linear) attention with per-head decay (transformers ``MiniMaxLightningAttention``).

    qkv_proj: h -> 3 n_heads head_dim; output_gate: h -> n_heads head_dim; an RMSNorm over
    n_heads head_dim; out_proj: n_heads head_dim -> h; the decay slopes are fixed buffers.
    State: n_heads x head_dim x head_dim (the running K^T V per head).
    """

    hidden_size: int
    n_heads: int
    head_dim: int
    block_size: int = 256  # MiniMax's ``block_size``: tokens per block of the chunked kernel

    kind = "lightning"

    def __post_init__(self) -> None:
        _positive(self, "hidden_size", "n_heads", "head_dim", "block_size")

    def linears(self) -> tuple[Linear, ...]:
        h, w = self.hidden_size, self.n_heads * self.head_dim
        return (Linear("qkv_proj", h, 3 * w), Linear("output_gate", h, w), Linear("out_proj", w, h))

    def other_params(self) -> dict[str, int]:
        return {"norm": self.n_heads * self.head_dim}

    def state_elements(self) -> dict[str, int]:
        return {"kv": self.n_heads * self.head_dim * self.head_dim}


@dataclass(frozen=True)
class ShortConvSpec(_Mixer):
    """LFM2's gated short convolution (transformers ``Lfm2ShortConv``): in_proj h -> 3 c (B, C, x), the
    product B x, a depthwise causal conv1d of ``kernel`` taps over its c channels (no activation), the
    product C y, out_proj c -> h; ``bias`` (conv_bias) on both projections and the conv. ``channels`` is
    the hidden size (one TP rank's share under tensor parallelism).
    State: the last kernel - 1 inputs of every channel (no recurrent state)."""

    hidden_size: int
    channels: int
    kernel: int
    bias: bool = False

    kind = "short_conv"

    def __post_init__(self) -> None:
        _positive(self, "hidden_size", "channels", "kernel")
        if self.kernel < 2:
            raise LcprofError(f"ShortConvSpec: a causal conv of {self.kernel} tap carries no state; "
                              "kernel must be >= 2")

    def linears(self) -> tuple[Linear, ...]:
        h, c = self.hidden_size, self.channels
        return (Linear("in_proj", h, 3 * c, self.bias), Linear("out_proj", c, h, self.bias))

    def other_params(self) -> dict[str, int]:
        out = {"conv": self.channels * self.kernel}
        if self.bias:
            out["conv_bias"] = self.channels
        return out

    def state_elements(self) -> dict[str, int]:
        return {"conv": self.channels * (self.kernel - 1)}


@dataclass(frozen=True)
class IndexerSpec(_Mixer):
    """DeepSeek Sparse Attention's lightning indexer (DeepSeek-V3.2, GLM-5; transformers
    ``GlmMoeDsaIndexer`` / DeepSeek's ``Indexer``): it scores every cached key for each query in
    its own small dims and keeps the top ``top_k`` for the main (MLA) attention.

    wq_b: q_lora_rank -> n_heads head_dim (from the query latent); wk: h -> head_dim (one key per
    token); a LayerNorm (weight and bias) over head_dim on the key; weights_proj: h -> n_heads.
    Cache: ``cache_elements_per_token`` = head_dim keys per token per layer, kept for every token
    (it grows with n, like KV).
    """

    hidden_size: int
    q_lora_rank: int
    n_heads: int
    head_dim: int
    top_k: int
    rope_dim: int = 64

    kind = "indexer"

    def __post_init__(self) -> None:
        _positive(self, "hidden_size", "q_lora_rank", "n_heads", "head_dim", "top_k", "rope_dim")

    def linears(self) -> tuple[Linear, ...]:
        h = self.hidden_size
        return (Linear("wq_b", self.q_lora_rank, self.n_heads * self.head_dim),
                Linear("wk", h, self.head_dim),
                Linear("weights_proj", h, self.n_heads))

    def other_params(self) -> dict[str, int]:
        return {"k_norm": 2 * self.head_dim}

    @property
    def cache_elements_per_token(self) -> int:
        return self.head_dim


#: Mixer kind -> its spec class (an attention layer's indexer is not a mixer of its own).
MIXER_SPECS = {"mamba": MambaSpec, "mamba2": Mamba2Spec, "gated_deltanet": GatedDeltaNetSpec,
               "kda": KimiDeltaSpec, "lightning": LightningSpec, "short_conv": ShortConvSpec}
