"""Exact per-op FLOPs (2 FLOPs per multiply-add) against hand arithmetic, and identities.

Tiny specs are built from hand-written config dicts; every expected number is spelled out as the
product it comes from. An op over t tokens mapping d_in -> d_out costs 2 * t * d_in * d_out FLOPs;
QK^T costs 2 * heads * pairs * qk_dim and PV costs 2 * heads * pairs * v_dim.
"""

from __future__ import annotations

import numpy as np
import pytest

from lcprof.cost.model import (activation_bytes, activation_steps, attention_crossover_n, cost, roofline,
                               weight_bytes)
from lcprof.errors import LcprofError
from lcprof.hardware import Hardware
from lcprof.spec import LayerSpec, load_model, param_counts, spec_from_config

from support.hf_configs import llama_config, llama_spec, mla_config


def flops_of(c, key):
    return float(np.asarray(c.flops[key])[0])


def breakdown(c) -> dict:
    return {k: float(np.asarray(v)[0]) for k, v in c.flops.items()}


# ------------------------------------------------------------------------------------------------
# MHA: hidden 64, 4 heads x head_dim 16, 4 KV heads, gated MLP 128, n = 8 (causal pairs 8*9/2 = 36)
# ------------------------------------------------------------------------------------------------

MHA_N8 = {
    "proj/q": 2 * 8 * 64 * (4 * 16),          # 65536
    "proj/kv": 2 * 8 * 64 * (4 * (16 + 16)),  # 131072
    "attn/qk": 2 * 4 * 36 * 16,               # 4608
    "attn/pv": 2 * 4 * 36 * 16,               # 4608
    "proj/o": 2 * 8 * (4 * 16) * 64,          # 65536
    "mlp/gate": 2 * 8 * 64 * 128,             # 131072
    "mlp/up": 2 * 8 * 64 * 128,               # 131072
    "mlp/down": 2 * 8 * 128 * 64,             # 131072
    "misc/elementwise": 0,
}


def test_mha_layer_exact():
    spec = llama_spec()
    got = breakdown(cost(spec, 8, layer=0))
    for k, v in MHA_N8.items():
        assert got[k] == v, k
    assert got["attn/total"] == 4608 + 4608
    # 65536 + 131072 + 4608 + 4608 + 65536 + 3 * 131072 = 664576
    assert got["total"] == 664_576 == sum(MHA_N8.values())


def test_mha_model_and_batch():
    spec = llama_spec()
    assert flops_of(cost(spec, 8), "total") == 2 * 664_576  # two identical layers
    # batch 3 triples everything (3 independent sequences)
    assert flops_of(cost(spec, 8, batch=3, layer=0), "total") == 3 * 664_576


def test_mha_lm_head():
    spec = llama_spec()
    # prefill needs logits for the last position only: 2 * 1 * 64 * 100 = 12800 per sequence
    c = cost(spec, 8, layer=0, lm_head=True)
    assert flops_of(c, "lm_head") == 2 * 64 * 100
    assert flops_of(c, "total") == 664_576 + 12_800
    assert flops_of(cost(spec, 8, layer=0, lm_head=True, batch=2), "lm_head") == 2 * 2 * 64 * 100


def test_gqa_layer_exact():
    spec = llama_spec(kv_heads=2)  # 4 query heads share 2 KV heads
    got = breakdown(cost(spec, 8, layer=0))
    assert got["proj/kv"] == 2 * 8 * 64 * (2 * (16 + 16))  # 65536: half of MHA's
    # attention work is per query head, unchanged by GQA
    assert got["attn/qk"] == 2 * 4 * 36 * 16
    assert got["attn/pv"] == 2 * 4 * 36 * 16
    assert got["total"] == 664_576 - 65_536


