"""Building blocks every family loader shares: RoPE, attention shapes, layer schedules, MoE layers,
and the final assembly of a ``ModelSpec``."""

from __future__ import annotations

from typing import Any

from lcprof.errors import LcprofError
from lcprof.spec.config.reader import Reader
from lcprof.spec.layers import ACTIVATION_PASSES, LayerSpec
from lcprof.spec.model import ModelSpec
from lcprof.spec.rope import RopeSpec

# ----------------------------------------------------------------------------------------------
# RoPE
# ----------------------------------------------------------------------------------------------

#: Keys of a rope_scaling / rope_parameters block per rope type: (required, optional). Names follow
#: transformers' ``modeling_rope_utils`` validation (``rope_type`` or the legacy ``type``).
_ROPE_KEYS = {
    "default": (set(), set()),
    "linear": ({"factor"}, set()),
    "dynamic": ({"factor"}, {"original_max_position_embeddings"}),
    "yarn": ({"factor"}, {"original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow",
                          "mscale", "mscale_all_dim", "truncate"}),
    "longrope": ({"short_factor", "long_factor"}, {"factor", "attention_factor",
                                                   "original_max_position_embeddings"}),
    "llama3": ({"factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"}, set()),
}
# "mrope" (Qwen2-VL's checkpoints): transformers reads it as the default RoPE over mrope_section
_ROPE_ALIASES = {"su": "longrope", "ntk": "dynamic", "mrope": "default"}
#: Keys a rope block may carry besides its type's own: the base, the partial factor (transformers 5
#: moves them into rope_parameters) and multimodal RoPE sections, which give every section the same
#: position for text tokens (Qwen3.5's mRoPE costs what plain RoPE costs).
_ROPE_COMMON = {"rope_type", "type", "rope_theta", "partial_rotary_factor", "mrope_section", "mrope_interleaved"}


def rope_block(r: Reader) -> dict | None:
    """The model's rope scaling block: ``rope_parameters`` (transformers 5) or ``rope_scaling``."""
    rp = r.dict("rope_parameters") if r.has("rope_parameters") else None
    rs = r.dict("rope_scaling") if (r.has("rope_scaling") or "rope_scaling" in r.defaults) else None
    if rp is not None and rs is not None and rp != rs:
        raise LcprofError(f"{r.where}: both rope_parameters and rope_scaling are given and they differ")
    return rp if rp is not None else rs


def rope_theta(r: Reader, block: dict | None, key: str = "rope_theta") -> float:
    """The rope block's rope_theta (transformers 5's rope_parameters), else the top-level ``key``. Both given:
    they must agree (a config re-saved by transformers 5 keeps the two; which one a reader takes differs)."""
    if block is not None and "rope_theta" in block:
        theta = r.as_float("rope_parameters.rope_theta", block["rope_theta"], gt=1.0)
        if r.given(key):
            top = r.float(key, gt=1.0)
            if top != theta:
                raise LcprofError(f"{r.where}: {key} {top:g} differs from the rope parameters' rope_theta {theta:g}")
        return theta
    return r.float(key, gt=1.0)


def partial_factor(r: Reader, block: dict | None, key: str = "partial_rotary_factor") -> float:
    """Fraction of head_dim that is rotated, in (0, 1]: the rope block's, else the top-level ``key``; both
    given, they must agree (as for rope_theta)."""
    if block is not None and "partial_rotary_factor" in block:
        f = r.as_float("rope_parameters.partial_rotary_factor", block["partial_rotary_factor"], gt=0.0, le=1.0)
        if r.given(key):
            top = r.float(key, gt=0.0, le=1.0)
            if top != f:
                raise LcprofError(f"{r.where}: {key} {top:g} differs from the rope parameters' "
                                  f"partial_rotary_factor {f:g}")
        return f
    if key in r.cfg or key in r.defaults:
        return r.float(key, gt=0.0, le=1.0)
    return 1.0


def rotary_dim_of(head_dim: int, factor: float) -> int:
    """transformers: dim = int(head_dim * partial_rotary_factor) (an odd result drops its last dim)."""
    d = int(head_dim * factor)
    return d - d % 2


