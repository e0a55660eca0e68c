"""What a model *is*: a frozen, validated ``ModelSpec`` -- a schedule of layers plus the shapes of
each kind of layer it uses. Built from a HuggingFace ``config.json`` by ``lcprof.spec.config``.

The model-level attention fields (``n_heads``, ``n_kv_heads``, ``head_dim``, ``v_head_dim``) are the
attention layers' shapes (0 when the model has no attention layer at all, e.g. Falcon-Mamba); a layer
may override them (``LayerSpec.dims``). Consumers ask ``attn_dims(layer)`` for a layer's shapes and
``mixer(kind)`` for a linear mixer's spec; they never special-case a model family. No torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lcprof.errors import LcprofError
from lcprof.spec.attention import QK_NORMS, MLASpec
from lcprof.spec.layers import ACTIVATIONS, GATED_COMBINES, AttnDims, LayerSpec
from lcprof.spec.mixers import (GatedDeltaNetSpec, IndexerSpec, KimiDeltaSpec, LightningSpec, Mamba2Spec, MambaSpec,
                                ShortConvSpec)
from lcprof.spec.moe import MoESpec
from lcprof.spec.rope import RopeSpec

#: Mixer kind -> the ModelSpec field holding its spec.
MIXER_FIELDS = {"mamba": "mamba", "mamba2": "mamba2", "gated_deltanet": "gated_deltanet", "kda": "kda",
                "lightning": "lightning", "short_conv": "short_conv"}


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only model, exactly as much of it as cost needs."""

    name: str
    model_type: str
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int  # query/key head dim (MLA: nope + rope)
    v_head_dim: int
    intermediate_size: int  # dense MLP width
    mlp_gated: bool
    vocab_size: int
    tie_embeddings: bool
    max_position_embeddings: int
    layers: tuple[LayerSpec, ...]
    original_max_position_embeddings: int | None = None
    rope: RopeSpec | None = None
    mla: MLASpec | None = None
    moe: MoESpec | None = None
    qkv_bias: bool = False
    norms_per_layer: int = 2
    torch_dtype: str | None = None
    source: str | None = None
    published_params: int | None = None
    published_active_params: int | None = None
    aliases: tuple[str, ...] = ()
    notes: str = ""
    config: dict = field(default_factory=dict, compare=False, repr=False, hash=False)
    # ---- attention variants (see lcprof.spec.attention) -------------------------------------
    o_bias: bool = False
    qk_norm: str = "none"
    qk_norm_after_rope: bool = False  # HunYuan: the q/k RMSNorms ("head"/"full") run on the rotated q and k
    attn_output_gate: bool = False
    mlp_activation: str = "silu"  # the MLP's activation, by transformers' name (see spec.layers.ACTIVATIONS)
    attn_temperature_tuning: bool = False  # Llama 4: NoPE layers scale q by a per-position temperature
    # Ministral 3's "Llama 4 scaling" (beta, original_max_position_embeddings): after RoPE every layer's q is
    # multiplied by 1 + beta * log(1 + floor(position / original)), computed per position and cast to q's dtype
    query_scaling: tuple[float, int] | None = None
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    query_pre_attn_scalar: float | None = None
    attn_scale: float | None = None  # the softmax scale itself (Granite 4's attention_multiplier)
    # Granite 4's muP scalars: the embeddings times embedding_multiplier before layer 0 (like Gemma's
    # sqrt(hidden)), the logits divided by logits_scaling (one pass over them: cost.ops.lm_head_op)
    embedding_multiplier: float | None = None
    logits_scaling: float | None = None
    # Falcon-H1's muP multipliers inside the layer, each one elementwise op whatever its value (transformers
    # and vLLM both run them): the attention's input, keys and output, the Mamba-2 branch's input, in_proj
    # output (a per-channel vector) and output, the MLP's gate and output (cost.ops._mup_bytes)
    mup_multipliers: bool = False
    # ---- MLP and norms --------------------------------------------------------------------------
    mlp_bias: bool = False
    # Scaled residuals: ``post_norm_residual`` -- each block adds its output to its *normed* input
    # (MiniMax-Text-01's ``postnorm``; transformers' MiniMaxDecoderLayer always); ``residual_factors``
    # -- the residual add is residual x alpha + output x beta, unfused ops whatever the values,
    # ((alpha, beta) of softmax-attention blocks, of linear-attention blocks, of MLP blocks); alpha
    # None: the residual is added as is, residual + output x beta (Granite 4's residual_multiplier)
    post_norm_residual: bool = False
    residual_factors: tuple[tuple[float | None, float], tuple[float | None, float],
                            tuple[float | None, float]] | None = None
    norm_bias: bool = False  # LayerNorm with a bias (GPT-NeoX, Falcon) instead of RMSNorm
    # OLMo 2/3, EXAONE 4 ("reordered" norms): each block's one norm runs on its *output*, before the residual
    # add -- x + norm(attn(x)), then h + norm(mlp(h)) -- and none on its input
    output_norms: bool = False
    # Cohere 2: the attention and the MLP read the same normed input, x + attn(n) + mlp(n) with n = norm(x);
    # one norm per layer
    parallel_block: bool = False
    # the layer's norms subtract the mean (LayerNorm, weight only), in float32, as transformers' Cohere2LayerNorm;
    # the norm_bias models (GPT-NeoX, Falcon) are measured and priced with RMSNorm instead (classic.py's note)
    layer_norm: bool = False
    # transformers' Gemma / Qwen3-Next / Qwen3.5 RMSNorm: x * rsqrt(...) times (1 + w) in float32, the cast
    # last (Llama's: cast, then times w in the input's dtype): 4 B more per element in fp16/bf16
    norm_one_centred: bool = False
    # ---- linear-time mixers and the sparse-attention indexer (lcprof.spec.mixers) --------------
    mamba: MambaSpec | None = None
    mamba2: Mamba2Spec | None = None
    gated_deltanet: GatedDeltaNetSpec | None = None
    kda: KimiDeltaSpec | None = None
    lightning: LightningSpec | None = None
    short_conv: ShortConvSpec | None = None  # LFM2's gated short convolution
    indexer: IndexerSpec | None = None
    state_dtype: str | None = None  # dtype the config asks the SSM/recurrent state to be kept in
    # ---- where it came from ---------------------------------------------------------------------
    text_model_of: str | None = None  # the multimodal wrapper's model_type when read from text_config
    ignored_fields: tuple[str, ...] = ()  # fields the loader did not understand (--allow-unknown)
    checkpoint_dir: str | None = None  # folder (or Hub snapshot) the config.json was read from

    def __post_init__(self) -> None:
        where = f"model {self.name!r}"
        for nm in ("n_layers", "hidden_size", "vocab_size", "max_position_embeddings"):
            v = getattr(self, nm)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise LcprofError(f"{where}: {nm} must be a positive integer, got {v!r}")
        if len(self.layers) != self.n_layers:
            raise LcprofError(f"{where}: {len(self.layers)} layer specs for {self.n_layers} layers")
        if self.has_attention:
            AttnDims(self.n_heads, self.n_kv_heads, self.head_dim, self.v_head_dim).check(where)
        else:
            for nm in ("n_heads", "n_kv_heads", "head_dim", "v_head_dim"):
                v = getattr(self, nm)
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise LcprofError(f"{where}: {nm} must be an integer >= 0, got {v!r}")
        if not isinstance(self.intermediate_size, int) or self.intermediate_size < 0:
            raise LcprofError(f"{where}: intermediate_size must be >= 0")
        dense = [i for i, layer in enumerate(self.layers) if layer.mlp and not layer.moe]
        if dense and self.intermediate_size <= 0:
            raise LcprofError(f"{where}: layer {dense[0]} has a dense MLP but intermediate_size is 0")
        if any(layer.moe for layer in self.layers) and self.moe is None:
            raise LcprofError(f"{where}: MoE layers but no MoE spec")
        if self.mla is not None and self.mla.qk_head_dim != self.head_dim:
            raise LcprofError(f"{where}: MLA head dims disagree with head_dim")
        if self.mlp_activation not in ACTIVATIONS:
            raise LcprofError(f"{where}: MLP activation {self.mlp_activation!r} is not one lcprof counts "
                              f"(known: {', '.join(ACTIVATIONS)})")
        plain = [i for i, layer in enumerate(self.layers) if layer.mlp and not (
            self.moe.gated if (layer.moe and self.moe is not None) else self.mlp_gated)]
        if self.mlp_activation in GATED_COMBINES and plain:
            raise LcprofError(f"{where}: MLP activation {self.mlp_activation!r} combines a gate and up: layer "
                              f"{plain[0]}'s MLP is not gated")
        if self.qk_norm not in QK_NORMS:
            raise LcprofError(f"{where}: qk_norm must be one of {', '.join(QK_NORMS)}, got {self.qk_norm!r}")
        if self.qk_norm_after_rope and self.qk_norm not in ("head", "full"):
            raise LcprofError(f"{where}: qk_norm_after_rope needs an RMSNorm of q and k (qk_norm head or full), "
                              f"got qk_norm {self.qk_norm!r}")
        for i, layer in enumerate(self.layers):
            for m in layer.mixers:
                if m != "attention" and getattr(self, MIXER_FIELDS[m]) is None:
                    raise LcprofError(f"{where}: layer {i} runs {m} but the model has no {m} spec")
            if layer.attn == "sparse" and self.indexer is None:
                raise LcprofError(f"{where}: layer {i} is sparse attention but the model has no indexer spec")
            if layer.dims is not None and self.mla is not None:
                raise LcprofError(f"{where}: per-layer attention dims are not defined for MLA")
        if self.attn_scale is not None and self.query_pre_attn_scalar is not None:
            raise LcprofError(f"{where}: attn_scale and query_pre_attn_scalar both set the query scale")
        if self.residual_factors is not None:
            alphas = {f[0] is None for f in self.residual_factors}
            if len(alphas) > 1:
                raise LcprofError(f"{where}: residual_factors: alpha is None for some blocks and not others")
        for nm in ("attn_logit_softcap", "final_logit_softcap", "query_pre_attn_scalar", "attn_scale",
                   "embedding_multiplier", "logits_scaling"):
            v = getattr(self, nm)
            if v is not None and not (isinstance(v, (int, float)) and v > 0 and v < float("inf")):
                raise LcprofError(f"{where}: {nm} must be a positive finite number or null, got {v!r}")

    # ----- derived facts -------------------------------------------------------------------
    @property
    def has_attention(self) -> bool:
        return any(layer.has_attention for layer in self.layers)

    def layer(self, layer: int | LayerSpec) -> LayerSpec:
        """A layer by index (range-checked) or the LayerSpec itself."""
        if isinstance(layer, LayerSpec):
            return layer
        i = int(layer)
        if not 0 <= i < self.n_layers:
            raise LcprofError(f"layer index {layer} out of range 0..{self.n_layers - 1}")
        return self.layers[i]

    def attn_dims(self, layer: int | LayerSpec) -> AttnDims:
        """(n_heads, n_kv_heads, head_dim, v_head_dim) of a layer's attention -- the one accessor for
        per-layer attention shapes (MLA: n_kv_heads = n_heads, head_dim = nope + rope dims)."""
        lyr = self.layer(layer)
        if not lyr.has_attention:
            raise LcprofError(f"{self.name}: layer {lyr.kind} has no attention")
        if lyr.dims is not None:
            return lyr.dims
        return AttnDims(self.n_heads, self.n_kv_heads, self.head_dim, self.v_head_dim)

    def qk_norm_at(self, layer: int | LayerSpec) -> str:
        """The q/k norm ``layer`` runs (see :mod:`lcprof.spec.attention`): ``qk_norm``, or "none" on a layer
        without attention and, for the L2 norm, on a NoPE layer (Llama 4 norms q and k on its RoPE
        layers only: transformers' ``Llama4TextAttention``, ``use_qk_norm and use_rope``)."""
        lyr = self.layer(layer)
        if not lyr.has_attention or (self.qk_norm == "l2" and not lyr.rope):
            return "none"
        return self.qk_norm

    @property
    def residual_products(self) -> int:
        """Products in each residual add: 0 (residual + output), 1 (residual + output x beta, Granite 4),
        2 (residual x alpha + output x beta, MiniMax)."""
        if self.residual_factors is None:
            return 0
        return 1 if self.residual_factors[0][0] is None else 2

    def residual_factors_at(self, layer: int | LayerSpec) -> tuple[tuple[float | None, float],
                                                                     tuple[float | None, float]] | None:
        """(alpha, beta) of ``layer``'s token-mixing block's residual add and of its MLP block's, or
        None when the model adds plainly (see ``residual_factors``)."""
        if self.residual_factors is None:
            return None
        lyr = self.layer(layer)
        full, linear, mlp = self.residual_factors
        return (full if lyr.has_attention else linear), mlp

    def query_temperature_at(self, layer: int | LayerSpec) -> bool:
        """Whether ``layer`` scales its queries by Llama 4's per-position attention temperature
        (``attn_temperature_tuning``: on the NoPE layers only)."""
        lyr = self.layer(layer)
        return self.attn_temperature_tuning and lyr.has_attention and not lyr.rope

    def mixer(self, kind: str):
        """The spec of a linear-time mixer kind (``mamba``, ``mamba2``, ``gated_deltanet``, ``kda``, ``lightning``,
        ``short_conv``)."""
        if kind not in MIXER_FIELDS:
            raise LcprofError(f"unknown mixer kind {kind!r}; known: {', '.join(MIXER_FIELDS)}")
        spec = getattr(self, MIXER_FIELDS[kind])
        if spec is None:
            raise LcprofError(f"{self.name} has no {kind} layers")
        return spec

    def mlp_width(self, layer: LayerSpec) -> int:
        """The MLP's intermediate width per token in ``layer``: the MoE active width, the dense one,
        or 0 for a layer without an MLP."""
        if not layer.mlp:
            return 0
        return self.moe.active_width if (layer.moe and self.moe is not None) else self.intermediate_size

    @property
    def gqa_group(self) -> int:
        """Query heads per KV head (of the model-level attention shapes)."""
        if self.n_kv_heads == 0:
            raise LcprofError(f"{self.name} has no attention layers")
        return self.n_heads // self.n_kv_heads

    @property
    def attention_type(self) -> str:
        """MHA, GQA, MQA, MLA, or none."""
        if not self.has_attention:
            return "none"
        if self.mla is not None:
            return "MLA"
        if self.n_kv_heads == self.n_heads:
            return "MHA"
        if self.n_kv_heads == 1:
            return "MQA"
        return "GQA"

    @property
    def layer_kinds(self) -> dict[str, int]:
        """Count of layers per kind, e.g. {'sliding:4096': 21, 'global': 21} or
        {'gated_deltanet': 36, 'global': 12}."""
        out: dict[str, int] = {}
        for layer in self.layers:
            out[layer.kind] = out.get(layer.kind, 0) + 1
        return out

    @property
    def mixer_counts(self) -> dict[str, int]:
        """Layers per token mixer ('attention', 'mamba2', ...; 'mlp' for MLP-only layers)."""
        out: dict[str, int] = {}
        for layer in self.layers:
            for m in layer.mixers or ("mlp",):
                out[m] = out.get(m, 0) + 1
        return out

    def with_layers(self, layers: tuple[LayerSpec, ...]) -> "ModelSpec":
        return dataclasses.replace(self, layers=tuple(layers), n_layers=len(layers))

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)