def test_mqa_and_head_dim_override():
    # 8 heads of head_dim 32 (q width 256 != hidden 64), 1 KV head
    spec = llama_spec(heads=8, kv_heads=1, head_dim=32)
    got = breakdown(cost(spec, 8, layer=0))
    assert got["proj/q"] == 2 * 8 * 64 * (8 * 32)
    assert got["proj/kv"] == 2 * 8 * 64 * (1 * (32 + 32))
    assert got["attn/qk"] == 2 * 8 * 36 * 32
    assert got["proj/o"] == 2 * 8 * (8 * 32) * 64


def test_sliding_layer_exact():
    spec = llama_spec(sliding_window=3, model_type="mistral")
    assert spec.layers[0] == LayerSpec(attn="sliding", window=3)
    got = breakdown(cost(spec, 8, layer=0))
    # pairs: sum_{i<8} min(i+1, 3) = 1 + 2 + 3*6 = 21
    assert got["attn/qk"] == 2 * 4 * 21 * 16  # 2688
    assert got["attn/pv"] == 2 * 4 * 21 * 16
    # projections and MLP are unaffected by the window
    for k in ("proj/q", "proj/kv", "proj/o", "mlp/gate", "mlp/up", "mlp/down"):
        assert got[k] == MHA_N8[k], k
    # executed: eager runs all 8*8 = 64 pairs per head; tiled 4x4 tiles: q[0..3]: k[0..3] -> 16;
    # q[4..7] (keys 2..7): k[0..3], k[4..7] -> 32; 48 pairs
    eager = breakdown(cost(spec, 8, layer=0, family="eager"))
    tiled = breakdown(cost(spec, 8, layer=0, family="tiled", tile=(4, 4)))
    assert eager["attn/qk"] == 2 * 4 * 64 * 16
    assert tiled["attn/qk"] == 2 * 4 * 48 * 16
    # useful FLOPs of the eager run are still the 21-pair count
    assert float(cost(spec, 8, layer=0, family="eager").useful_flops["attn/qk"][0]) == 2 * 4 * 21 * 16


def test_chunked_and_noncausal_layer_exact():
    spec = llama_spec()
    chunked = LayerSpec(attn="chunked", window=3)
    got = breakdown(cost(spec, 8, layer=chunked))
    # chunks {0,1,2}, {3,4,5}, {6,7}: 6 + 6 + 3 = 15 pairs
    assert got["attn/qk"] == 2 * 4 * 15 * 16
    full = breakdown(cost(spec, 8, layer=0, causal=False))
    assert full["attn/qk"] == 2 * 4 * 64 * 16  # 8 * 8 pairs


# ------------------------------------------------------------------------------------------------
# MLA: hidden 64, 4 heads, kv_lora_rank 32, nope 16, rope 8, v 16 (qk head dim 24, cache 40)
# ------------------------------------------------------------------------------------------------

def test_mla_naive_prefill_exact():
    spec = spec_from_config(mla_config(), name="tiny-mla")
    assert spec.attention_type == "MLA"
    got = breakdown(cost(spec, 8, layer=0))  # prefill defaults to the naive form
    assert got["proj/q"] == 2 * 8 * 64 * (4 * 24)             # 98304
    assert got["proj/kv_a"] == 2 * 8 * 64 * (32 + 8)          # 40960: latent + shared rope key
    assert got["proj/kv_b"] == 2 * 8 * 32 * (4 * (16 + 16))   # 65536: latent -> K_nope, V
    assert got["attn/qk"] == 2 * 4 * 36 * 24                  # 6912
    assert got["attn/pv"] == 2 * 4 * 36 * 16                  # 4608
    assert got["proj/o"] == 2 * 8 * (4 * 16) * 64             # 65536
    assert got["mlp/up"] == 2 * 8 * 64 * 128
    # 98304 + 40960 + 65536 + 6912 + 4608 + 65536 + 3 * 131072 = 675072
    assert got["total"] == 675_072


