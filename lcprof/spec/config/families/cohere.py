"""Cohere 2 (Command R7B, Command A): a parallel block and sliding layers.

Each layer is x + attn(n) + mlp(n), n = LayerNorm(x) (weight only, float32): one norm per layer
(``ModelSpec.parallel_block``, ``layer_norm``). Three of every four layers slide (``sliding_window``,
default pattern 4) with RoPE; the others attend globally without RoPE. The logits are multiplied by
``logit_scale``. transformers' ``Cohere2Config`` sets head_dim = hidden_size // num_attention_heads
whatever the config says, and rotates adjacent pairs (GPT-J's layout: a permutation of q and k's rows,
the same cost).

Defaults: transformers' ``configuration_cohere2.py``.
"""

from __future__ import annotations

from lcprof.errors import LcprofError
from lcprof.spec.config import common as C
from lcprof.spec.config.families.decoders import finish, kinds_from_layer_types, rope_of
from lcprof.spec.config.family import Family
from lcprof.spec.config.reader import Reader

#: fields of Cohere's own releases that transformers does not read: each must say what transformers
#: hard-codes, or the config is refused naming it
_FIXED = {"order_of_interleaved_layers": "local_attn_first", "position_embedding_type": "rope_gptj",
          "use_gated_activation": True}


def build_cohere2(r: Reader, ctx: dict):
    hidden = r.int("hidden_size")
    n_layers = r.int("num_hidden_layers")
    heads = r.int("num_attention_heads")
    kv = r.int("num_key_value_heads", null=True) or heads
    if hidden % heads:
        raise LcprofError(f"{r.where}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    hd = hidden // heads
    if r.given("head_dim") and r.int("head_dim") != hd:
        raise LcprofError(f"{r.where}: head_dim {r.int('head_dim')}: transformers' Cohere2 uses hidden_size // "
                          f"num_attention_heads = {hd} whatever head_dim says")
    r.touch("head_dim")
    if heads % kv:
        raise LcprofError(f"{r.where}: {heads} query heads are not a multiple of {kv} KV heads")
    for key, want in _FIXED.items():
        if r.has(key) and r.raw(key) != want:
            raise LcprofError(f"{r.where}: {key} {r.raw(key)!r}: transformers' Cohere2 runs {want!r} whatever "
                              "it says")
        r.touch(key)
    if r.has("rotary_pct") and r.float("rotary_pct", gt=0.0, le=1.0) != 1.0:
        raise LcprofError(f"{r.where}: rotary_pct {r.float('rotary_pct')}: transformers' Cohere2 rotates "
                          "the whole head")
    tie = r.bool("tie_word_embeddings")
    if r.has("use_embedding_sharing") and r.bool("use_embedding_sharing") != tie:
        raise LcprofError(f"{r.where}: use_embedding_sharing and tie_word_embeddings disagree")
    r.touch("use_embedding_sharing", "cache_implementation")
    sw = C.window(r, "sliding_window")
    types = C.layer_types(r, n_layers)
    pattern = r.int("sliding_window_pattern", min=1) if r.given("sliding_window_pattern") else None
    if r.given("layer_switch"):  # the original release's name for the pattern, which transformers ignores
        switch = r.int("layer_switch", min=1)
        if pattern is not None and switch != pattern:
            raise LcprofError(f"{r.where}: layer_switch {switch} and sliding_window_pattern {pattern} disagree")
        pattern = pattern or switch
    r.touch("layer_switch", "sliding_window_pattern")
    if types is None:  # Cohere2Config.__post_init__: the pattern, 4 by default
        p = pattern or 4
        types = ["sliding_attention" if (i + 1) % p else "full_attention" for i in range(n_layers)]
    kinds = kinds_from_layer_types(r, types, sliding=sw)
    scale = r.float("logit_scale", gt=0.0)
    max_pos = r.int("max_position_embeddings")
    bias = r.bool("attention_bias")
    notes = ["Global layers have no RoPE; the rotary layout is GPT-J's (adjacent pairs: the same cost).",
             f"Logits times logit_scale {scale:g} (one pass over them)."]
    return finish(r, ctx, kinds=kinds, rope_flags=[k == "sliding" for k, _ in kinds], hidden=hidden, heads=heads,
                  kv=kv, hd=hd, inter=r.int("intermediate_size"), vocab=r.int("vocab_size"), max_pos=max_pos,
                  tie=tie, rope=rope_of(r, hd, max_pos), qkv_bias=bias, o_bias=bias, norms_per_layer=1,
                  parallel_block=True, layer_norm=True, logits_scaling=1.0 / scale,
                  mlp_activation=C.mlp_activation(r), notes=notes)


_COHERE2 = dict(vocab_size=256000, logit_scale=0.0625, num_key_value_heads=None, max_position_embeddings=8192,
                rope_theta=10000.0, rope_scaling=None, attention_bias=False, sliding_window=4096, layer_types=None,
                tie_word_embeddings=True)

FAMILIES = [
    Family("cohere2", "src/transformers/models/cohere2/configuration_cohere2.py", _COHERE2, build_cohere2),
]
