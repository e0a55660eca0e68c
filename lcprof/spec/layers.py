"""One decoder layer: which token mixers it runs, its attention mask, and its MLP.

A model is a schedule of layers (``ModelSpec.layers``). Each layer has

* ``mixers`` -- the token mixers it runs on the normed input, in parallel when there are several:
  ``("attention",)`` (the default), ``("mamba2",)``, ``("gated_deltanet",)``, ...,
  ``("attention", "mamba2")`` for Falcon-H1's parallel layer, ``()`` for an MLP-only layer
  (Nemotron-H's ``-`` and ``E`` blocks);
* ``attn`` -- the attention mask of its attention mixer (all causal; ``"none"`` when the layer has
  no attention mixer)::

      global   query i attends keys 0..i
      sliding  window W: keys j with i - W < j <= i            (W keys including itself)
      chunked  chunk C: keys j with j // C == i // C, j <= i   (Llama 4's local layers)
      sparse   top-k: min(i + 1, k) keys chosen among 0..i by an indexer (DeepSeek DSA);
               every key stays cached, the indexer's keys too

* ``moe`` / ``mlp`` -- whether the layer has an MLP (``mlp``) and whether it is routed (``moe``);
* ``dims`` -- per-layer attention dims when they differ from the model's (MiMo-V2's sliding
  layers); read them through ``ModelSpec.attn_dims(layer)``, never from the model fields directly;
* ``sinks`` -- a learned sink logit per head (gpt-oss, MiMo-V2's sliding layers): one extra
  softmax column per query, ``n_heads`` parameters.

No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from lcprof.errors import LcprofError

#: Attention masks an attention mixer can have ("none": the layer has no attention mixer).
ATTN_KINDS = ("global", "sliding", "chunked", "sparse", "none")

#: Token mixers a layer can run. ``attention`` is softmax attention (MHA/GQA/MQA/MLA); the others
#: are linear in n and hold a constant state per request (see ``lcprof.spec.mixers``).
MIXER_KINDS = ("attention", "mamba", "mamba2", "gated_deltanet", "kda", "lightning", "short_conv")

#: MLP activations by transformers' name, and the elementwise passes each makes over its input unfused
#: (one op, as lcprof's measured layer runs it; Nemotron-H's squared ReLU is relu, then the square).
#: A config naming any other activation is refused: its passes are not known.
ACTIVATION_PASSES = {"silu": 1, "swish": 1, "gelu": 1, "gelu_pytorch_tanh": 1, "gelu_new": 1, "gelu_fast": 1,
                     "relu": 1, "relu2": 2}

#: Gated activations that combine gate and up their own way instead of act(gate) * up: name ->
#: (elements the unfused ops read + write per MLP-width element, width-sized tensors live at their
#: peak beside the projections' inputs). gpt-oss's clamped SwiGLU (transformers' ``GptOssExperts.
#: _apply_gate``): g = gate.clamp(max=L) (read, write: 2), u = up.clamp(-L, L) (2), g * alpha (2),
#: its sigmoid (2), g * sigmoid (read 2, write 1: 3), u + 1 (2), (u + 1) * glu (3) = 16; live at the
#: last product: gate, up, g, u, glu, u + 1 and the product = 7 (act(gate) * up: 3).
GATED_COMBINES = {"swiglu_oai": (16, 7)}
#: Every activation the cost model counts.
ACTIVATIONS = tuple(ACTIVATION_PASSES) + tuple(GATED_COMBINES)


def activation_moves(name: str, gated: bool) -> int:
    """Elements the MLP's unfused activation reads and writes per width element: 2 per pass (read +
    write), + 3 for the product with up when gated (read 2, write 1); a gated combine its own count."""
    if name in GATED_COMBINES:
        return GATED_COMBINES[name][0]
    return 2 * ACTIVATION_PASSES[name] + (3 if gated else 0)


def activation_live(name: str, gated: bool) -> int:
    """Width-sized tensors the MLP's activation holds at its peak: act(gate), up and their product (3),
    act(up) and up (2), or a gated combine's own count."""
    if name in GATED_COMBINES:
        return GATED_COMBINES[name][1]
    return 3 if gated else 2


