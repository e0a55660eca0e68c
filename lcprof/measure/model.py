"""A whole model built from its spec with seeded random weights: embeddings, every layer with its
own kind, the final norm and the LM head.

``Model(spec)`` runs the schedule the spec describes::

    ids (batch, m) ─ embed ─ layer 0 ─ layer 1 ─ ... ─ layer L-1 ─ RMSNorm ─ lm_head(last position) ─ logits (batch, vocab)

(Gemma's embeddings times sqrt(hidden) before layer 0; Gemma 2's final-logit soft-capping,
c tanh(logits / c), after the LM head.)

* **Layers** come from one factory, :func:`build_layer`, keyed by the layer's *kind*
  (:func:`layer_kind`): ``attention`` (the layer's own mask -- global, sliding W, chunked C --, RoPE
  or NoPE, MLA, dense or MoE MLP), the linear-time mixers ``mamba``, ``mamba2``, ``gated_deltanet``, ``kda``
  and ``lightning`` (a pre-norm mixer block, with or without its MLP) and ``mlp`` (an MLP-only
  block); each is a :class:`lcprof.measure.layer.DecoderLayer`. Parallel mixers in one layer
  (Falcon-H1's ``attention+mamba2``) have no builder and are refused naming the layer. Other kinds
  plug in with :func:`register_layer_kind`; a layer module of any kind answers
  ``layer(x, cache, start=...)`` and, when its decode cache is not a KV cache of
  :func:`decode_capacity` slots, ``layer.decode_cache(batch, n, dtype=, device=, generator=)``.
  A mixer layer's decode cache is its state (constant in n: conv window + recurrent state, random
  unit-variance values); an MLP-only layer has none. Mixer layers run the ``torch`` mixer backend.
* **Prefill** ``model(ids)``: m tokens at positions 0..m-1; the final norm runs over every position
  (as transformers' models do) and the LM head over the last one only (what serving needs for the
  first token, and ``cost(..., lm_head=True)`` counts).
* **Decode** ``model(ids, caches, start=n)``: one token at position n against a context of n
  tokens. Each layer's cache holds exactly the keys the new token attends (:func:`decode_capacity`):
  a global layer n + 1 slots, a sliding layer the last min(n + 1, W), a chunked layer the current
  chunk's n % C + 1 (as vLLM and transformers' sliding caches keep them); the new token's K/V go
  into the last slot and RoPE sees its true position n (``start``).

Weights: ``init="seeded"`` (default) draws every layer with the layer's own seeded CPU generator
(``DecoderLayer._init_weights``: the same weights on every device) and the embedding (std 1) and an
untied LM head (std 1/sqrt(hidden)) from a CPU generator seeded by ``seed``; then the model moves to
``device``/``dtype``. ``init="device"`` draws the attention layers' weights on the device itself by
the same rule (normal with std 1/sqrt(fan_in), biases 0.1 N(0, 1), norms 1) -- other values, the
same distribution, seconds instead of minutes for an 8B model on a GPU. Layers of kinds without a
device rule are drawn on the CPU. ``materialize=False`` builds on the meta device: shapes, parameter
counts and cache sizes without allocating.

RoPE tables and dense masks are built once per forward and shared by every layer, as a model does:
the layers share one RoPE cache, and :func:`lcprof.measure.backends.cached_dense_mask` holds one mask
per mask kind.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from lcprof.errors import LcprofError
from lcprof.measure.backends import soft_cap_
from lcprof.measure.layer import MOE_TIMINGS, DecoderLayer, KVCache, block_norm, norm_eps

#: model types whose embeddings are multiplied by sqrt(hidden_size) (transformers' Gemma models: the
#: ``normalizer``, rounded to the embeddings' dtype); one elementwise pass over n x hidden, before
#: the first layer (not in the per-layer cost)
EMBEDDING_SCALED = ("gemma", "gemma2", "gemma3", "gemma3_text")


def scale_embeddings(spec: "ModelSpec", x: torch.Tensor) -> torch.Tensor:
    """The embeddings as the first layer sees them: Gemma's x sqrt(hidden), the factor in x's dtype;
    Granite 4's x embedding_multiplier (a Python float, as transformers multiplies)."""
    if spec.model_type in EMBEDDING_SCALED:
        return x * torch.tensor(spec.hidden_size ** 0.5, dtype=x.dtype)
    if spec.embedding_multiplier is not None:
        return x * spec.embedding_multiplier
    return x