def test_mla_q_lora():
    spec = spec_from_config(mla_config(q_lora_rank=24), name="tiny-mla-q")
    got = breakdown(cost(spec, 8, layer=0))
    # hidden -> q rank 24 -> 4 heads x 24
    assert got["proj/q"] == 2 * 8 * 64 * 24 + 2 * 8 * 24 * (4 * 24)  # 24576 + 36864


def test_mla_absorbed_decode_exact():
    spec = spec_from_config(mla_config(), name="tiny-mla")
    # decode one token with 10 cached -> 11 keys, 11 pairs per head; default form: absorbed
    got = breakdown(cost(spec, 10, phase="decode", layer=0))
    assert got["proj/q"] == 2 * 1 * 64 * 96                   # 12288
    assert got["proj/kv_a"] == 2 * 1 * 64 * 40                # 5120
    assert got["proj/q_absorb"] == 2 * (1 * 4) * 16 * 32      # 4096: q_nope -> latent, per head
    assert got["attn/qk"] == 2 * 4 * 11 * (32 + 8)            # 3520: over latent + rope dims
    assert got["attn/pv"] == 2 * 4 * 11 * 32                  # 2816: over the latent
    assert got["proj/v_unabsorb"] == 2 * (1 * 4) * 32 * 16    # 4096: latent -> v, per head
    assert got["proj/o"] == 2 * 1 * 64 * 64                   # 8192
    assert "proj/kv_b" not in got
    # 12288 + 5120 + 4096 + 3520 + 2816 + 4096 + 8192 + 3 * 2*64*128 = 89280
    assert got["total"] == 89_280


def test_mla_naive_decode_and_forms_agree_on_shared_ops():
    spec = spec_from_config(mla_config(), name="tiny-mla")
    naive = breakdown(cost(spec, 10, phase="decode", layer=0, mla_form="naive"))
    # naive decode decompresses all 11 keys: 2 * 11 * 32 * 128 = 90112
    assert naive["proj/kv_b"] == 2 * 11 * 32 * (4 * (16 + 16))
    assert naive["attn/qk"] == 2 * 4 * 11 * 24
    assert naive["attn/pv"] == 2 * 4 * 11 * 16
    absorbed = breakdown(cost(spec, 10, phase="decode", layer=0, mla_form="absorbed"))
    for k in ("proj/q", "proj/kv_a", "proj/o", "mlp/gate", "mlp/up", "mlp/down"):
        assert naive[k] == absorbed[k], k
    # absorbed prefill also possible on request: q_absorb over 8 tokens x 4 heads
    ab_pre = breakdown(cost(spec, 8, layer=0, mla_form="absorbed"))
    assert ab_pre["proj/q_absorb"] == 2 * (8 * 4) * 16 * 32
    assert ab_pre["attn/qk"] == 2 * 4 * 36 * 40


# ------------------------------------------------------------------------------------------------
# MoE (DeepSeekMoE layout, model_type deepseek: Llama attention, DeepSeek MoE): layer 0 dense (128), layer 1 MoE: 8 routed experts (top-2) of width 32
# plus 1 shared expert of width 32
# ------------------------------------------------------------------------------------------------

def moe_spec():
    cfg = llama_config(model_type="deepseek", n_routed_experts=8, num_experts_per_tok=2,
                       n_shared_experts=1, moe_intermediate_size=32, first_k_dense_replace=1)
    return spec_from_config(cfg, name="tiny-moe")