def read_rope(r: Reader, rotary_dim: int, *, theta: float, block: dict | None, max_pos: int) -> RopeSpec:
    """A RopeSpec from a rope block, checked as transformers checks it (required keys per type) and
    stricter where transformers would compute nonsense (non-finite or non-positive values)."""
    if block is None:
        return RopeSpec(theta=theta, rotary_dim=rotary_dim)
    raw_type = block.get("rope_type", block.get("type", "default"))
    if not isinstance(raw_type, str):
        raise r.fail("rope_scaling.rope_type", "a string", raw_type)
    rtype = _ROPE_ALIASES.get(raw_type.lower(), raw_type.lower())
    if rtype not in _ROPE_KEYS:
        raise LcprofError(f"{r.where}: unknown rope scaling type {raw_type!r}; known: {', '.join(_ROPE_KEYS)}")
    required, optional = _ROPE_KEYS[rtype]
    missing = sorted(required - set(block))
    if missing:
        raise LcprofError(f"{r.where}: {rtype} rope scaling is missing {', '.join(missing)}")
    extra = sorted(set(block) - required - optional - _ROPE_COMMON)
    if extra:
        raise LcprofError(f"{r.where}: rope scaling ({rtype}) carries field(s) lcprof does not understand: "
                          f"{', '.join(extra)}")
    if block.get("mrope_section") is not None:
        sec = r.as_int("rope_parameters.mrope_section", sum(r.as_int("mrope_section", x, min=0)
                                                            for x in block["mrope_section"]), min=1)
        if 2 * sec != rotary_dim:
            raise LcprofError(f"{r.where}: mrope_section covers {sec} pairs but the rotary dim is {rotary_dim}")

    def num(key, **kw):
        return r.as_float(f"rope_scaling.{key}", block[key], **kw)

    orig = block.get("original_max_position_embeddings")
    orig = r.as_int("rope_scaling.original_max_position_embeddings", orig) if orig is not None else None
    kw: dict[str, Any] = dict(theta=theta, rotary_dim=rotary_dim, type=rtype, original_max_position=orig)
    if rtype == "longrope":
        short = block["short_factor"]
        long_ = block["long_factor"]
        for nm, f in (("short_factor", short), ("long_factor", long_)):
            if not isinstance(f, list):
                raise r.fail(f"rope_scaling.{nm}", "a list of numbers", f)
        kw["short_factor"] = tuple(r.as_float("rope_scaling.short_factor", x, gt=0) for x in short)
        kw["long_factor"] = tuple(r.as_float("rope_scaling.long_factor", x, gt=0) for x in long_)
        if orig is None and r.given("original_max_position_embeddings"):
            orig = r.int("original_max_position_embeddings")
            kw["original_max_position"] = orig
        # transformers: factor = max_position_embeddings / original when not given
        kw["factor"] = num("factor", gt=0) if block.get("factor") is not None else (max_pos / orig if orig else 1.0)
        if block.get("attention_factor") is not None:
            kw["attention_factor"] = num("attention_factor", ge=0)
    elif rtype != "default":
        kw["factor"] = num("factor", gt=0)
    if rtype == "yarn":
        for k in ("beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor"):
            if block.get(k) is not None:
                kw[k] = num(k, ge=0)
        if block.get("truncate") is not None:
            if not isinstance(block["truncate"], bool):
                raise r.fail("rope_scaling.truncate", "true or false", block["truncate"])
            kw["truncate"] = block["truncate"]
    if rtype == "llama3":
        kw["low_freq_factor"] = num("low_freq_factor", gt=0)
        kw["high_freq_factor"] = num("high_freq_factor", gt=0)
    if rtype in ("yarn", "dynamic", "linear") and orig is None:
        # transformers' convention: without an explicit original length, max_position_embeddings
        # is the length the model was trained at, and the scaled context is factor times that.
        kw["original_max_position"] = max_pos
    try:
        return RopeSpec(**kw)
    except LcprofError as exc:
        raise LcprofError(f"{r.where}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# Layer schedules
# ----------------------------------------------------------------------------------------------

def layer_types(r: Reader, n_layers: int, key: str = "layer_types") -> list[str] | None:
    """``layer_types`` as a list of strings (None when absent and without a default)."""
    if not r.given(key) and r.defaults.get(key) is None:
        r.touch(key)
        return None
    v = r.list(key, length=n_layers)
    for i, t in enumerate(v):
        if not isinstance(t, str):
            raise r.fail(f"{key}[{i}]", "a string", t)
    return v


def window(r: Reader, key: str) -> int:
    """A sliding window or chunk size: an integer >= 1."""
    return r.int(key, min=1)


def every(n_layers: int, pred) -> list[bool]:
    return [bool(pred(i)) for i in range(n_layers)]


def moe_by_sparse_step(r: Reader, n_layers: int, n_experts: int) -> list[bool]:
    """Qwen2-MoE / Qwen3-MoE / Qwen3-Next: layer i is MoE when it is not in ``mlp_only_layers``,
    there are experts, and (i + 1) % decoder_sparse_step == 0."""
    step = r.int("decoder_sparse_step", min=1)
    only = r.int_list("mlp_only_layers", null=True) or []
    for i in only:
        if i >= n_layers:
            raise LcprofError(f"{r.where}: mlp_only_layers names layer {i} of {n_layers}")
    return [i not in only and n_experts > 0 and (i + 1) % step == 0 for i in range(n_layers)]


def moe_by_layer_types_or_first_dense(r: Reader, n_layers: int) -> list[bool]:
    """``mlp_layer_types`` ('dense' / 'sparse' per layer, transformers 5) when given, else
    :func:`moe_by_first_dense`."""
    if r.given("mlp_layer_types"):
        types = r.list("mlp_layer_types", length=n_layers)
        bad = [t for t in types if t not in ("dense", "sparse")]
        if bad:
            raise r.fail("mlp_layer_types", "a list of 'dense'/'sparse'", bad[0])
        r.touch("first_k_dense_replace", "moe_layer_freq")
        return [t == "sparse" for t in types]
    r.touch("mlp_layer_types")
    return moe_by_first_dense(r, n_layers)


def moe_by_first_dense(r: Reader, n_layers: int) -> list[bool]:
    """DeepSeek-V2/V3 family: layer i is MoE when i >= first_k_dense_replace and i % moe_layer_freq
    == 0; ``moe_layer_freq`` may also be a per-layer list of 0/1 (MiMo-V2)."""
    first = r.int("first_k_dense_replace", min=0)
    freq = r.raw("moe_layer_freq")
    if isinstance(freq, list):
        flags = r.int_list("moe_layer_freq", length=n_layers, min=0)
        if any(f not in (0, 1) for f in flags):
            raise r.fail("moe_layer_freq", "an integer or a list of 0/1", freq)
        return [bool(f) and i >= first for i, f in enumerate(flags)]
    f = r.int("moe_layer_freq", min=1)
    return [i >= first and i % f == 0 for i in range(n_layers)]


# ----------------------------------------------------------------------------------------------
# Assembly
# ----------------------------------------------------------------------------------------------

def widen_windows(layers: list[LayerSpec], max_pos: int) -> tuple[list[LayerSpec], str]:
    """A window or chunk at least as long as the model's context never masks anything the model
    can be asked for (Phi-3-128k declares sliding_window 262144 > 131072): such layers are global."""
    wide = [lyr.window for lyr in layers if lyr.window is not None and lyr.window >= max_pos]
    if not wide:
        return layers, ""
    out = [LayerSpec(attn="global", window=None, moe=lyr.moe, rope=lyr.rope, mixers=lyr.mixers, mlp=lyr.mlp,
                     dims=lyr.dims, sinks=lyr.sinks)
           if (lyr.window is not None and lyr.window >= max_pos) else lyr for lyr in layers]
    return out, (f"Window {max(wide)} >= max_position_embeddings {max_pos}: those layers are counted as global.")


#: The config keys that name the MLP's activation, the first one given wins: Nemotron-H's
#: ``mlp_hidden_act`` (its ``hidden_act``-less configs), Gemma's ``hidden_activation``, everyone's
#: ``hidden_act``; absent, transformers' default for the model_type.
#: model types whose transformers RMSNorm multiplies by (1 + w) in float32 and casts last
#: (``Gemma2RMSNorm``, ``Qwen3NextRMSNorm``, ``Qwen3_5RMSNorm``: ``ModelSpec.norm_one_centred``)
ONE_CENTRED_NORM_TYPES = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text", "qwen3_next", "qwen3_5",
                                    "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text"})