def scale_logits(spec: "ModelSpec", logits: torch.Tensor) -> torch.Tensor:
    """The logits as the model returns them: Gemma 2's soft-capping, Granite 4's / logits_scaling."""
    if spec.final_logit_softcap:  # c * tanh(logits / c), three passes (cost.ops.lm_head_op counts them)
        logits = soft_cap_(logits, spec.final_logit_softcap)
    if spec.logits_scaling is not None:  # one pass (cost.ops.lm_head_op)
        logits = logits / spec.logits_scaling
    return logits
from lcprof.spec import LayerSpec, ModelSpec

INITS = ("seeded", "device")

# ----------------------------------------------------------------------------------------------
# Layer kinds: one factory for every layer of a schedule
# ----------------------------------------------------------------------------------------------

#: kind -> builder(spec, layer_idx, *, seed, mla_form, moe_timing, materialize) -> nn.Module
_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
#: kinds whose weights ``init="device"`` may draw on the device (DecoderLayer's rule)
_DEVICE_INIT_KINDS: set[str] = set()


def layer_kind(spec: ModelSpec, layer_idx: int) -> str:
    """The kind of layer ``layer_idx`` runs: its token mixers joined by ``+`` (``attention``,
    ``mamba2``, ``attention+mamba2`` for parallel mixers), or ``mlp`` for a layer without one."""
    mixers = tuple(spec.layers[layer_idx].mixers)
    return "+".join(mixers) if mixers else "mlp"


def register_layer_kind(kind: str, builder: Callable[..., nn.Module], *, device_init: bool = False) -> None:
    """Add the builder of a layer kind; a kind registered twice is an error."""
    if kind in _BUILDERS:
        raise ValueError(f"layer kind {kind!r} is registered twice")
    _BUILDERS[kind] = builder
    if device_init:
        _DEVICE_INIT_KINDS.add(kind)


def _build_decoder_layer(spec: ModelSpec, layer_idx: int, *, seed: int, mla_form: str, moe_timing: str,
                         materialize: bool) -> nn.Module:
    return DecoderLayer(spec, layer_idx, seed=seed, mla_form=mla_form, moe_timing=moe_timing,
                        materialize=materialize)


register_layer_kind("attention", _build_decoder_layer, device_init=True)
# The mixers' weights have their own seeded init (A_log, dt bias...): drawn on the CPU, never by the
# device rule.
for _kind in ("mamba", "mamba2", "gated_deltanet", "kda", "lightning", "short_conv", "mlp"):
    register_layer_kind(_kind, _build_decoder_layer, device_init=_kind == "mlp")


def build_layer(spec: ModelSpec, layer_idx: int, *, seed: int = 0, mla_form: str = "naive",
                moe_timing: str = "dense-equivalent", materialize: bool = True) -> nn.Module:
    """Layer ``layer_idx`` of ``spec`` as a module of its kind (see :func:`layer_kind`)."""
    kind = layer_kind(spec, layer_idx)
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise LcprofError(f"{spec.name} layer {layer_idx} is a {kind!r} layer, which has no measured "
                          f"implementation yet; measured kinds: {', '.join(sorted(_BUILDERS))}")
    return builder(spec, layer_idx, seed=seed, mla_form=mla_form, moe_timing=moe_timing, materialize=materialize)


def distinct_layers(spec: ModelSpec) -> list[tuple[int, int]]:
    """(index of the first layer, number of layers) per distinct layer spec, in schedule order.

    Layers with equal LayerSpecs (kind, attention mask and window, RoPE, MoE) have the same shapes
    and the same cost: one of them stands for all.
    """
    first: dict[LayerSpec, int] = {}
    count: dict[LayerSpec, int] = {}
    for i, lspec in enumerate(spec.layers):
        first.setdefault(lspec, i)
        count[lspec] = count.get(lspec, 0) + 1
    return [(first[k], count[k]) for k in first]


def kind_label(spec: ModelSpec, layer_idx: int) -> str:
    """A short label of a layer's kind: ``global``, ``sliding:4096``, ``chunked:8192+moe``, ``nope``..."""
    lspec = spec.layers[layer_idx]
    kind = layer_kind(spec, layer_idx)
    base = lspec.attn if kind == "attention" else kind
    if lspec.window is not None:
        base += f":{lspec.window}"
    if spec.rope is not None and not lspec.rope:
        base += "+nope"
    if lspec.moe and spec.moe is not None:
        base += "+moe"
    return base


# ----------------------------------------------------------------------------------------------
# Decode caches
# ----------------------------------------------------------------------------------------------

def decode_capacity(lspec: LayerSpec, n: int) -> int:
    """Keys the token at position n (after a context of n tokens) attends, itself included.

    global n + 1; sliding W: min(n + 1, W); chunked C: the current chunk up to itself, n % C + 1.
    """
    if lspec.attn == "global":
        return n + 1
    if lspec.attn == "sliding":
        return min(n + 1, int(lspec.window))
    if lspec.attn == "chunked":
        return n % int(lspec.window) + 1
    raise LcprofError(f"no decode cache rule for attention kind {lspec.attn!r}")