def test_moe_layer_exact():
    spec = moe_spec()
    assert [layer.moe for layer in spec.layers] == [False, True]
    dense = breakdown(cost(spec, 8, layer=0))
    assert dense["mlp/gate"] == 2 * 8 * 64 * 128
    moe = breakdown(cost(spec, 8, layer=1))
    assert moe["mlp/router"] == 2 * 8 * 64 * 8                    # 8192
    assert moe["mlp/experts"] == 3 * 2 * (8 * 2) * 64 * 32        # 196608: 16 token-expert visits
    assert moe["mlp/shared"] == 3 * 2 * 8 * 64 * (1 * 32)         # 98304
    assert "mlp/up" not in moe
    attn_proj = sum(MHA_N8[k] for k in ("proj/q", "proj/kv", "attn/qk", "attn/pv", "proj/o"))
    assert moe["total"] == attn_proj + 8192 + 196608 + 98304
    # active FLOPs do not depend on the number of experts that are not picked
    cfg64 = llama_config(model_type="deepseek", n_routed_experts=64, num_experts_per_tok=2,
                         n_shared_experts=1, moe_intermediate_size=32, first_k_dense_replace=1)
    moe64 = breakdown(cost(spec_from_config(cfg64, name="m64"), 8, layer=1))
    assert moe64["mlp/experts"] == moe["mlp/experts"]
    assert moe64["mlp/router"] == 2 * 8 * 64 * 64


# ------------------------------------------------------------------------------------------------
# Identities
# ------------------------------------------------------------------------------------------------

IDENTITY_SPECS = {
    "mha": lambda: llama_spec(),
    "gqa-sliding": lambda: llama_spec(kv_heads=2, sliding_window=5, model_type="mistral"),
    "moe": moe_spec,
    "chunked": lambda: llama_spec(layers=4, attention_chunk_size=6),  # layers 0-2 chunked, 3 global
    "gemma2-9b": lambda: load_model("gemma2-9b"),
}


@pytest.mark.parametrize("name", list(IDENTITY_SPECS))
def test_prefix_equals_difference_of_prefills(name):
    # Causal masks: pairs(a+b) - pairs(a) == pairs of b new tokens after prefix a, and every linear
    # op is linear in the new tokens, so the FLOP breakdowns must agree op by op.
    spec = IDENTITY_SPECS[name]()
    for a, b in ((1, 1), (3, 5), (7, 13), (64, 100), (5000, 3000)):
        whole = cost(spec, a + b)
        first = cost(spec, a)
        rest = cost(spec, b, prefix=a)
        for k in rest.flops:
            assert float(rest.flops[k][0]) == pytest.approx(
                float(whole.flops[k][0] - first.flops[k][0]), rel=1e-12, abs=0), (name, a, b, k)


def test_prefix_identity_mla_attention_ops():
    # MLA (naive) decompresses every cached latent again, so proj/kv_b is not additive; the
    # attention ops are.
    spec = spec_from_config(mla_config(), name="tiny-mla")
    for a, b in ((3, 5), (64, 100)):
        whole = cost(spec, a + b, layer=0)
        first = cost(spec, a, layer=0)
        rest = cost(spec, b, prefix=a, layer=0)
        for k in ("attn/qk", "attn/pv", "proj/q", "proj/kv_a", "proj/o"):
            assert float(rest.flops[k][0]) == float(whole.flops[k][0] - first.flops[k][0]), k
        # kv_b: b new + a cached latents decompressed = 2 * (a + b) * 32 * 128
        assert float(rest.flops["proj/kv_b"][0]) == 2 * (a + b) * 32 * 128


@pytest.mark.parametrize("name", ["mha", "gqa-sliding", "moe", "chunked", "gemma2-9b", "mla"])
def test_decode_equals_one_token_prefill_after_prefix(name):
    spec = (spec_from_config(mla_config(), name="tiny-mla") if name == "mla"
            else IDENTITY_SPECS[name]())
    ns = np.array([1, 7, 100, 4096, 40000])
    dec = cost(spec, ns, phase="decode")
    for i, n in enumerate(ns):
        # MLA: decode defaults to the weight-absorbed form, so compare with an absorbed prefill.
        form = "absorbed" if name == "mla" else None
        pre = cost(spec, 1, prefix=int(n), phase="prefill", mla_form=form)
        assert set(pre.flops) == set(dec.flops)
        for k in pre.flops:
            assert float(dec.flops[k][i]) == float(pre.flops[k][0]), (name, n, k)
            assert float(dec.bytes[k][i]) == float(pre.bytes[k][0]), (name, n, k)


