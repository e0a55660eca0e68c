"""Hybrid, state-space, linear and sparse layers on published configs, derived by hand.

Each expected number is written as the product it comes from, from the config fields quoted in the
comment (the configs are the published ones committed under tests/data/configs/, loaded through the
presets). FLOPs count 2 per multiply-add.
"""

from __future__ import annotations

import numpy as np
import pytest

from lcprof.cost import masks
from lcprof.cost.kinds import mixer_state_bytes, per_rank, schedule_summary
from lcprof.cost.model import activation_steps, cost, kv_bytes, kv_bytes_per_token, refuse_state, state_bytes
from lcprof.cost.ops import group_layers, layer_pairs
from lcprof.errors import LcprofError
from lcprof.spec import LayerSpec, load_model, param_counts, spec_from_config

from support.hf_configs import llama_config

GIB = 1 << 30


def flops(c, key):
    return float(np.asarray(c.flops[key])[0])


# ------------------------------------------------------------------------------------------------
# Jamba-1.5-mini: 32 layers, attention every 8th (offset 4), Mamba d_inner 8192, d_state 16, conv 4,
# dt_rank 256, dt/B/C RMSNorms with weights, 8 KV heads x 128
# ------------------------------------------------------------------------------------------------

def test_jamba_seed_002_claim_4_gib_of_kv_at_256k_plus_the_mamba_state():
    spec = load_model("jamba-1.5-mini")
    assert schedule_summary(spec) == "28 Mamba + 4 attention"
    # 4 attention layers x 8 KV heads x 128 x 2 (K, V) x 2 B x 262144 tokens = 4 GiB exactly
    assert kv_bytes(spec, 262144)[0] == 4 * 8 * 128 * 2 * 2 * 262144 == 4 * GIB
    # 28 Mamba layers x d_inner 8192 x (conv 3 + SSM 16) x 2 B (bf16, vLLM's default) = 8,716,288 B
    assert state_bytes(spec) == 28 * 8192 * (3 + 16) * 2 == 8_716_288
    # mamba_ssm_cache_dtype fp32: the SSM part doubles, the conv stays bf16
    assert state_bytes(spec, state_dtype="fp32") == 28 * 8192 * (3 * 2 + 16 * 4)
    # the state does not grow with n
    assert state_bytes(spec, batch=3) == 3 * 8_716_288


def test_jamba_mamba_layer_params_and_flops():
    spec = load_model("jamba-1.5-mini")
    m = spec.mixer("mamba")
    h, di, N, R, K = 4096, 8192, 16, 256, 4
    params = (h * 2 * di + di * K + di + di * (R + 2 * N) + R * di + di + di * N + di + (R + 2 * N) + di * h)
    assert m.params == params
    n = 4096
    c = cost(spec, n, layer=0)  # layer 0 is Mamba + dense MLP
    assert flops(c, "mixer/in_proj") == 2 * n * h * 2 * di
    assert flops(c, "mixer/conv") == 2 * n * di * K
    assert flops(c, "mixer/x_proj") == 2 * n * di * (R + 2 * N)
    assert flops(c, "mixer/dt_proj") == 2 * n * R * di
    # the scan: outer product (dt o x) B^T and read-out S C, 2 x d_inner x N each per token
    assert flops(c, "mixer/state_write") == flops(c, "mixer/state_read") == 2 * n * di * N
    assert flops(c, "mixer/out_proj") == 2 * n * di * h
    assert flops(c, "attn/total") == 0
    mixer_total = 2 * n * (h * 2 * di + di * K + di * (R + 2 * N) + R * di + 2 * di * N + di * h)
    assert flops(c, "mixer/total") == mixer_total
    # decode: the same per token, whatever the context (linear)
    d1 = cost(spec, 1000, layer=0, phase="decode")
    d2 = cost(spec, 1_000_000, layer=0, phase="decode")
    assert flops(d1, "mixer/total") == flops(d2, "mixer/total") == mixer_total / n