def layer_decode_cache(layer: nn.Module, batch: int, n: int, *, dtype: torch.dtype, device,
                       generator: torch.Generator | None = None):
    """The cache one decode step at context n reads and writes, for a layer of any kind.

    Attention layers: a KVCache of :func:`decode_capacity` slots, random unit-variance values (a
    prefill of random tokens, in scale), or zeros on the meta device. Layers that hold a state
    define ``decode_cache`` themselves (HYBRID).
    """
    if hasattr(layer, "decode_cache"):
        return layer.decode_cache(batch, n, dtype=dtype, device=device, generator=generator)
    if not layer.lspec.has_attention:  # a mixer's state (constant in n), None for an MLP-only layer
        if torch.device(device).type == "meta":
            return layer.empty_cache(batch, 0, dtype=dtype, device="meta")
        return layer.random_cache(batch, 0, generator=generator, dtype=dtype, device=device)
    cap = decode_capacity(layer.lspec, n)
    if torch.device(device).type == "meta":
        sa, sb = layer.cache_shapes(batch, cap)
        return KVCache(torch.empty(sa, dtype=dtype, device="meta"), torch.empty(sb, dtype=dtype, device="meta"))
    return layer.random_cache(batch, cap, generator=generator, dtype=dtype, device=device)


def cache_nbytes(cache) -> int:
    """Bytes of one layer's cache (a KVCache, a mixer state, any object with ``nbytes``; None: 0)."""
    return 0 if cache is None else int(cache.nbytes)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