@pytest.mark.parametrize("preset", ["gemma2-9b", "llama4-scout", "deepseek-v2-lite", "mistral-7b"])
def test_model_total_equals_sum_over_layers(preset):
    spec = load_model(preset)
    ns = np.array([1000, 8192, 50000])
    for family in ("useful", "eager", "tiled"):
        whole = cost(spec, ns, family=family)
        per_layer = [cost(spec, ns, family=family, layer=i) for i in range(spec.n_layers)]
        for k in whole.flops:
            total = sum(np.asarray(c.flops.get(k, 0.0)) for c in per_layer)
            np.testing.assert_allclose(whole.flops[k], total, rtol=1e-12, err_msg=f"{preset} {family} {k}")
            total_b = sum(np.asarray(c.bytes.get(k, 0.0)) for c in per_layer)
            np.testing.assert_allclose(whole.bytes[k], total_b, rtol=1e-12, err_msg=f"{preset} {family} {k}")


def test_total_is_sum_of_ops():
    spec = load_model("deepseek-v2-lite")
    c = cost(spec, 4096, lm_head=True)
    ops = {k: v for k, v in c.flops.items() if k not in ("total", "attn/total")}
    assert float(c.flops["total"][0]) == pytest.approx(float(sum(ops.values())[0]), rel=1e-12)
    assert float(c.flops["attn/total"][0]) == float(c.flops["attn/qk"][0] + c.flops["attn/pv"][0])


# ------------------------------------------------------------------------------------------------
# Independent cross-check (nanoGPT transformer_sizing style)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["llama3-8b", "llama2-7b", "llama3-70b"])
def test_dense_forward_matches_2N_plus_attention(preset):
    # Forward FLOPs of a dense, bias-free decoder = 2 * n * (matmul parameters of the layers)
    #   + per layer QK^T and PV: 2 * H * hd * pairs each, pairs = n(n+1)/2 (causal).
    # The matmul parameters are the non-embedding parameters minus the norm weights.
    spec = load_model(preset)
    pc = param_counts(spec)
    non_embedding = pc["total_params"] - pc["embedding_params"] - pc["lm_head_params"]
    matmul_params = non_embedding - pc["norm_params"]
    H, hd, L = spec.n_heads, spec.head_dim, spec.n_layers
    for n in (1, 512, 8192, 131072):
        pairs = n * (n + 1) // 2
        attention = L * (2 * H * hd * pairs + 2 * H * hd * pairs)
        expect = 2 * n * matmul_params + attention
        got = float(cost(spec, n).flops["total"][0])
        assert got == pytest.approx(expect, rel=1e-12), (preset, n)
        # the textbook form with all non-embedding parameters is within 1e-4 (norms are tiny)
        assert got == pytest.approx(2 * n * non_embedding + attention, rel=1e-4)
        # with the lm_head on the last position: + 2 * hidden * vocab
        got_head = float(cost(spec, n, lm_head=True).flops["total"][0])
        assert got_head == pytest.approx(expect + 2 * spec.hidden_size * spec.vocab_size, rel=1e-12)


def test_llama3_8b_matmul_params_by_hand():
    # per layer: q 4096*4096 + k,v 2*4096*1024 + o 4096*4096 + MLP 3*4096*14336
    #   = 16777216 + 8388608 + 16777216 + 176160768 = 218103808; x 32 layers = 6979321856
    spec = load_model("llama3-8b")
    per_token_per_layer = 2 * 218_103_808
    assert float(cost(spec, 1, layer=0).flops["total"][0]) == per_token_per_layer + 2 * 32 * 128 * 2
    pc = param_counts(spec)
    assert pc["attention_params"] + pc["mlp_params"] == 32 * 218_103_808


# ------------------------------------------------------------------------------------------------
# Crossover n*, roofline, weights, activations
# ------------------------------------------------------------------------------------------------