class AttnDims(NamedTuple):
    """A layer's attention shapes: query heads, KV heads, query/key head dim, value head dim."""

    n_heads: int
    n_kv_heads: int
    head_dim: int
    v_head_dim: int

    def check(self, where: str) -> None:
        for nm, v in zip(self._fields, self):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise LcprofError(f"{where}: attention {nm} must be a positive integer, got {v!r}")
        if self.n_heads % self.n_kv_heads:
            raise LcprofError(f"{where}: {self.n_heads} query heads are not a multiple of "
                              f"{self.n_kv_heads} KV heads")


@dataclass(frozen=True)
class LayerSpec:
    """One decoder layer (see the module docstring). ``LayerSpec()`` is a global-attention layer
    with a dense MLP; ``LayerSpec(attn="sliding", window=4096, moe=True)`` a sliding one with MoE."""

    attn: str = "global"
    window: int | None = None  # sliding window W or chunk size C
    moe: bool = False
    rope: bool = True  # False for NoPE layers (Llama 4 global layers, Jamba)
    mixers: tuple[str, ...] = ("attention",)
    mlp: bool = True
    dims: AttnDims | None = None  # per-layer attention dims (None: the model's)
    top_k: int | None = None  # keys per query of a sparse (DSA) layer
    sinks: bool = False

    def __post_init__(self) -> None:
        mixers = tuple(self.mixers)
        object.__setattr__(self, "mixers", mixers)
        for m in mixers:
            if m not in MIXER_KINDS:
                raise LcprofError(f"unknown token mixer {m!r}; known: {', '.join(MIXER_KINDS)}")
        if len(set(mixers)) != len(mixers):
            raise LcprofError(f"a layer lists a token mixer twice: {mixers}")
        has_attn = "attention" in mixers
        if not has_attn and self.attn == "global" and self.window is None:
            object.__setattr__(self, "attn", "none")  # the default mask of a layer without attention
        if self.attn not in ATTN_KINDS:
            raise LcprofError(f"unknown attention kind {self.attn!r}; known: {', '.join(ATTN_KINDS)}")
        if has_attn == (self.attn == "none"):
            raise LcprofError(f"attention kind {self.attn!r} does not fit token mixers {mixers}")
        if self.attn in ("global", "sparse", "none"):
            if self.window is not None:
                raise LcprofError(f"a {self.attn} layer has no window")
        elif isinstance(self.window, bool) or not isinstance(self.window, int) or self.window <= 0:
            raise LcprofError(f"a {self.attn} layer needs a positive window, got {self.window!r}")
        if self.attn == "sparse":
            if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k <= 0:
                raise LcprofError(f"a sparse layer needs a positive top_k, got {self.top_k!r}")
        elif self.top_k is not None:
            raise LcprofError(f"a {self.attn} layer has no top_k")
        if self.moe and not self.mlp:
            raise LcprofError("a layer without an MLP cannot have an MoE MLP")
        if not has_attn and (self.dims is not None or self.sinks):
            raise LcprofError("attention dims or sinks on a layer without attention")
        if self.dims is not None:
            if not isinstance(self.dims, AttnDims):
                object.__setattr__(self, "dims", AttnDims(*self.dims))
            self.dims.check("layer")

    @property
    def has_attention(self) -> bool:
        return "attention" in self.mixers

    @property
    def kind(self) -> str:
        """A short label: ``sliding:4096``, ``mamba2``, ``attention+mamba2``, ``mlp`` (MLP only)."""
        parts = []
        for m in self.mixers:
            if m == "attention":
                label = self.attn if self.window is None else f"{self.attn}:{self.window}"
                if self.attn == "sparse":
                    label = f"sparse:top{self.top_k}"
                parts.append(label)
            else:
                parts.append(m)
        return "+".join(parts) if parts else "mlp"