class Model(nn.Module):
    """The whole model of ``spec`` (see the module docstring)."""

    def __init__(self, spec: ModelSpec, *, seed: int = 0, mla_form: str = "naive",
                 moe_timing: str = "dense-equivalent", init: str = "seeded", device=None, dtype=None,
                 materialize: bool = True) -> None:
        super().__init__()
        if init not in INITS:
            raise LcprofError(f"unknown init {init!r}; use {' or '.join(INITS)}")
        if moe_timing not in MOE_TIMINGS:
            raise LcprofError(f"unknown MoE timing {moe_timing!r}; known: {', '.join(MOE_TIMINGS)}")
        self.spec = spec
        self.seed = int(seed)
        self.moe_timing = moe_timing
        device = torch.device(device or "cpu")
        dtype = dtype or torch.float32
        h = spec.hidden_size
        eps = norm_eps(spec)
        on_device = init == "device" and materialize
        layers = []
        for i in range(spec.n_layers):
            fast = on_device and layer_kind(spec, i) in _DEVICE_INIT_KINDS
            layers.append(build_layer(spec, i, seed=seed, mla_form=mla_form, moe_timing=moe_timing,
                                      materialize=materialize and not fast))
        self.layers = nn.ModuleList(layers)
        with torch.device("meta"):
            self.embed = nn.Embedding(spec.vocab_size, h)
            self.norm = block_norm(spec, h, eps)
            self.lm_head = nn.Linear(h, spec.vocab_size, bias=False)
        if spec.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self._rope_cache: dict = {}
        for layer in self.layers:  # one RoPE table per forward, shared by every layer
            if isinstance(layer, DecoderLayer):
                layer._rope_cache = self._rope_cache
        if not materialize:
            return
        if on_device:
            self._init_on_device(device, dtype)
        else:
            self._init_head_seeded()
            self.to(device=device, dtype=dtype)

    # ----- weights ---------------------------------------------------------------------------------
    def _head_params(self):
        yield self.embed, "weight", 1.0
        yield self.norm, "weight", None
        if not self.spec.tie_embeddings:
            yield self.lm_head, "weight", 1.0 / math.sqrt(self.spec.hidden_size)

    @torch.no_grad()
    def _init_head_seeded(self) -> None:
        g = torch.Generator(device="cpu").manual_seed(self.seed * 1009 + 1_000_003)
        for mod, name, std in self._head_params():
            shape = mod._parameters[name].shape
            value = torch.ones(shape) if std is None else torch.randn(shape, generator=g) * std
            mod._parameters[name] = nn.Parameter(value, requires_grad=False)
        if self.spec.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @torch.no_grad()
    def _init_on_device(self, device: torch.device, dtype: torch.dtype) -> None:
        """Draw the head and every meta layer on ``device`` by DecoderLayer's rule; move the rest."""
        g = torch.Generator(device=device).manual_seed(self.seed * 1009 + 1_000_003)

        def draw(shape, std):
            if std is None:
                return torch.ones(shape, device=device, dtype=dtype)
            return torch.randn(shape, generator=g, device=device, dtype=torch.float32).mul_(std).to(dtype)

        for mod, name, std in self._head_params():
            mod._parameters[name] = nn.Parameter(draw(mod._parameters[name].shape, std), requires_grad=False)
        if self.spec.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        for layer in self.layers:
            params = [(m, k, p) for m in layer.modules() for k, p in m._parameters.items() if p is not None]
            if params and params[0][2].device.type != "meta":  # built and drawn on the CPU: move it
                layer.to(device=device, dtype=dtype)
                continue
            for m, k, p in params:
                if p.dim() >= 2:
                    value = draw(p.shape, 1.0 / math.sqrt(p.shape[-1]))
                elif k.endswith("bias"):
                    value = draw(p.shape, 0.1)
                else:
                    value = draw(p.shape, None)
                m._parameters[k] = nn.Parameter(value, requires_grad=False)

    @property
    def param_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ----- attention backend, MLA form ----------------------------------------------------------------
    def set_attention(self, fn) -> None:
        """Use attention function ``fn`` (a backend, or ``check.reference_attention``) in every layer."""
        for layer in self.layers:
            if hasattr(layer, "attention"):
                layer.attention = fn

    def set_mla_form(self, form: str) -> None:
        """MLA layers: ``naive`` or ``absorbed`` (same weights, see DecoderLayer)."""
        for layer in self.layers:
            if getattr(layer, "spec", None) is not None and getattr(layer.spec, "mla", None) is not None:
                layer.mla_form = form

    # ----- caches ------------------------------------------------------------------------------------
    def decode_caches(self, batch: int, n: int, *, generator: torch.Generator | None = None,
                      dtype=None, device=None) -> list:
        """Every layer's cache for one decode step at context n (see :func:`layer_decode_cache`)."""
        p = next(self.parameters())
        dtype, device = dtype or p.dtype, device or p.device
        return [layer_decode_cache(layer, batch, n, dtype=dtype, device=device, generator=generator)
                for layer in self.layers]

    def decode_cache_bytes(self, batch: int, n: int, dtype: torch.dtype) -> int:
        """Bytes of every layer's decode cache at context n (computed on the meta device)."""
        return sum(cache_nbytes(layer_decode_cache(layer, batch, n, dtype=dtype, device="meta"))
                   for layer in self.layers)

    # ----- forward -----------------------------------------------------------------------------------
    def embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (batch, m) -> the first layer's input (batch, m, hidden)."""
        return scale_embeddings(self.spec, self.embed(ids))

    def hidden(self, ids: torch.Tensor, caches: list | None = None, *, start: int | None = None) -> torch.Tensor:
        """ids (batch, m) -> hidden states after the final norm (batch, m, hidden)."""
        x = self.embeddings(ids)  # (batch, m, hidden)
        for i, layer in enumerate(self.layers):
            x = layer(x, None if caches is None else caches[i], start=start)
        return self.norm(x)

    def forward(self, ids: torch.Tensor, caches: list | None = None, *, start: int | None = None) -> torch.Tensor:
        """Logits of the last position (batch, vocab): a prefill (no caches) or a cached step at ``start``."""
        h = self.hidden(ids, caches, start=start)
        return scale_logits(self.spec, self.lm_head(h[:, -1, :]))  # (batch, vocab)

    @torch.no_grad()
    def prefill_caches(self, ids: torch.Tensor, n_context: int) -> list:
        """The decode caches a prefill of ``ids[:, :n_context]`` leaves, for a step at position n_context.

        Runs each layer's prefill with ``return_kv`` and keeps the keys each cache holds (the last
        ``decode_capacity - 1`` of them), then one empty slot for the new token; a mixer layer keeps
        the state its prefill leaves, an MLP-only layer nothing.
        """
        b = ids.shape[0]
        x = self.embeddings(ids[:, :n_context])
        caches = []
        for layer in self.layers:
            if not isinstance(layer, DecoderLayer):
                raise LcprofError(f"prefill_caches: {type(layer).__name__} layers hold no KV cache")
            x, kv = layer(x, return_kv=True)
            if not layer.lspec.has_attention:
                caches.append(kv)
                continue
            cap = decode_capacity(layer.lspec, n_context)
            cache = layer.empty_cache(b, cap)
            keep = cap - 1
            if keep:
                cache.a[:, :keep] = kv.a[:, n_context - keep:n_context]
                cache.b[:, :keep] = kv.b[:, n_context - keep:n_context]
            caches.append(cache)
        return caches
