"""Earlier decoders with LayerNorm (weight and bias) and plain GELU MLPs: GPT-NeoX (partial RoPE,
``rotary_pct``) and Falcon (multi-query or grouped KV heads, parallel attention).

Their elementwise traffic is modelled by lcprof's cost model as RMSNorm's (LayerNorm also subtracts
the mean: one more pass per norm); parameters and FLOPs are exact. Defaults: transformers'
``configuration_gpt_neox.py`` and ``configuration_falcon.py``.
"""

from __future__ import annotations

from lcprof.errors import LcprofError
from lcprof.spec.config import common as C
from lcprof.spec.config.family import Family
from lcprof.spec.config.reader import Reader
from lcprof.spec.layers import LayerSpec

_NOTE = "Elementwise traffic is modelled as RMSNorm's (these models use LayerNorm with a bias)."


def _finish(r, ctx, *, hidden, n_layers, heads, kv, hd, inter, rope, max_pos, notes, **fields):
    layers = [LayerSpec() for _ in range(n_layers)]
    return C.make_spec(r, name=ctx["name"], meta=ctx["meta"], layers=layers, notes=ctx["notes"] + notes,
                       model_type=r.model_type, hidden_size=hidden, n_heads=heads, n_kv_heads=kv, head_dim=hd,
                       v_head_dim=hd, intermediate_size=inter, mlp_gated=False, vocab_size=r.int("vocab_size"),
                       max_position_embeddings=max_pos, rope=rope, norm_bias=True, torch_dtype=ctx["dtype"],
                       config=ctx["config"], text_model_of=ctx["wrapper"], **fields)


