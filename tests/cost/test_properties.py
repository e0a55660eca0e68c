"""Property tests over random VALID specs, each built by ``spec_from_config`` from a random dict.

Validity by construction: query heads = KV heads x group, windows and chunks positive, MLA latent
no wider than the decompressed per-head K_nope + V it replaces (what compression means).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcprof.cost import masks
from lcprof.cost.model import activation_bytes, cost, kv_bytes, kv_bytes_per_token
from lcprof.spec import LayerSpec, spec_from_config

from support.hf_configs import llama_config, mla_config

SETTINGS = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

LAYER_TYPE = st.sampled_from(["full_attention", "sliding_attention", "chunked_attention"])


@st.composite
def dense_configs(draw, kv_heads=None, layer_types=None):
    kvh = draw(st.sampled_from([1, 2, 4])) if kv_heads is None else kv_heads
    group = draw(st.sampled_from([1, 2, 4]))
    n_layers = draw(st.integers(1, 4))
    kinds = layer_types or [draw(LAYER_TYPE) for _ in range(n_layers)]
    cfg = llama_config(
        hidden=draw(st.sampled_from([32, 64, 96, 128])),
        layers=len(kinds),
        heads=kvh * group,
        kv_heads=kvh,
        head_dim=draw(st.sampled_from([8, 16, 32])),
        inter=draw(st.integers(16, 256)),
        vocab=draw(st.integers(50, 1000)),
        sliding_window=draw(st.integers(1, 300)),
        attention_chunk_size=draw(st.integers(1, 300)),
        layer_types=kinds,
    )
    return cfg


@st.composite
def mla_configs(draw):
    heads = draw(st.sampled_from([1, 2, 4, 8]))
    nope = draw(st.sampled_from([8, 16, 32]))
    v = draw(st.sampled_from([8, 16, 32]))
    rank = draw(st.integers(1, heads * (nope + v)))  # latent no wider than what it compresses
    return mla_config(
        hidden=draw(st.sampled_from([32, 64, 128])),
        layers=draw(st.integers(1, 3)),
        heads=heads,
        q_lora_rank=draw(st.sampled_from([None, 16, 48])),
        kv_lora_rank=rank,
        nope=nope,
        rope=draw(st.sampled_from([2, 8, 16])),
        v=v,
        inter=draw(st.integers(16, 256)),
    )


N_LIST = st.lists(st.integers(1, 5000), min_size=1, max_size=6)


def total(c, useful=False):
    return np.asarray(c.useful_flops["total"] if useful else c.flops["total"])


# ------------------------------------------------------------------------------------------------
# GQA <= MHA
# ------------------------------------------------------------------------------------------------

@SETTINGS
@given(cfg=dense_configs(), ns=N_LIST, batch=st.integers(1, 3))
def test_gqa_not_more_than_mha(cfg, ns, batch):
    gqa = spec_from_config(cfg, name="gqa")
    mha = spec_from_config({**cfg, "num_key_value_heads": cfg["num_attention_heads"]}, name="mha")
    assert mha.n_kv_heads == mha.n_heads
    assert np.all(kv_bytes(gqa, ns, batch=batch) <= kv_bytes(mha, ns, batch=batch))
    assert kv_bytes_per_token(gqa) * (gqa.n_heads // gqa.n_kv_heads) == kv_bytes_per_token(mha)
    for fam in ("useful", "eager", "tiled"):
        fg = total(cost(gqa, ns, batch=batch, family=fam))
        fm = total(cost(mha, ns, batch=batch, family=fam))
        assert np.all(fg <= fm)
        if gqa.n_kv_heads < gqa.n_heads:
            assert np.all(fg < fm)  # the K/V projections are strictly narrower


# ------------------------------------------------------------------------------------------------
# window <= causal <= full
# ------------------------------------------------------------------------------------------------

@SETTINGS
@given(n=st.integers(1, 10**6), p=st.integers(0, 10**5), w=st.integers(1, 10**5))
def test_mask_order_pairs(n, p, w):
    full = masks.attended_pairs("full", n, p)
    causal = masks.attended_pairs("global", n, p)
    sliding = masks.attended_pairs("sliding", n, p, w)
    chunked = masks.attended_pairs("chunked", n, p, w)
    assert sliding <= causal <= full
    assert chunked <= causal
    # a chunk of C keeps at most C keys per query, so chunked <= sliding with the same W
    assert chunked <= sliding
    # sliding never attends more than n * W pairs, and at least n (itself)
    assert n <= sliding <= n * w


@SETTINGS
@given(cfg=dense_configs(layer_types=["full_attention"]), ns=N_LIST, w=st.integers(1, 6000),
       p=st.integers(0, 3000))
def test_mask_order_flops(cfg, ns, w, p):
    spec = spec_from_config(cfg, name="x")
    ns = np.asarray(ns)
    f_full = total(cost(spec, ns, prefix=p, causal=False))
    f_causal = total(cost(spec, ns, prefix=p))
    f_slide = total(cost(spec, ns, prefix=p, layer=LayerSpec(attn="sliding", window=w)))
    f_chunk = total(cost(spec, ns, prefix=p, layer=LayerSpec(attn="chunked", window=w)))
    # single layer vs model: compare per layer
    f_full_l = total(cost(spec, ns, prefix=p, causal=False, layer=0))
    f_causal_l = total(cost(spec, ns, prefix=p, layer=0))
    assert np.all(f_slide <= f_causal_l) and np.all(f_chunk <= f_causal_l)
    assert np.all(f_causal_l <= f_full_l)
    assert np.all(f_causal <= f_full)


# ------------------------------------------------------------------------------------------------
# monotone in n
# ------------------------------------------------------------------------------------------------

SORTED_NS = st.lists(st.integers(1, 20000), min_size=2, max_size=8, unique=True).map(sorted)


@SETTINGS
@given(cfg=dense_configs(), ns=SORTED_NS, p=st.integers(0, 2000))
def test_monotone_in_n(cfg, ns, p):
    spec = spec_from_config(cfg, name="x")
    ns = np.asarray(ns)
    for layer in spec.layers:
        pairs = masks.attended_pairs(layer.attn, ns, p, layer.window)
        assert np.all(np.diff(pairs) >= 0)
    for fam in ("useful", "eager", "tiled"):
        f = total(cost(spec, ns, prefix=p, family=fam))
        assert np.all(np.diff(f) >= 0), fam
    # Decode: one query at position n. A chunked layer's query starts a fresh chunk at every
    # multiple of C, so its useful work legitimately drops there (test_masks hand values); with a
    # window, executed tiles are re-aligned as the query moves. Check what must be monotone.
    if not any(layer.attn == "chunked" for layer in spec.layers):
        for fam in ("useful", "eager"):
            fd = total(cost(spec, ns, phase="decode", family=fam))
            assert np.all(np.diff(fd) >= 0), fam
    else:
        fd = total(cost(spec, ns, phase="decode", family="eager"))
        assert np.all(np.diff(fd) >= 0)
    if all(layer.attn == "global" for layer in spec.layers):
        fd = total(cost(spec, ns, phase="decode", family="tiled"))
        assert np.all(np.diff(fd) >= 0)


@SETTINGS
@given(cfg=dense_configs(), ns=SORTED_NS, batch=st.integers(1, 4))
def test_kv_bytes_monotone_in_n(cfg, ns, batch):
    # The KV cache a sequence needs never shrinks as it grows: reaching context n+1 means holding
    # what context n held. (Sliding: min(n, W); chunked: a server holds the current chunk, and
    # at n = C it held C tokens, so the cache at n > C cannot be sized below what n = C needed.)
    spec = spec_from_config(cfg, name="x")
    kv = kv_bytes(spec, ns, batch=batch)
    assert np.all(np.diff(kv) >= 0), (spec.layer_kinds, ns, kv.tolist())


# ------------------------------------------------------------------------------------------------
# causal / full = (n + 1) / (2n) exactly
# ------------------------------------------------------------------------------------------------

@SETTINGS
@given(n=st.integers(1, 10**7))
def test_causal_is_half_of_full(n):
    causal = float(masks.attended_pairs("global", n))
    full = float(masks.attended_pairs("full", n))
    # both are exact integers in float64 here; the ratio is (n+1)/(2n)
    assert causal * 2 * n == full * (n + 1)


@SETTINGS
@given(cfg=dense_configs(layer_types=["full_attention"]), n=st.integers(1, 10**6))
def test_causal_attention_flops_half_of_full(cfg, n):
    spec = spec_from_config(cfg, name="x")
    causal = float(cost(spec, n).flops["attn/total"][0])
    full = float(cost(spec, n, causal=False).flops["attn/total"][0])
    assert causal * 2 * n == pytest.approx(full * (n + 1), rel=1e-14)


# ------------------------------------------------------------------------------------------------
# MLA KV <= MHA KV of the same heads
# ------------------------------------------------------------------------------------------------

@SETTINGS
@given(cfg=mla_configs(), ns=N_LIST, dtype=st.sampled_from(["bf16", "fp8", "fp32"]))
def test_mla_kv_not_more_than_mha(cfg, ns, dtype):
    mla = spec_from_config(cfg, name="mla")
    # the same heads, keys and values cached per head: (nope + rope) + v per head
    mha = dataclasses.replace(mla, mla=None, name="mha")
    assert mha.n_kv_heads == mha.n_heads == cfg["num_attention_heads"]
    s = {"bf16": 2, "fp8": 1, "fp32": 4}[dtype]
    per_layer_mla = (cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]) * s
    per_layer_mha = cfg["num_attention_heads"] * (
        cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"] + cfg["v_head_dim"]) * s
    assert kv_bytes_per_token(mla, dtype) == cfg["num_hidden_layers"] * per_layer_mla
    assert kv_bytes_per_token(mha, dtype) == cfg["num_hidden_layers"] * per_layer_mha
    assert np.all(kv_bytes(mla, ns, kv_dtype=dtype) <= kv_bytes(mha, ns, kv_dtype=dtype))


# ------------------------------------------------------------------------------------------------
# executed >= useful; tiled <= eager
# ------------------------------------------------------------------------------------------------

@SETTINGS
@given(cfg=dense_configs(), ns=st.lists(st.integers(1, 3000), min_size=1, max_size=4),
       p=st.integers(0, 1000), bq=st.integers(1, 256), bk=st.integers(1, 256),
       phase=st.sampled_from(["prefill", "decode"]))
def test_executed_at_least_useful(cfg, ns, p, bq, bk, phase):
    spec = spec_from_config(cfg, name="x")
    kw = dict(prefix=p, phase=phase, tile=(bq, bk))
    useful = cost(spec, ns, family="useful", **kw)
    eager = cost(spec, ns, family="eager", **kw)
    tiled = cost(spec, ns, family="tiled", **kw)
    for k in useful.flops:
        u = np.asarray(useful.flops[k])
        # every family reports the same useful FLOPs
        np.testing.assert_array_equal(np.asarray(eager.useful_flops[k]), u)
        np.testing.assert_array_equal(np.asarray(tiled.useful_flops[k]), u)
        assert np.all(np.asarray(eager.flops[k]) >= u), k
        assert np.all(np.asarray(tiled.flops[k]) >= u), k
        assert np.all(np.asarray(tiled.flops[k]) <= np.asarray(eager.flops[k])), k


@SETTINGS
@given(kind=st.sampled_from(["full", "global", "sliding", "chunked"]), n=st.integers(1, 600),
       p=st.integers(0, 300), w=st.integers(1, 400), bq=st.integers(1, 200), bk=st.integers(1, 200))
def test_tiled_pairs_between_useful_and_eager(kind, n, p, w, bq, bk):
    useful = masks.attended_pairs(kind, n, p, w)
    tiled = masks.executed_pairs_tiled(kind, n, p, w, tile=(bq, bk))
    eager = masks.executed_pairs_eager(n, p)
    assert useful <= tiled <= eager


# ------------------------------------------------------------------------------------------------
# vectorization: an element's cost does not depend on the other elements of n
# ------------------------------------------------------------------------------------------------

@SETTINGS
@given(cfg=st.one_of(dense_configs(), mla_configs()),
       ns=st.lists(st.one_of(st.integers(1, 3), st.integers(1, 3000)), min_size=2, max_size=5))
def test_vectorized_equals_elementwise(cfg, ns):
    spec = spec_from_config(cfg, name="x")
    for phase in ("prefill", "decode"):
        vec = cost(spec, ns, phase=phase, family="tiled", tile=(16, 32))
        for i, n in enumerate(ns):
            one = cost(spec, n, phase=phase, family="tiled", tile=(16, 32))
            assert float(vec.flops["total"][i]) == float(one.flops["total"][0]), (phase, ns, n)
            assert float(vec.bytes["total"][i]) == float(one.bytes["total"][0]), (phase, ns, n)


# ------------------------------------------------------------------------------------------------
# Activation memory and elementwise traffic
# ------------------------------------------------------------------------------------------------

@SETTINGS
@given(cfg=dense_configs(), ns=SORTED_NS, batch=st.integers(1, 3), dtype=st.sampled_from(["fp32", "bf16"]))
def test_activations_and_traffic_monotone_and_ordered(cfg, ns, batch, dtype):
    spec = spec_from_config(cfg, name="x")
    mha = spec_from_config({**cfg, "num_key_value_heads": cfg["num_attention_heads"]}, name="mha")
    for layer in range(spec.n_layers):
        tiled = activation_bytes(spec, ns, batch=batch, dtype=dtype, family="tiled", layer=layer)
        eager = activation_bytes(spec, ns, batch=batch, dtype=dtype, family="eager", layer=layer)
        assert np.all(np.diff(tiled) > 0) and np.all(np.diff(eager) > 0)  # more tokens, more memory
        assert np.all(tiled <= eager)  # a tiled kernel never holds more than the scores would
        assert np.all(tiled <= activation_bytes(mha, ns, batch=batch, dtype=dtype, family="tiled", layer=layer))
        unfused = cost(spec, ns, batch=batch, dtype=dtype, family="tiled", layer=layer)
        fused = cost(spec, ns, batch=batch, dtype=dtype, family="tiled", layer=layer, elementwise="fused")
        moved = np.asarray(unfused.bytes["misc/elementwise"])
        assert np.all(np.diff(moved) > 0)
        assert np.all(np.asarray(fused.bytes["misc/elementwise"]) < moved)


@SETTINGS
@given(cfg=dense_configs(), n=st.integers(1, 20000), tp=st.sampled_from([1, 2, 4]))
def test_activation_per_tp_rank_between_a_share_and_the_whole(cfg, n, tp):
    spec = spec_from_config(cfg, name="x")
    if spec.n_heads % tp:
        return
    one = float(activation_bytes(spec, n, family="tiled")[0])
    rank = float(activation_bytes(spec, n, family="tiled", tp=tp)[0])
    assert one / tp <= rank <= one


# ------------------------------------------------------------------------------------------------
# What-if masks and linear-time mixers (issue 14)
# ------------------------------------------------------------------------------------------------

from lcprof.cost.kinds import mixer_ops, mixer_state_bytes  # noqa: E402
from lcprof.spec import GatedDeltaNetSpec, KimiDeltaSpec, LightningSpec, Mamba2Spec, MambaSpec  # noqa: E402

MASKS = st.one_of(
    st.builds(masks.Sliding, st.integers(1, 64)),
    st.builds(masks.Chunked, st.integers(1, 64)),
    st.builds(masks.SinksWindow, st.integers(0, 8), st.integers(1, 64)),
    st.builds(masks.Longformer, st.integers(0, 8), st.integers(1, 64)),
    st.builds(masks.TopK, st.integers(1, 64)),
    st.builds(masks.Infini, st.integers(1, 64)),
    st.builds(masks.BigBird, st.integers(1, 8), st.sampled_from([1, 3, 5]), st.integers(0, 2), st.integers(0, 3),
              st.integers(0, 5)),
    st.lists(st.tuples(st.integers(1, 32), st.integers(1, 4)).filter(lambda wr: wr[1] <= wr[0]), min_size=1,
             max_size=3).map(lambda p: masks.Dilated(tuple(p))),
)


@SETTINGS
@given(m=MASKS, n=st.integers(1, 200), p=st.integers(0, 100), heads=st.integers(1, 8),
       tile=st.tuples(st.integers(1, 32), st.integers(1, 32)))
def test_masks_bounded_by_causal_and_tiles(m, n, p, heads, tile):
    useful = float(m.head_pairs(n, p, heads))
    causal = heads * float(masks.attended_pairs("global", n, p))
    patterns = len(m.patterns) if isinstance(m, masks.Dilated) else 1  # each LongNet pattern is its own attention
    assert 0 <= useful <= patterns * causal
    assert float(m.tiled_head_pairs(n, p, heads, tile)) >= useful
    assert float(m.tiled_head_pairs(n, p, heads, (1, 1))) == useful  # 1 x 1 tiles run exactly the useful pairs
    # prefill in two parts == in one (the count is a sum over queries)
    k = n // 2
    assert float(m.head_pairs(k, p, heads)) + float(m.head_pairs(n - k, p + k, heads)) == useful
    kv = float(m.kv_tokens(p + n))
    assert 0 < kv <= p + n
    assert masks.parse_mask(m.text()) == m


MIXERS = st.one_of(
    st.builds(lambda h, H, P, N, G, K, Q: Mamba2Spec(hidden_size=h, n_heads=H * G, head_dim=P, d_state=N, n_groups=G,
                                                   d_conv=K, chunk_size=Q),
              st.integers(8, 64), st.integers(1, 4), st.integers(1, 16), st.integers(1, 16), st.integers(1, 4),
              st.integers(2, 4), st.integers(1, 64)),
    st.builds(lambda h, k, r, dk, dv, K: GatedDeltaNetSpec(hidden_size=h, num_k_heads=k, num_v_heads=k * r,
                                                          head_k_dim=dk, head_v_dim=dv, conv_kernel=K),
              st.integers(8, 64), st.integers(1, 4), st.integers(1, 3), st.integers(1, 32), st.integers(1, 32),
              st.integers(2, 4)),
    st.builds(lambda h, H, d, K: KimiDeltaSpec(hidden_size=h, n_heads=H, head_dim=d, conv_kernel=K),
              st.integers(8, 64), st.integers(1, 8), st.integers(1, 32), st.integers(2, 4)),
    st.builds(lambda h, H, d: LightningSpec(hidden_size=h, n_heads=H, head_dim=d), st.integers(8, 64),
              st.integers(1, 8), st.integers(1, 32)),
    st.builds(lambda h, di, N, K, R: MambaSpec(hidden_size=h, d_inner=di, d_state=N, d_conv=K, dt_rank=R),
              st.integers(8, 64), st.integers(8, 128), st.integers(1, 16), st.integers(2, 4), st.integers(1, 8)),
)


@SETTINGS
@given(m=MIXERS, n=st.integers(2, 5000), p=st.integers(0, 10 ** 6), b=st.integers(1, 4))
def test_mixers_linear_in_n_constant_state(m, n, p, b):
    ops = {o.name: o for o in mixer_ops(m, n, p, batch=b, dtype="bf16")}
    tot = sum(float(o.flops) for o in ops.values())
    assert all(float(o.flops) >= float(o.useful_flops) >= 0 for o in ops.values())
    # the cost does not depend on the prefix folded into the state
    assert tot == sum(float(o.flops) for o in mixer_ops(m, n, 0, batch=b, dtype="bf16"))
    # linear in n over whole chunks (no n^2 term): k chunks cost k times one chunk
    def total(tokens):
        return sum(float(o.flops) for o in mixer_ops(m, tokens, 0, batch=b, dtype="bf16"))

    chunk = {"mamba2": getattr(m, "chunk_size", 0), "gated_deltanet": 64, "kda": 64, "lightning": 256}.get(m.kind)
    if chunk is not None:  # (two chunks, so never the one-token decode form)
        k = n % 7 + 2
        assert total(2 * k * chunk) == k * total(2 * chunk)
    else:  # Mamba's scan: every token costs the same
        assert tot == n * sum(float(o.flops) for o in mixer_ops(m, 1, 0, batch=b, dtype="bf16"))
    # a decode step costs what one token of the projections and the recurrent update cost
    dec = sum(float(o.flops) for o in mixer_ops(m, 1, p, batch=b, dtype="bf16"))
    assert 0 < dec <= tot
    # state: elements of the spec, bf16 (2 B) / fp32 (4 B) for the recurrent part
    el = m.state_elements()
    conv = el.get("conv", 0)
    rec = 4 if m.kind == "kda" else 2  # KDA's recurrent state is float32 whatever is asked (vLLM)
    assert mixer_state_bytes(m, "bf16") == 2 * conv + rec * (sum(el.values()) - conv)
    assert mixer_state_bytes(m, "bf16", state_dtype="fp32") == 2 * conv + 4 * (sum(el.values()) - conv)
