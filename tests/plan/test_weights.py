"""Weights as the engines load them: per tensor class, per quantization format, per GPU -- by hand."""

import pytest

from lcprof.cost.weights import (Sharding, WEIGHT_FORMATS, layer_matrices, model_matrices, op_matrices, rope_cache_positions,
                                 stage_layers, total_params, weight_bytes_per_gpu, weight_format)
from lcprof.errors import LcprofError
from lcprof.spec import list_presets, load_model, param_counts

from support.plan_hand import BF16, DSV3, GIB, cdiv, fp8_block_bytes, llama_params


@pytest.mark.parametrize("name", list_presets())
def test_tensor_list_counts_every_parameter(name):
    spec = load_model(name)
    assert total_params(spec) == param_counts(spec)["total_params"]


def test_matrix_bytes_per_format_by_hand():
    d_in, d_out = 7168, 2048  # one DeepSeek-V3 expert's gate
    assert WEIGHT_FORMATS["bf16"].matrix_bytes(d_in, d_out, "experts") == 2 * d_in * d_out
    assert WEIGHT_FORMATS["fp32"].matrix_bytes(d_in, d_out, "experts") == 4 * d_in * d_out
    # fp8: 1 byte per weight + an fp32 scale per 128x128 block: 16 x 56 blocks
    assert WEIGHT_FORMATS["fp8"].matrix_bytes(d_in, d_out, "experts") == d_in * d_out + 4 * 16 * 56
    # a shape that does not divide 128 rounds the block grid up: 576 -> 5 row blocks
    assert WEIGHT_FORMATS["fp8"].matrix_bytes(7168, 576, "attention") == 7168 * 576 + 4 * 5 * 56
    # int8 W8A8: an fp32 scale per output channel
    assert WEIGHT_FORMATS["int8"].matrix_bytes(d_in, d_out, "mlp") == d_in * d_out + 4 * d_out
    # int4 W4A16: half a byte per weight + a bf16 scale per group of 128 input channels per output channel
    assert WEIGHT_FORMATS["int4"].matrix_bytes(d_in, d_out, "mlp") == d_in * d_out // 2 + 2 * d_out * 56
    # nvfp4: half a byte + an e4m3 scale per 16 + two fp32 scalars
    assert WEIGHT_FORMATS["nvfp4"].matrix_bytes(d_in, d_out, "mlp") == d_in * d_out // 2 + d_out * 448 + 8
    # mxfp4: half a byte + an e8m0 scale per 32, experts only
    assert WEIGHT_FORMATS["mxfp4"].matrix_bytes(d_in, d_out, "experts") == d_in * d_out // 2 + d_out * 224
    assert WEIGHT_FORMATS["mxfp4"].matrix_bytes(d_in, d_out, "attention") == 2 * d_in * d_out
    # embeddings, LM head, router, norms stay bf16 in every format
    for fmt in ("fp8", "int8", "int4", "nvfp4", "mxfp4"):
        for cls in ("embedding", "lm_head", "router", "norm"):
            assert WEIGHT_FORMATS[fmt].matrix_bytes(100, 300, cls) == 2 * 100 * 300
    assert WEIGHT_FORMATS["fp8"].matrix_bytes(0, 5, "mlp") == 0
    with pytest.raises(LcprofError, match="unknown weight format 'fp6'"):
        weight_format("fp6")
    assert weight_format("BFloat16").name == "bf16"


def test_llama31_8b_as_vllm_loads_it():
    """vLLM logs "Model loading took 14.9888 GiB" for Llama-3.1-8B-Instruct
    (https://github.com/vllm-project/vllm/issues/10517): the bf16 parameters plus the RoPE cos/sin
    cache of 131072 positions x 128 rotary dims in bf16."""
    spec = load_model("llama3.1-8b")
    params = llama_params(4096, 14336, 128256, 32, 32, 8, 128)
    rope = 131072 * 128 * BF16
    w = weight_bytes_per_gpu(spec, "bf16", Sharding(vocab_padding=64), engine_buffers=True)
    assert w.total_bytes == BF16 * params + rope == 16_094_076_928
    assert f"{w.total_bytes / GIB:.4f}" == "14.9888"
    assert w.by_class["buffers"] == rope
    assert w.by_class["embedding"] == w.by_class["lm_head"] == 128256 * 4096 * BF16  # 128256 = 64 x 2004
    # lcprof's own accounting (engine none) has no engine buffers
    assert weight_bytes_per_gpu(spec, "bf16").total_bytes == BF16 * params


