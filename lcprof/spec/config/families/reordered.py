"""Decoders whose norms run on each block's output ("reordered" norms): OLMo 2, OLMo 3 and EXAONE 4.

A layer is x + norm(attn(x)), then h + norm(mlp(h)) -- two RMSNorms, neither on a block's input
(``ModelSpec.output_norms``). OLMo 2/3 normalize q and k over all heads at once (``q_norm`` of width
heads x head_dim, before RoPE), EXAONE 4 per head. OLMo 3 and EXAONE 4 slide on 3 of every 4 layers;
EXAONE 4's full-attention layers then have no RoPE.

Defaults: transformers' ``configuration_olmo2.py``, ``configuration_olmo3.py``,
``configuration_exaone4.py``.
"""

from __future__ import annotations

from lcprof.errors import LcprofError
from lcprof.spec.config import common as C
from lcprof.spec.config.families.decoders import attention_shapes, finish, kinds_from_layer_types, rope_of
from lcprof.spec.config.family import Family
from lcprof.spec.config.reader import Reader

_PER_TYPE = ("full_attention", "sliding_attention")


def _rope(r: Reader, hd: int, max_pos: int, notes: list[str]):
    """RoPE of the full-attention layers. transformers 5 may write OLMo 3's rope_parameters per layer
    type ({"full_attention": {...}, "sliding_attention": {...}}); rope_scaling (YaRN) applies to the full
    layers only (transformers' Olmo3Config, vLLM's Olmo2 model). lcprof has one RoPE per model: the full
    layers' -- the scaling only rescales the rotary frequencies, so no count changes, and the note says so."""
    block = C.rope_block(r)
    if block is not None and set(block) & set(_PER_TYPE):
        extra = sorted(set(block) - set(_PER_TYPE))
        if extra:
            raise LcprofError(f"{r.where}: rope_parameters has per-layer-type entries and also {extra[0]!r}")
        full = block.get("full_attention") or {}
        sliding = block.get("sliding_attention") or {}
        theta = r.as_float("rope_parameters.full_attention.rope_theta", full.get("rope_theta", r.defaults["rope_theta"]),
                           gt=1.0)
        if sliding.get("rope_type", "default") != full.get("rope_type", "default"):
            notes.append(f"Sliding layers use {sliding.get('rope_type', 'default')} RoPE, full layers "
                         f"{full.get('rope_type', 'default')}: lcprof's RoPE is the full layers'.")
        block = {k: v for k, v in full.items() if k != "rope_theta"} or None
        r.touch("rope_theta")
    else:
        theta = C.rope_theta(r, block)
        if block is not None and r.model_type == "olmo3" and \
                block.get("rope_type", block.get("type", "default")) != "default":
            notes.append("rope_scaling applies to the full-attention layers only (transformers' Olmo3, vLLM); "
                         "lcprof's RoPE analysis and measured layer apply it to every layer (no count changes).")
    return C.read_rope(r, C.rotary_dim_of(hd, C.partial_factor(r, block)), theta=theta, block=block,
                       max_pos=max_pos)


def build_olmo(r: Reader, ctx: dict):
    """OLMo 2 (every layer global) and OLMo 3 (layer_types, default sliding on 3 of every 4 layers, window
    sliding_window): output norms, q and k normed over all heads, attention_bias on q/k/v/o."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    notes: list[str] = []
    if r.model_type == "olmo3":
        sw = r.int("sliding_window", null=True)
        types = C.layer_types(r, n_layers)
        if types is None:  # Olmo3Config.__post_init__
            types = ["sliding_attention" if (i + 1) % 4 else "full_attention" for i in range(n_layers)]
        kinds = kinds_from_layer_types(r, types, sliding=sw)
    else:
        kinds = [("global", None)] * n_layers
    bias = r.bool("attention_bias")
    return finish(r, ctx, kinds=kinds, hidden=hidden, heads=heads, kv=kv, hd=hd, inter=r.int("intermediate_size"),
                  vocab=r.int("vocab_size"), max_pos=max_pos, tie=r.bool("tie_word_embeddings"),
                  rope=_rope(r, hd, max_pos, notes), qkv_bias=bias, o_bias=bias, qk_norm="full",
                  output_norms=True, notes=notes)


def _exaone_types(r: Reader, n_layers: int, sw: int | None) -> list[str]:
    """Exaone4Config: layer_types as given; else no sliding window means every layer full; else
    sliding_window_pattern -- an int P (layer i slides unless (i + 1) % P == 0) or a string of L (local)
    and G (global) repeated from layer 0 ("LLLG")."""
    types = C.layer_types(r, n_layers)
    if types is not None:
        r.touch("sliding_window_pattern")
        return types
    if sw is None:
        r.touch("sliding_window_pattern")
        return ["full_attention"] * n_layers
    pat = r.raw("sliding_window_pattern")
    if isinstance(pat, str):
        if not pat or set(pat) - {"L", "G"}:
            raise r.fail("sliding_window_pattern", "a string of L (local) and G (global)", pat)
        return ["sliding_attention" if pat[i % len(pat)] == "L" else "full_attention" for i in range(n_layers)]
    p = r.int("sliding_window_pattern", min=1)
    return ["sliding_attention" if (i + 1) % p else "full_attention" for i in range(n_layers)]


def build_exaone4(r: Reader, ctx: dict):
    """EXAONE 4: output norms, per-head q/k RMSNorm, sliding layers per _exaone_types; with a sliding
    window configured the full-attention layers skip RoPE (Exaone4Attention), without one every layer
    is global with RoPE; no biases."""
    hidden, n_layers, heads, kv, hd = attention_shapes(r)
    max_pos = r.int("max_position_embeddings")
    sw = r.int("sliding_window", null=True)
    types = _exaone_types(r, n_layers, sw)
    kinds = kinds_from_layer_types(r, types, sliding=sw)
    rope_flags = [sw is None or k == "sliding" for k, _ in kinds]
    notes = ["Full-attention layers have no RoPE (a sliding window is configured)."] if not all(rope_flags) else []
    return finish(r, ctx, kinds=kinds, rope_flags=rope_flags, hidden=hidden, heads=heads, kv=kv, hd=hd,
                  inter=r.int("intermediate_size"), vocab=r.int("vocab_size"), max_pos=max_pos,
                  tie=r.bool("tie_word_embeddings"), rope=rope_of(r, hd, max_pos), qk_norm="head", output_norms=True,
                  notes=notes)


_OLMO2 = dict(num_key_value_heads=None, head_dim=None, rope_theta=10000.0, rope_scaling=None, attention_bias=False,
              tie_word_embeddings=False)
# Olmo3Config.default_theta (5e5) is its rope_theta when a config names none
_OLMO3 = dict(_OLMO2, rope_theta=500000.0, sliding_window=4096, layer_types=None)
_EXAONE4 = dict(num_key_value_heads=32, head_dim=None, rope_theta=10000.0, rope_scaling=None, sliding_window=4096,
                sliding_window_pattern=4, layer_types=None, tie_word_embeddings=False)

_SRC = "src/transformers/models/{0}/configuration_{0}.py"
FAMILIES = [
    Family("olmo2", _SRC.format("olmo2"), _OLMO2, build_olmo),
    Family("olmo3", _SRC.format("olmo3"), _OLMO3, build_olmo),
    Family("exaone4", _SRC.format("exaone4"), _EXAONE4, build_exaone4),
]