# ------------------------------------------------------------------------------------------------
# Qwen3-Next-80B-A3B: 48 layers, full attention every 4th; Gated DeltaNet 16 key heads, 32 value
# heads of 128, conv 4; attention 16 heads, 2 KV heads of 256, output gate; MoE 512 experts, 10 active
# ------------------------------------------------------------------------------------------------

def test_qwen3_next_kv_state_and_deltanet_flops():
    spec = load_model("qwen3-next-80b-a3b")
    assert schedule_summary(spec) == "36 Gated DeltaNet + 12 attention"
    # KV in the 12 attention layers only: 12 x 2 x 2 KV heads x 256 x 2 B = 24,576 B per token
    assert kv_bytes_per_token(spec) == 24_576
    # state per DeltaNet layer: conv (2 x 16 x 128 + 32 x 128) x 3 x 2 B + 32 x 128 x 128 x 2 B
    per_layer = (2 * 16 * 128 + 32 * 128) * 3 * 2 + 32 * 128 * 128 * 2
    assert per_layer == 1_097_728
    assert state_bytes(spec) == 36 * per_layer
    # a DeltaNet layer at n = 4096 (64 chunks of 64): l^2 sums 64 x 64^2 = 262144
    n, Hv, dk, dv, h = 4096, 32, 128, 128, 2048
    c = cost(spec, n, layer=0)
    sq = 64 * 64 * 64
    assert flops(c, "mixer/in_proj_qkvz") == 2 * n * h * (2 * 16 * 128 + 2 * 32 * 128)
    assert flops(c, "mixer/in_proj_ba") == 2 * n * h * 2 * 32
    assert flops(c, "mixer/conv") == 2 * n * (2 * 16 * 128 + 32 * 128) * 4
    assert flops(c, "mixer/kk") == flops(c, "mixer/qk") == 2 * Hv * sq * dk
    assert flops(c, "mixer/solve") == Hv * (dk + dv) * (sq - n)  # sum over chunks of (dk + dv) l (l - 1)
    assert flops(c, "mixer/intra_v") == 2 * Hv * sq * dv
    assert flops(c, "mixer/state_read") == 2 * 2 * n * Hv * dk * dv
    assert flops(c, "mixer/state_write") == 2 * n * Hv * dk * dv
    assert flops(c, "mixer/out_proj") == 2 * n * Hv * dv * h
    # its attention layers: q_proj doubled by the output gate (16 heads x 256 x 2)
    a = cost(spec, n, layer=3)
    assert flops(a, "proj/q") == 2 * n * h * 16 * 256 * 2
    assert flops(a, "attn/qk") == 2 * 16 * (n * (n + 1) // 2) * 256
    # the MoE MLP: router, 10 routed experts of 512, one shared expert of 512 and its gate
    assert flops(a, "mlp/experts") == 3 * 2 * n * 10 * h * 512
    assert flops(a, "mlp/shared") == 3 * 2 * n * h * 512
    assert flops(a, "mlp/shared_gate") == 2 * n * h * 1


def test_qwen3_next_decode_is_constant_in_the_deltanet_layers():
    spec = load_model("qwen3-next-80b-a3b")
    Hv, dk, dv = 32, 128, 128
    for ctx in (4096, 262144):
        d = cost(spec, ctx, layer=0, phase="decode")
        # S^T k, the rank-1 update and S^T q: 6 dk dv per value head
        assert flops(d, "mixer/state_read") + flops(d, "mixer/state_write") == 6 * Hv * dk * dv
        assert flops(d, "mixer/kk") == 0


# ------------------------------------------------------------------------------------------------
# Nemotron-H-56B: 118 blocks (54 Mamba-2 M, 54 MLP -, 10 attention *); Mamba-2 256 heads of 64,
# d_state 256, 8 groups, conv 4, chunk 128, hidden 8192
# ------------------------------------------------------------------------------------------------

def test_nemotron_h_mamba2_state_and_chunked_flops():
    spec = load_model("nemotron-h-56b")
    assert schedule_summary(spec) == "54 Mamba-2 + 54 MLP-only + 10 attention"
    H, P, N, G, K, h = 256, 64, 256, 8, 4, 8192
    conv_dim = H * P + 2 * G * N  # 20480
    per_layer = conv_dim * (K - 1) * 2 + H * P * N * 2  # 122,880 + 8,388,608
    assert state_bytes(spec) == 54 * per_layer == 459_620_352
    n = 4096  # 32 chunks of 128
    m_idx = next(i for i, lyr in enumerate(spec.layers) if lyr.mixers == ("mamba2",))
    c = cost(spec, n, layer=m_idx)
    assert flops(c, "mixer/in_proj") == 2 * n * h * (H * P + conv_dim + H)
    assert flops(c, "mixer/conv") == 2 * n * conv_dim * K
    assert flops(c, "mixer/intra_cb") == 2 * G * N * 32 * 128 ** 2  # C B^T per group, l^2 per chunk
    assert c.useful_flops["mixer/intra_cb"][0] == 2 * G * N * 32 * (128 * 129 // 2)  # causal half
    assert flops(c, "mixer/intra_x") == 2 * H * P * 32 * 128 ** 2
    assert flops(c, "mixer/state_read") == flops(c, "mixer/state_write") == 2 * n * H * P * N
    assert flops(c, "mixer/out_proj") == 2 * n * H * P * h
    assert "mlp/up" not in c.flops  # Mamba-2 blocks have no MLP
    # an MLP-only block: only the MLP (ReLU^2, two matrices of 32768)
    mlp_idx = next(i for i, lyr in enumerate(spec.layers) if not lyr.mixers)
    c2 = cost(spec, n, layer=mlp_idx)
    assert flops(c2, "total") == 2 * 2 * n * h * spec.intermediate_size
    # 10 attention layers hold the KV: 10 x 8 KV heads x 128 x 2 x 2 B per token
    assert kv_bytes_per_token(spec) == 10 * 8 * 128 * 2 * 2


def test_mamba2_state_under_tp_follows_vllm():
    # Nemotron-H-56B at TP 8: 32 heads and 1 group per rank (8 groups split 8 ways)
    m = load_model("nemotron-h-56b").mixer("mamba2")
    conv = (256 * 64 + 2 * 8 * 256) // 8 * 3 * 2
    ssm = 256 // 8 * 64 * 256 * 2
    assert mixer_state_bytes(m, "bf16", tp=8) == conv + ssm
    # a rank's share as a spec of the same kind: heads and groups split, hidden whole
    r = per_rank(m, 8)
    assert (r.n_heads, r.n_groups, r.hidden_size) == (32, 1, 8192)
    with pytest.raises(LcprofError, match="TP=3"):
        mixer_state_bytes(m, "bf16", tp=3)


# ------------------------------------------------------------------------------------------------
# Falcon-H1 (transformers' table row "H1 0.5B"): attention and Mamba-2 in every layer
# ------------------------------------------------------------------------------------------------

FALCON_H1_05B = {"model_type": "falcon_h1", "hidden_size": 1024, "num_hidden_layers": 36,
                 "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 2048,
                 "vocab_size": 32784, "max_position_embeddings": 16384, "mamba_d_ssm": 1536, "mamba_n_heads": 24,
                 "mamba_d_head": 64, "mamba_n_groups": 1, "mamba_d_state": 128, "mamba_d_conv": 4,
                 "mamba_chunk_size": 128, "mamba_rms_norm": False, "mamba_norm_before_gate": False,
                 "rope_theta": 1e11}


def test_falcon_h1_parallel_layer_prices_both_mixers():
    spec = spec_from_config(dict(FALCON_H1_05B), name="falcon-h1-0.5b")
    assert schedule_summary(spec) == "36 attention+Mamba-2"
    n = 2048  # 16 chunks of 128
    c = cost(spec, n, layer=0)
    assert flops(c, "proj/q") == 2 * n * 1024 * 8 * 64
    assert flops(c, "attn/qk") == 2 * 8 * (n * (n + 1) // 2) * 64
    conv_dim = 1536 + 2 * 128
    assert flops(c, "mixer/in_proj") == 2 * n * 1024 * (1536 + conv_dim + 24)
    assert flops(c, "mixer/intra_x") == 2 * 24 * 64 * 16 * 128 ** 2
    # every layer holds KV (2 KV heads x 64) and a Mamba-2 state
    assert kv_bytes_per_token(spec) == 36 * 2 * 64 * 2 * 2
    assert state_bytes(spec) == 36 * (conv_dim * 3 * 2 + 24 * 64 * 128 * 2)
    # activation: the attention output is kept while the Mamba-2 mixer runs on the same normed x
    steps = activation_steps(spec, n, dtype="bf16", layer=0)
    assert "attn/kernel" in steps and "mixer/chunk_cb" in steps


# ------------------------------------------------------------------------------------------------
# MiniMax-M1: 80 layers (70 lightning, 10 softmax), 64 heads of 128, hidden 6144, block 256
# ------------------------------------------------------------------------------------------------

def test_minimax_m1_lightning_state_and_flops():
    spec = load_model("minimax-m1")
    assert schedule_summary(spec) == "70 lightning attention + 10 attention"
    # 70 layers x 64 heads x 128 x 128 x 2 B = 140 MiB of state per request
    assert state_bytes(spec) == 70 * 64 * 128 * 128 * 2 == 140 * (1 << 20)
    H, d, h, n = 64, 128, 6144, 4096  # 16 blocks of 256
    c = cost(spec, n, layer=0)
    assert flops(c, "mixer/qkv_proj") == 2 * n * h * 3 * H * d
    assert flops(c, "mixer/output_gate") == 2 * n * h * H * d
    assert flops(c, "mixer/qk") == flops(c, "mixer/intra_v") == 2 * H * d * 16 * 256 ** 2
    assert flops(c, "mixer/state_read") == flops(c, "mixer/state_write") == 2 * n * H * d * d
    assert flops(c, "mixer/out_proj") == 2 * n * H * d * h
    # KV: 10 softmax layers x 8 KV heads x 128 x 2 x 2 B per token
    assert kv_bytes_per_token(spec) == 10 * 8 * 128 * 2 * 2


# ------------------------------------------------------------------------------------------------
# DeepSeek-V3.2: MLA (128 heads, qk 192, v 128) over the top 2048 keys; indexer 64 heads of 128
# ------------------------------------------------------------------------------------------------

def test_deepseek_v32_sparse_attention_and_indexer():
    spec = load_model("deepseek-v3.2")
    n = 131072
    # sum_{i<n} min(i+1, 2048) = 2048*2049/2 + (131072 - 2048) * 2048 = 266,339,328 per query head
    assert float(layer_pairs(spec, 0, n)) == 266_339_328
    c = cost(spec, n, layer=0)
    assert c.useful_flops["attn/qk"][0] == 2 * 128 * 266_339_328 * 192
    assert c.useful_flops["attn/pv"][0] == 2 * 128 * 266_339_328 * 128
    # the indexer scores every causal pair: 64 dot products of 128 plus the weighted sum over heads
    causal = n * (n + 1) // 2
    assert c.useful_flops["attn/indexer"][0] == 2 * 64 * (128 + 1) * causal
    assert flops(c, "attn/indexer_wq_b") == 2 * n * 1536 * 64 * 128
    # attn/total is the pairwise work: QK^T and PV over the top-k keys, and the indexer over every pair
    assert c.useful_flops["attn/total"][0] == 2 * 128 * 266_339_328 * (192 + 128) + 2 * 64 * (128 + 1) * causal
    # the cache per token and layer: the MLA latent + rope key (576) in bf16, and the indexer's 128-dim key
    # as vLLM keeps it, 128 fp8 bytes + one fp32 scale per 128 values = 132 bytes (deepseek_v2.py, Indexer)
    assert kv_bytes_per_token(spec) == 61 * (576 * 2 + 128 + 4) == 78_324
    assert kv_bytes(spec, n)[0] == 78_324 * n
    # an fp8 KV cache halves the latent only: the indexer cache is fp8 already
    assert kv_bytes_per_token(spec, "fp8") == 61 * (576 + 132)
    # the indexer reads every cached key at 132 bytes, plus its queries and head weights in bf16
    assert c.bytes["attn/indexer"][0] == n * 132 + 2 * n * 64 * (128 + 1)
    # decode at 128k reads 2048 selected latents, not all 131072
    d = cost(spec, n, layer=0, phase="decode")
    assert d.useful_flops["attn/qk"][0] == 2 * 128 * 2048 * 576  # absorbed form: the latent + rope dims


# ------------------------------------------------------------------------------------------------
# What-if masks through the cost model (llama3-8b: 32 layers, 32 heads, 8 KV heads of 128)
# ------------------------------------------------------------------------------------------------

def test_streaming_llm_makes_llama_kv_constant():
    spec = load_model("llama3-8b")
    per_tok = 32 * 8 * 128 * 2 * 2
    for n in (8192, 1 << 20):
        assert kv_bytes(spec, n, mask="sinks:4+window:4092")[0] == per_tok * 4096
    c = cost(spec, 1 << 20, layer=0, mask=masks.SinksWindow(4, 4092))
    # pairs: sum min(i+1, 4092) + the 4 sinks for every query past the window
    w, s, n = 4092, 4, 1 << 20
    pairs = w * (w + 1) // 2 + (n - w) * w + s * (s + 1) // 2 + (n - w - s) * s
    assert c.useful_flops["attn/qk"][0] == 2 * 32 * pairs * 128


def test_infini_attention_memory_is_state():
    spec = load_model("llama3-8b")
    # per layer and KV head: M (128 x 128) and z (128), bf16
    assert state_bytes(spec, mask="infini:segment=2048") == 32 * 8 * (128 * 128 + 128) * 2
    assert kv_bytes(spec, 1 << 20, mask="infini:segment=2048")[0] == 32 * 8 * 128 * 2 * 2 * 2048
    c = cost(spec, 4096, layer=0, mask="infini:segment=2048")
    # retrieval for 32 query heads (2 dk dv + 2 dk per token) and the update for 8 KV heads
    assert flops(c, "attn/memory") == 2 * 4096 * (32 * 128 * 128 + 32 * 128 + 8 * 128 * 128)
    assert c.useful_flops["attn/qk"][0] == 2 * 32 * (2 * 2048 * 2049 // 2) * 128


def test_dilated_mask_counts_per_head_group():
    spec = load_model("llama3-8b")
    m = masks.Dilated(((2048, 1), (4096, 2)))
    n = 8192
    c = cost(spec, n, layer=0, mask=m)
    assert c.useful_flops["attn/qk"][0] == 2 * float(m.head_pairs(n, 0, 32)) * 128
    # pattern (2048, 1): 4 segments of causal 2048; (4096, 2): each head sees 2048 rows per segment
    # attending 1..2048 keys: 32 heads x 2 segments x 2048*2049/2
    expect = 32 * 4 * 2048 * 2049 // 2 + 32 * 2 * 2048 * 2049 // 2
    assert float(m.head_pairs(n, 0, 32)) == expect


# ------------------------------------------------------------------------------------------------
# Byte grouping keyed on the whole layer spec (issue 13)
# ------------------------------------------------------------------------------------------------

def test_grouping_keeps_rope_and_nope_layers_apart():
    spec = spec_from_config(llama_config(layers=2), name="tiny")
    spec = spec.with_layers((LayerSpec(), LayerSpec(rope=False)))
    assert len(group_layers(spec)) == 2
    whole = cost(spec, 512, dtype="bf16")
    per_layer = sum(float(cost(spec, 512, layer=i, dtype="bf16").bytes["total"][0]) for i in range(2))
    assert float(whole.bytes["total"][0]) == per_layer
    # NoPE moves fewer bytes (no RoPE passes, no tables)
    assert cost(spec, 512, layer=1).bytes["misc/elementwise"][0] < cost(spec, 512, layer=0).bytes["misc/elementwise"][0]


def test_planner_refuses_mixer_state_it_does_not_charge():
    with pytest.raises(LcprofError, match="Gated DeltaNet"):
        refuse_state(load_model("qwen3-next-80b-a3b"), "lcprof plan")
    refuse_state(load_model("llama3-8b"), "lcprof plan")  # no state: fine


def test_param_counts_come_from_the_spec_single_source():
    # the mixers' parameters are the spec's: Qwen3-Next's DeltaNet layer
    spec = load_model("qwen3-next-80b-a3b")
    g = spec.mixer("gated_deltanet")
    h = 2048
    assert g.params == (h * (2 * 2048 + 2 * 4096) + h * 64 + (2 * 2048 + 4096) * 4 + 32 + 32 + 128 + 4096 * h)
    assert param_counts(spec)["mixer_params"] == 36 * g.params


def test_falcon_h1_mup_multipliers_are_elementwise_ops():
    # Each muP multiplier is one op in transformers' FalconH1DecoderLayer and vLLM's FalconH1ParallelHybrid,
    # read + write: attention in (h) and out (h), keys (2 KV heads x 64 = 128); Mamba-2 in (h), its
    # in_proj output (P = d_inner + conv_dim + heads = 1536 + 1792 + 24 = 3352) and out (h); the MLP's
    # gate (I = 2048) and output (h). Per token 2 (2h + 128) + 2 (2h + P) + 2 (I + h) = 21296 elements,
    # plus the mup vector read once (P). bf16, n = 512 tokens.
    import dataclasses

    spec = spec_from_config(dict(FALCON_H1_05B), name="falcon-h1-0.5b")
    assert spec.mup_multipliers and spec.logits_scaling == 1.0 and spec.embedding_multiplier == 1.0
    plain = dataclasses.replace(spec, mup_multipliers=False)
    n, s = 512, 2
    per_token = 2 * (2 * 1024 + 128) + 2 * (2 * 1024 + 3352) + 2 * (2048 + 1024)
    assert per_token == 21296

    def ew(sp, mode):
        return float(cost(sp, n, layer=0, dtype="bf16", elementwise=mode).bytes["misc/elementwise"][0])
    assert ew(spec, "unfused") - ew(plain, "unfused") == s * (n * per_token + 3352)
    # vLLM also adds the residuals apart from its norms (``hidden_states + residual``, then RMSNorm): 5h
    # per block, not the fused 4h -- 2 blocks x h more per token
    assert ew(spec, "fused") - ew(plain, "fused") == s * (n * (per_token + 2 * 1024) + 3352)
    # lm_head_multiplier scales the logits: one pass (logits_scaling = 1 / it)
    tuned = spec_from_config(dict(FALCON_H1_05B, lm_head_multiplier=0.25, ssm_multipliers=[1, 2, 3, 4, 5]), name="t")
    assert tuned.logits_scaling == 4.0
    with pytest.raises(LcprofError, match="ssm_multipliers"):
        spec_from_config(dict(FALCON_H1_05B, ssm_multipliers=[1.0, 2.0]), name="t")
    with pytest.raises(LcprofError, match="key_multiplier"):
        spec_from_config(dict(FALCON_H1_05B, key_multiplier="1"), name="t")