ACTIVATION_KEYS = ("mlp_hidden_act", "hidden_activation", "hidden_act")
_DEFAULT_ACTIVATION = {"nemotron_h": "relu2", "gemma2": "gelu_pytorch_tanh", "gemma3_text": "gelu_pytorch_tanh",
                       "gpt_neox": "gelu", "falcon": "gelu"}


def mlp_activation(r: Reader) -> str:
    """The MLP's activation (see ``ACTIVATION_PASSES``); one it does not know is refused naming the field."""
    r.touch(*ACTIVATION_KEYS)  # the ones after the first given are not what the MLP runs
    for key in ACTIVATION_KEYS:
        v = r.cfg.get(key)
        if v is None:
            continue
        if not isinstance(v, str) or v.lower() not in ACTIVATION_PASSES:
            raise r.fail(key, "an MLP activation whose elementwise passes lcprof counts ("
                         + ", ".join(ACTIVATION_PASSES) + ")", v)
        return v.lower()
    return _DEFAULT_ACTIVATION.get(r.model_type, "silu")


def make_spec(r: Reader, *, name: str, meta: dict, layers: list[LayerSpec], notes: list[str],
              **fields: Any) -> ModelSpec:
    """The ModelSpec, with the preset's metadata, the family's notes and the windows widened."""
    max_pos = fields["max_position_embeddings"]
    fields.setdefault("norm_one_centred", r.model_type in ONE_CENTRED_NORM_TYPES)
    if "mlp_activation" in fields:  # the family's own (gpt-oss's clamped SwiGLU): the config's names are not it
        r.touch(*ACTIVATION_KEYS)
    else:
        fields["mlp_activation"] = mlp_activation(r)
    layers, wide_note = widen_windows(list(layers), max_pos)
    all_notes = [meta.get("notes", "")] + notes + [wide_note]
    try:
        return ModelSpec(
            name=name,
            n_layers=len(layers),
            layers=tuple(layers),
            source=meta.get("source"),
            published_params=meta.get("published_params"),
            published_active_params=meta.get("published_active_params"),
            aliases=tuple(meta.get("aliases", ())),
            notes=" ".join(n.strip() for n in all_notes if n and n.strip()),
            **fields,
        )
    except LcprofError as exc:
        msg = str(exc)
        raise LcprofError(msg if msg.startswith(r.where) else f"{r.where}: {msg}") from None