def test_attention_crossover_hand_values():
    # tiny MHA: linear FLOPs per layer = 2n(4096 + 8192 + 4096 + 3*8192) = 81920 n;
    # attention = 2 * 2 * 4 * 16 * n(n+1)/2 = 128 n(n+1); equal when n + 1 = 640 -> n* = 639
    assert attention_crossover_n(llama_spec()) == 639
    assert attention_crossover_n(llama_spec(), layer=0) == 639
    # llama3-8b: linear 2 * 218103808 = 436207616 per token per layer; attention 4*32*128*(n+1)/2
    #   = 8192 (n+1) per token; 436207616 / 8192 = 53248 -> n* = 53247
    assert attention_crossover_n(load_model("llama3-8b")) == 53247
    # phi3-mini: linear 2 * 3072 * (3072 + 6144 + 3072 + 3*8192) = 226492416; attention 6144 (n+1)
    #   -> n + 1 = 36864 -> n* = 36863
    assert attention_crossover_n(load_model("phi3-128k")) == 36863
    # mistral: every layer sliding 4096, attention per token <= 4*32*128*4096 = 67108864 < linear
    assert attention_crossover_n(load_model("mistral-7b")) is None


def test_roofline_is_max_of_compute_and_memory():
    hw = Hardware(key="toy", name="toy", peak_flops_per_s={"bf16": 1e12}, hbm_bytes_per_s=1e9,
                  memory_bytes=1 << 30)
    spec = llama_spec()
    c = cost(spec, 8, layer=0)
    rl = roofline(c, hw)
    for k in c.flops:
        if k in ("total", "attn/total"):
            continue
        expect = max(float(c.flops[k][0]) / 1e12, float(c.bytes[k][0]) / 1e9)
        assert float(rl[k][0]) == pytest.approx(expect, rel=1e-15), k
    # proj/q in bf16: 65536 FLOPs / 1e12 vs bytes 2 * (64*64 + 8*64 + 8*64) = 10240 / 1e9 -> memory
    assert float(c.bytes["proj/q"][0]) == 2 * (64 * 64 + 8 * 64 + 8 * 64)
    assert float(rl["proj/q"][0]) == pytest.approx(10240 / 1e9)
    parts = [float(v[0]) for k, v in rl.items() if k not in ("total", "attn/total")]
    assert float(rl["total"][0]) == pytest.approx(sum(parts), rel=1e-12)


def test_weight_bytes():
    # llama3-8b bf16 on one GPU: 2 bytes * 8030261248 params
    assert weight_bytes(load_model("llama3-8b"), "bf16") == 2 * 8_030_261_248
    assert weight_bytes(load_model("llama3-8b"), "fp8") == 8_030_261_248
    # tiny MHA, TP 2: every matrix split, norms (2 layers * 2 * 64 + 64 = 320) replicated
    spec = llama_spec()
    total = param_counts(spec)["total_params"]
    assert weight_bytes(spec, "bf16", tp=2) == 2 * ((total - 320) / 2 + 320)


def test_activation_bytes_hand_values():
    # tiny MHA (h 64, 4 heads x 16, inter 128, full rotary), bf16 (s = 2 B), n = 1024, batch 1.
    # Per token: cos/sin tables 2*2*16 = 64; input norm 64 + 128 + 64*(2*2 + 8) = 960;
    # x, normed x, q, k, v: 64 + 256 + 2*(64 + 128) = 704; RoPE on q +3*128 = 1088, on k
    # +128 (rotated q) +3*128 = 1216; kernel +128 +16 (LSE) = 848; o_proj +128 +128 = 960;
    # MLP norm 64 + 256 + 768 = 1088; gated MLP 64 + 3*128 + 3*2*128 = 1216; residual 64 + 512.
    # Tiled peak: 1216 B/token. Eager: the softmax step adds (2 + 8) B x 4 heads x n^2 pairs
    # (bf16 scores, their fp32 copy, fp32 probabilities) and the resident 1-byte mask n^2.
    spec = llama_spec()
    tiled = int(activation_bytes(spec, 1024, family="tiled")[0])
    eager = int(activation_bytes(spec, 1024, family="eager")[0])
    assert tiled == 1216 * 1024 == 1_245_184
    assert eager == 704 * 1024 + 10 * 4 * 1024 ** 2 + 1024 ** 2 == 43_712_512
    steps = activation_steps(spec, 1024, family="tiled")
    assert int(steps["attn/rope_k"][0]) == int(steps["mlp/act"][0]) == 1216 * 1024
    assert int(steps["attn/input_norm"][0]) == 960 * 1024
    # fp32: no upcast copies; softmax in place of dtype: scores + probabilities 2 x 4 B per pair
    tiled32 = activation_steps(spec, 1024, family="tiled", dtype="fp32")
    assert int(tiled32["attn/input_norm"][0]) == 1024 * (2 * 4 * 16 + 256 + 2 * 4 * 64)
    assert int(tiled32["mlp/act"][0]) == 1024 * (128 + 3 * 256 + 3 * 4 * 128)