def test_llama3_8b_tp2_as_vllm_loads_it():
    """https://github.com/vllm-project/vllm/pull/10511 (comment of 2024-12-13): Meta-Llama-3-8B takes
    14.96 GiB at TP 1 and 7.48 GiB per GPU at TP 2."""
    spec = load_model("llama3-8b")
    params = llama_params(4096, 14336, 128256, 32, 32, 8, 128)
    norms = 32 * 2 * 4096 + 4096
    rope = 8192 * 128 * BF16
    one = weight_bytes_per_gpu(spec, "bf16", Sharding(vocab_padding=64), engine_buffers=True).total_bytes
    two = weight_bytes_per_gpu(spec, "bf16", Sharding(tp=2, vocab_padding=64), engine_buffers=True).total_bytes
    assert one == BF16 * params + rope
    assert two == BF16 * ((params - norms) // 2 + norms) + rope  # 8 KV heads split 4/4: all but norms halve
    assert (round(one / GIB, 2), round(two / GIB, 2)) == (14.96, 7.48)


def _dsv3_attention(fmt_bytes, tp):
    d = DSV3
    hr = d["heads"] // tp
    return (fmt_bytes(d["h"], d["q_lora"]) + fmt_bytes(d["q_lora"], hr * (d["nope"] + d["rope"]))  # q_a (replicated), q_b
            + fmt_bytes(d["h"], d["kv_lora"] + d["rope"])  # kv_a (replicated)
            + fmt_bytes(d["kv_lora"], hr * (d["nope"] + d["v"]))  # kv_b
            + fmt_bytes(hr * d["v"], d["h"])  # o
            + BF16 * (d["q_lora"] + d["kv_lora"]))  # the two latent norms


def test_deepseek_v3_fp8_tp8_by_hand():
    """fp8 block-scaled linear layers, bf16 embeddings/router/norms, vLLM's sharding at TP 8 (MLA's
    q_a and kv_a replicated, experts' width split 8 ways), RoPE cache and bf16 W_UK/W_UV copies."""
    d = DSV3
    spec = load_model("deepseek-v3")
    moe_layers = d["layers"] - d["dense_layers"]
    attn = d["layers"] * _dsv3_attention(fp8_block_bytes, 8)
    dense = d["dense_layers"] * (fp8_block_bytes(d["h"], 2 * d["inter"] // 8) + fp8_block_bytes(d["inter"] // 8, d["h"]))
    w = d["expert_inter"] // 8
    expert = fp8_block_bytes(d["h"], 2 * w) + fp8_block_bytes(w, d["h"])
    experts = moe_layers * d["experts"] * expert
    shared = moe_layers * expert  # one shared expert of the same width
    router = moe_layers * BF16 * d["h"] * d["experts"]
    norms = BF16 * (d["layers"] * 2 * d["h"] + d["h"])
    vocab = BF16 * d["h"] * d["vocab"] // 8  # 129280 = 64 x 2020
    rope = d["yarn_positions"] * d["rope"] * BF16
    uk_uv = d["layers"] * BF16 * d["kv_lora"] * (d["heads"] // 8) * (d["nope"] + d["v"])
    got = weight_bytes_per_gpu(spec, "fp8", Sharding(tp=8, expert_shards=8, vocab_padding=64),
                               engine_buffers=True, mla_dequant_copies=True)
    by = got.by_class
    assert by["attention"] + by["norm"] == attn + norms
    assert by["mlp"] == dense and by["experts"] == experts and by["shared_experts"] == shared
    assert by["router"] == router and by["embedding"] == by["lm_head"] == vocab
    assert by["buffers"] == rope + uk_uv
    assert got.total_bytes == attn + dense + experts + shared + router + norms + 2 * vocab + rope + uk_uv


def test_deepseek_v3_fp8_dp8_ep8_by_hand():
    """Attention data parallel 8 with expert parallel 8: attention, dense MLP, shared expert and
    vocabulary whole on every GPU; 32 of the 256 experts each, at full width."""
    d = DSV3
    spec = load_model("deepseek-v3")
    moe_layers = d["layers"] - d["dense_layers"]
    expert = fp8_block_bytes(d["h"], 2 * d["expert_inter"]) + fp8_block_bytes(d["expert_inter"], d["h"])
    expected = (d["layers"] * _dsv3_attention(fp8_block_bytes, 1)
                + d["dense_layers"] * (fp8_block_bytes(d["h"], 2 * d["inter"]) + fp8_block_bytes(d["inter"], d["h"]))
                + moe_layers * (d["experts"] // 8) * expert + moe_layers * expert
                + moe_layers * BF16 * d["h"] * d["experts"] + BF16 * (d["layers"] * 2 * d["h"] + d["h"])
                + 2 * BF16 * d["h"] * d["vocab"] + d["yarn_positions"] * d["rope"] * BF16
                + d["layers"] * BF16 * d["kv_lora"] * d["heads"] * (d["nope"] + d["v"]))
    got = weight_bytes_per_gpu(spec, "fp8", Sharding(tp=1, expert_shards=8, expert_parallel=True, vocab_padding=64),
                               engine_buffers=True, mla_dequant_copies=True)
    assert got.total_bytes == expected


def test_mxfp4_quantizes_experts_only_and_unquantized_mla_has_no_copies():
    spec = load_model("deepseek-v2-lite")
    bf = weight_bytes_per_gpu(spec, "bf16").by_class
    mx = weight_bytes_per_gpu(spec, "mxfp4").by_class
    assert mx["attention"] == bf["attention"] and mx["mlp"] == bf["mlp"] and mx["shared_experts"] == bf["shared_experts"]
    # 26 MoE layers x 64 experts x (gate_up 2048 -> 2 x 1408 and down 1408 -> 2048), 4.25 bits per weight
    e = 26 * 64 * ((2048 * 2816 // 2 + 2816 * 64) + (1408 * 2048 // 2 + 2048 * 44))
    assert mx["experts"] == e
    assert (weight_bytes_per_gpu(spec, "bf16", mla_dequant_copies=True).total_bytes
            == weight_bytes_per_gpu(spec, "bf16").total_bytes)


def test_pipeline_stages_hold_their_layers_embedding_first_head_last():
    spec = load_model("llama3.1-8b")
    first = weight_bytes_per_gpu(spec, "bf16", Sharding(layers=tuple(range(16)), last_stage=False, pipeline=True))
    last = weight_bytes_per_gpu(spec, "bf16", Sharding(layers=tuple(range(16, 32)), first_stage=False, pipeline=True))
    layer = BF16 * (4096 * 6144 + 4096 * 4096 + 3 * 4096 * 14336 + 2 * 4096)  # qkv (32 + 2 x 8 heads), o, MLP, norms
    assert first.total_bytes == 16 * layer + BF16 * 128256 * 4096
    assert last.total_bytes == 16 * layer + BF16 * (128256 * 4096 + 4096)
    tied = load_model("gemma2-9b")  # tie_word_embeddings: the last stage gets its own LM head copy
    st = weight_bytes_per_gpu(tied, "bf16", Sharding(layers=(41,), first_stage=False, pipeline=True))
    assert st.by_class["lm_head"] == BF16 * 256000 * 3584 and st.by_class["embedding"] == 0
    assert weight_bytes_per_gpu(tied, "bf16").by_class["lm_head"] == 0


@pytest.mark.parametrize("layers,pp,parts", [(32, 4, [8, 8, 8, 8]), (22, 4, [5, 6, 6, 5]), (5, 3, [2, 2, 1]),
                                             (61, 4, [15, 15, 16, 15]), (61, 2, [31, 30])])
def test_stage_layers_as_vllm_partitions(layers, pp, parts):
    """vllm/distributed/utils.py get_pp_indices: the remainder goes from the second-to-last stage back."""
    stages = stage_layers(layers, pp)
    assert [len(s) for s in stages] == parts
    assert [i for s in stages for i in s] == list(range(layers))
    with pytest.raises(LcprofError, match="pipeline parallel size"):
        stage_layers(layers, layers + 1)


def test_sharding_refusals():
    spec = load_model("deepseek-v2-lite")
    with pytest.raises(LcprofError, match="expert parallel over 5 GPUs"):
        model_matrices(spec, Sharding(expert_shards=5, expert_parallel=True))
    with pytest.raises(LcprofError, match="expert width 1408"):
        model_matrices(spec, Sharding(expert_shards=3))
    with pytest.raises(LcprofError, match="shard counts must be positive"):
        Sharding(tp=0)


def test_rope_cache_positions():
    assert rope_cache_positions(load_model("deepseek-v3")) == 4096 * 40  # YaRN: original x factor
    assert rope_cache_positions(load_model("llama3.1-8b")) == 131072  # llama3 scaling: the positions
    assert rope_cache_positions(load_model("phi3-mini-128k")) == 4096 + 131072  # LongRoPE: short + long caches


def test_op_matrices_match_the_cost_models_weight_traffic():
    """The weight bytes the cost model charges each op (the intercept of bytes vs tokens at two large
    token counts, where every expert is touched) equal the matrices ``op_matrices`` lists."""
    import numpy as np

    from lcprof.cost.ops import layer_ops

    for name in ("llama3-8b", "deepseek-v2-lite", "qwen2.5-7b", "qwen3-next-80b-a3b", "nemotron-h-56b",
                 "jamba-1.5-mini", "deepseek-v3.2", "minimax-m1", "falcon-mamba-7b"):
        spec = load_model(name)
        for layer in set(spec.layers):
            n = np.array([4096.0, 8192.0])
            ops = {o.name: o.bytes for o in layer_ops(spec, layer, n, 0, dtype="bf16", family="tiled")}
            for op, ms in op_matrices(spec, layer).items():
                b = ops[op]
                intercept = b[0] - (b[1] - b[0]) / (n[1] - n[0]) * n[0]
                params = sum(m.count * m.d_in * m.d_out for m in ms)
                if op == "mlp/experts":
                    params *= spec.moe.n_experts
                assert intercept == pytest.approx(BF16 * params, rel=1e-12), (name, op)


@pytest.mark.parametrize("name,tp", [("nemotron-h-56b", 8), ("qwen3-next-80b-a3b", 2), ("minimax-m1", 8),
                                     ("jamba-1.5-mini", 4), ("kimi-linear-48b", 4)])
def test_mixer_tensors_split_over_tp_sum_to_the_whole(name, tp):
    """A hybrid's linear-time mixer tensors, split tp ways, add up over the tp ranks to the model's
    mixer parameters (spec.param_counts): nothing lost or counted twice by the split."""
    spec = load_model(name)
    mats = [m for m in model_matrices(spec, Sharding(tp=tp, expert_shards=tp))
            if m.name.split(".")[0] in ("mamba", "mamba2", "gated_deltanet", "kda", "lightning")]
    # per-head-width norms are whole on every rank (GDN's over head_v_dim 128, Jamba's dt/B/C norms, KDA's
    # o_norm), and so are KDA's low-rank legs into head_dim (f_a_proj, g_a_proj: vLLM's ReplicatedLinear)
    whole = {"gated_deltanet.norm", "mamba.dt_layernorm", "mamba.b_layernorm", "mamba.c_layernorm", "kda.o_norm",
             "kda.f_a_proj", "kda.g_a_proj"}
    split = sum(m.count * m.d_in * m.d_out for m in mats if m.name not in whole)
    repl = sum(m.d_in * m.d_out for m in mats if m.name in whole)
    assert split * tp + repl == param_counts(spec)["mixer_params"]
    if name == "qwen3-next-80b-a3b":
        assert repl == 36 * 128  # 36 Gated DeltaNet layers, one head_v_dim norm each
    if name == "kimi-linear-48b":
        assert repl == 20 * (2 * 2304 * 128 + 128)  # 20 KDA layers: f_a, g_a (hidden x head_dim), o_norm


def test_nemotron_h_mamba2_in_proj_by_hand():
    """Nemotron-H-56B (config.json): hidden 8192, mamba_num_heads 256 x mamba_head_dim 64 = d_inner
    16384, n_groups 8, ssm_state_size 256: in_proj -> z (16384) + x,B,C (16384 + 2*8*256) + dt (256)."""
    spec = load_model("nemotron-h-56b")
    i = next(k for k, x in enumerate(spec.layers) if "mamba2" in x.mixers)
    mats = {m.name: m for m in layer_matrices(spec, i, Sharding())}
    assert (mats["mamba2.in_proj"].d_in, mats["mamba2.in_proj"].d_out) == (8192, 16384 + 16384 + 4096 + 256)
    assert (mats["mamba2.out_proj"].d_in, mats["mamba2.out_proj"].d_out) == (16384, 8192)
    assert "qkv" not in mats and "gate_up" not in mats  # a Mamba-2 layer has no attention and no MLP


def test_layernorm_and_biases_pythia_160m_published_count():
    """GPT-NeoX with LayerNorm (weight + bias), qkv/dense/MLP biases, untied embeddings: Pythia-160M's
    published 162,322,944 parameters, counted by hand from its config (h 768, 12 layers, 4h MLP,
    vocab 50304):
      embed_in + embed_out   2 * 50304 * 768                     = 77,266,944
      per layer: 2 LayerNorms 4 * 768 = 3,072; qkv 768*2304 + 2304 = 1,771,776; dense 768*768 + 768
        = 590,592; MLP 768*3072 + 3072 = 2,362,368 and 3072*768 + 768 = 2,360,064 -> 7,087,872, x12
                                                             = 85,054,464
      final LayerNorm 2 * 768                                = 1,536"""
    from lcprof.spec import spec_from_config

    cfg = dict(model_type="gpt_neox", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
               intermediate_size=3072, vocab_size=50304, max_position_embeddings=2048, rotary_pct=0.25,
               rotary_emb_base=10000, hidden_act="gelu", layer_norm_eps=1e-5, tie_word_embeddings=False,
               use_parallel_residual=True, attention_bias=True)
    spec = spec_from_config(cfg, name="pythia-160m")
    assert spec.norm_bias and spec.mlp_bias
    assert total_params(spec) == 77_266_944 + 12 * 7_087_872 + 1_536 == 162_322_944
    mats = {m.name: m for m in layer_matrices(spec, 0, Sharding())}
    assert (mats["gate_up_bias"].d_out, mats["down_bias"].d_out) == (3072, 768)
    assert mats["norm0"].d_out == mats["norm1"].d_out == 2 * 768


def test_yarn_cache_is_original_positions_times_factor():
    """YaRN's cos/sin cache spans original x factor positions, not max_position_embeddings: a Qwen3
    config with max_position_embeddings 40960 and YaRN factor 4 over 32768 -> 131,072 positions."""
    from lcprof.spec import spec_from_config

    cfg = dict(model_type="qwen3", hidden_size=1024, num_hidden_layers=2, num_attention_heads=16,
               num_key_value_heads=8, head_dim=128, intermediate_size=3072, vocab_size=151936,
               max_position_embeddings=40960, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True,
               rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768})
    assert rope_cache_positions(spec_from_config(cfg, name="q")) == 32768 * 4 == 131_072


def test_a_one_column_matrix_has_bytes():
    """Qwen3-Next's shared-expert gate is (h x 1): 2048 bf16 weights = 4,096 bytes, in every format
    (a router-class vector is never quantized)."""
    for fmt in ("bf16", "fp8", "int4"):
        assert WEIGHT_FORMATS[fmt].matrix_bytes(2048, 1, "router") == 2 * 2048
    gate = [m for m in layer_matrices(load_model("qwen3-next-80b-a3b"), 0, Sharding()) if m.name == "shared_expert_gate"]
    assert [(g.d_in, g.d_out) for g in gate] == [(2048, 1)]


def test_sparse_layers_read_the_indexers_weights():
    """DeepSeek-V3.2's sparse layers read the lightning indexer's three projections (published config:
    index_n_heads 64, index_head_dim 128, q_lora_rank 1536, hidden 7168): wq_b 1536 -> 64 * 128,
    wk 7168 -> 128, weights_proj 7168 -> 64."""
    spec = load_model("deepseek-v3.2")
    sparse = next(lyr for lyr in spec.layers if lyr.attn == "sparse")
    ops = op_matrices(spec, sparse)
    got = {k: [(m.d_in, m.d_out) for m in v] for k, v in ops.items() if k.startswith("attn/indexer_")}
    assert got == {"attn/indexer_wq_b": [(1536, 8192)], "attn/indexer_wk": [(7168, 128)],
                   "attn/indexer_weights_proj": [(7168, 64)]}