def build_gpt_neox(r: Reader, ctx: dict):
    """GPT-NeoX / Pythia: fused qkv and dense with attention_bias, MLP with biases, RoPE over
    rotary_pct of each head, two LayerNorms per layer, untied embed_in / embed_out."""
    hidden = r.int("hidden_size")
    n_layers = r.int("num_hidden_layers")
    heads = r.int("num_attention_heads")
    if hidden % heads:
        raise LcprofError(f"{r.where}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    hd = hidden // heads
    max_pos = r.int("max_position_embeddings")
    block = C.rope_block(r)
    if (block is not None and "partial_rotary_factor" in block) or r.given("partial_rotary_factor"):
        pct = C.partial_factor(r, block)  # transformers 5's name for rotary_pct
        if r.given("rotary_pct") and r.float("rotary_pct", gt=0.0, le=1.0) != pct:
            raise LcprofError(f"{r.where}: rotary_pct and partial_rotary_factor disagree")
        r.touch("rotary_pct")
    else:
        pct = r.float("rotary_pct", gt=0.0, le=1.0)
    theta = C.rope_theta(r, block, key="rotary_emb_base")
    r.touch("rope_theta")
    rope = C.read_rope(r, C.rotary_dim_of(hd, pct), theta=theta, block=block, max_pos=max_pos)
    bias = r.bool("attention_bias")
    r.bool("use_parallel_residual")  # parallel or sequential residual: same parameters and FLOPs
    return _finish(r, ctx, hidden=hidden, n_layers=n_layers, heads=heads, kv=heads, hd=hd,
                   inter=r.int("intermediate_size"), rope=rope, max_pos=max_pos, notes=[_NOTE],
                   tie_embeddings=r.bool("tie_word_embeddings"), qkv_bias=bias, o_bias=bias, mlp_bias=True,
                   norms_per_layer=2)


def build_falcon(r: Reader, ctx: dict):
    """Falcon: KV heads = num_kv_heads with new_decoder_architecture, 1 with multi_query, else all
    heads; one LayerNorm per layer for parallel attention (two -- ln_attn, ln_mlp -- with the new
    architecture, or two sequential ones without parallel_attn); MLP width ffn_hidden_size (default
    4 x hidden); ``bias`` on every projection; ALiBi is refused."""
    hidden = r.int("hidden_size")
    n_layers = r.int("num_hidden_layers")
    heads = r.int("num_attention_heads")
    if hidden % heads:
        raise LcprofError(f"{r.where}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    hd = hidden // heads
    if r.bool("alibi"):
        raise LcprofError(f"{r.where}: Falcon with alibi true (ALiBi positions) is not supported by lcprof")
    new_arch = r.bool("new_decoder_architecture")
    mq = r.bool("multi_query")
    parallel = r.bool("parallel_attn")
    if new_arch:
        kv = r.int("num_kv_heads", null=True) or heads
        norms = r.int("num_ln_in_parallel_attn", null=True) or 2
    else:
        r.touch("num_kv_heads", "num_ln_in_parallel_attn")
        kv = 1 if mq else heads
        norms = 1 if parallel else 2
    if heads % kv:
        raise LcprofError(f"{r.where}: {heads} query heads are not a multiple of {kv} KV heads")
    ffn = r.int("ffn_hidden_size", null=True) or 4 * hidden
    max_pos = r.int("max_position_embeddings")
    block = C.rope_block(r)
    rope = C.read_rope(r, hd, theta=C.rope_theta(r, block), block=block, max_pos=max_pos)
    bias = r.bool("bias")
    notes = [_NOTE, f"KV heads: {kv} ({'num_kv_heads' if new_arch else ('multi_query' if mq else 'all heads')})."]
    return _finish(r, ctx, hidden=hidden, n_layers=n_layers, heads=heads, kv=kv, hd=hd, inter=ffn, rope=rope,
                   max_pos=max_pos, notes=notes, tie_embeddings=r.bool("tie_word_embeddings"), qkv_bias=bias,
                   o_bias=bias, mlp_bias=bias, norms_per_layer=norms)


_NEOX = dict(rotary_pct=0.25, rotary_emb_base=10000.0, rope_scaling=None, attention_bias=True,
             use_parallel_residual=True, tie_word_embeddings=False, max_position_embeddings=2048)
_FALCON = dict(vocab_size=65024, num_kv_heads=None, num_ln_in_parallel_attn=None, alibi=False,
               new_decoder_architecture=False, multi_query=True, parallel_attn=True, bias=False,
               max_position_embeddings=2048, rope_theta=10000.0, rope_scaling=None, ffn_hidden_size=None,
               tie_word_embeddings=True)

FAMILIES = [
    Family("gpt_neox", "src/transformers/models/gpt_neox/configuration_gpt_neox.py", _NEOX, build_gpt_neox,
           inert=frozenset({"activation"}),
           required=frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                               "intermediate_size"})),
    Family("falcon", "src/transformers/models/falcon/configuration_falcon.py", _FALCON, build_falcon,
           inert=frozenset({"activation", "apply_residual_connection_post_layernorm"}),
           required=frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads"})),
]

#: model_types lcprof knows and refuses, with the reason (one line each).
REFUSED = {
    "gpt2": "learned absolute position embeddings (GPT-2) are not supported",
    "gpt_bigcode": "learned absolute position embeddings (StarCoder/GPT-BigCode) are not supported",
    "opt": "learned absolute position embeddings (OPT) are not supported",
    "gptj": "GPT-J's parallel block with partial interleaved RoPE is not supported",
    "bloom": "ALiBi positions (BLOOM) are not supported",
    "mpt": "ALiBi positions (MPT) are not supported",
    "RefinedWeb": "the pre-transformers Falcon remote code (model_type RefinedWeb) is not read; use model_type falcon",
    "RefinedWebModel": "the pre-transformers Falcon remote code (model_type RefinedWebModel) is not read; "
                       "use model_type falcon",
    **{mt: "encoder-decoder models are not supported (lcprof prices decoder-only inference)"
       for mt in ("t5", "mt5", "umt5", "bart", "mbart", "pegasus", "marian", "whisper", "led", "longt5",
                  "switch_transformers", "encoder-decoder")},
    **{mt: "encoder-only models are not supported (lcprof prices decoder inference)"
       for mt in ("bert", "roberta", "deberta", "deberta-v2", "distilbert", "electra", "xlm-roberta",
                  "modernbert")},
}