def test_mla_vectorized_n_matches_scalar():
    # cost() is vectorized over n: the entry for n=1 must not depend on which other n are asked
    # for in the same call (`lcprof flops --n 1` and `--n 1,8` must agree on the n=1 row).
    spec = spec_from_config(mla_config(), name="tiny-mla")
    alone = breakdown(cost(spec, 1, layer=0))
    together = cost(spec, [1, 8], layer=0)
    assert float(together.flops["total"][0]) == alone["total"]
    assert float(together.flops["total"][1]) == breakdown(cost(spec, 8, layer=0))["total"]


def test_fused_elementwise_bytes_by_hand_llama3_8b():
    # per token, bf16: residual add + RMSNorm twice (read x and residual, write both: 4h each),
    # rotary in place on q (32 heads) and k (8 heads) x 128 dims (read + write), new K/V written to
    # the cache (2 x 8 x 256), SiLU-and-mul (read gate and up, write the product: 3 x 14336)
    spec = load_model("llama3-8b")
    per_token = 2 * (2 * 4 * 4096 + 2 * (32 + 8) * 128 + 2 * 8 * 256 + 3 * 14336)
    assert per_token == 180_224
    c = cost(spec, [4096, 8192], layer=0, family="tiled", elementwise="fused")
    np.testing.assert_array_equal(c.bytes["misc/elementwise"], [4096 * per_token, 8192 * per_token])
    unfused = cost(spec, [4096, 8192], layer=0, family="tiled")
    assert np.all(unfused.bytes["misc/elementwise"] > 3 * c.bytes["misc/elementwise"])
    with pytest.raises(LcprofError, match="elementwise"):
        cost(spec, 4096, elementwise="tiled")


def test_eager_attention_passes_are_summed_not_hidden_under_the_matmuls():
    # The roofline takes max(FLOPs / peak, bytes / bandwidth) per op; eager's passes over the scores
    # are their own op, so a compute-bound QK^T no longer hides them.
    spec = llama_spec()
    hw = Hardware(key="toy", name="toy", peak_flops_per_s={"bf16": 1e12}, hbm_bytes_per_s=1e9,
                  memory_bytes=1 << 34)
    c = cost(spec, 1024, layer=0, family="eager")
    rl = roofline(c, hw)
    assert float(rl["attn/total"][0]) == pytest.approx(
        float(rl["attn/qk"][0] + rl["attn/elementwise"][0] + rl["attn/pv"][0]))
    # bf16, 4 heads, n = 1024 causal: scale 4 B + mask 4 B + softmax (2 + 4) + 8 + (4 + 2) B per pair,
    # the mask inverted and read (3 B per pair, once), the output transposed back (2 x 2 B x n x 64)
    pairs = 4 * 1024 * 1024
    want = pairs * (4 + 4 + 20) + 3 * 1024 * 1024 + 2 * 2 * 1024 * 64
    assert float(c.bytes["attn/elementwise"][0]) == want
