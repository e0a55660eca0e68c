"""Hand-derived checks that the mutation sample of lcprof/cost/ showed missing (reports/mutation/cost.md):
each test pins a count that one of the surviving mutants changed. Formulas in the comments."""

import dataclasses

import numpy as np
import pytest

from lcprof.cost import context_parallel as cp
from lcprof.cost import masks
from lcprof.cost.kinds import lightning, mamba1, mamba2, mixer_state_bytes, per_rank
from lcprof.cost.kinds.common import core_bytes
from lcprof.cost.model import cost, roofline, state_bytes, state_bytes_by_layer
from lcprof.cost.ops import _rope_bytes
from lcprof.cost.ring import overlap_min_tokens_per_device, ring_step_model
from lcprof.cost.rope import rope_table
from lcprof.errors import LcprofError
from lcprof.hardware import get_gpu
from lcprof.spec import LayerSpec, load_model, spec_from_config

from support.hf_configs import llama_spec, mla_config


def _op(ops, name):
    return next(op for op in ops if op.name == name)


# ----- linear-time mixers: the state's traffic and their norms ---------------------------------------

def test_mamba1_core_io_reads_and_writes_the_state_once():
    m = load_model("jamba-1.5-mini").mixer("mamba")  # d_inner 8192, d_state 16
    ops = mamba1.ops(m, np.array([64.0]))
    # x, dt, z read and y written (4 d_inner) plus B, C (2 N) per token, bf16; the state (d_inner x N) read + written
    core = 2 * 64 * (4 * 8192 + 2 * 16) + 2 * 2 * 8192 * 16
    assert float(_op(ops, "mixer/core_io").bytes[0]) == core == 4_722_688


def test_lightning_core_io_and_norm_bytes():
    m = load_model("minimax-m1").mixer("lightning")  # 64 heads x 128, w = 8192
    ops = lightning.ops(m, np.array([64.0]))  # the default dtype: bf16
    # q, k, v read and o written (4 w per token) + the 64 x 128 x 128 state read and written
    assert float(_op(ops, "mixer/core_io").bytes[0]) == 2 * 64 * 4 * 8192 + 2 * 2 * 64 * 128 * 128 == 8_388_608
    # SiLU (6 w: read, write over q, k, v), RMSNorm (2 w), sigmoid gate (2 w), gate product (3 w); norm weight w
    assert float(_op(ops, "mixer/norm").bytes[0]) == 2 * 64 * 13 * 8192 + 2 * 8192 == 13_647_872


def test_mamba2_gated_norm_bytes():
    m = load_model("nemotron-h-56b").mixer("mamba2")  # 256 heads x 64: d_inner 16384, with a norm
    ops = mamba2.ops(m, np.array([64.0]))
    assert float(_op(ops, "mixer/norm").bytes[0]) == 2 * 64 * 3 * 16384 + 2 * 16384 == 6_324_224


def test_state_dtype_keeps_the_conv_window_in_the_model_dtype():
    m = load_model("jamba-1.5-mini").mixer("mamba")
    # conv (d_conv - 1) x d_inner = 24,576 in bf16, the SSM state 8192 x 16 = 131,072 in fp32
    assert mixer_state_bytes(m, "bf16", state_dtype="fp32") == 24_576 * 2 + 131_072 * 4 == 573_440
    assert mixer_state_bytes(m, "fp32") == (24_576 + 131_072) * 4 == 622_592
    # context parallelism passes that state: the state dtype is honoured
    rec = cp.state_pass(m, 64, 2, state_dtype="fp32", peak_flops_per_s=1e15, link_bytes_per_s=1e11)
    assert rec["state_bytes_per_hop"] == 573_440


def test_mixer_state_under_tensor_parallelism():
    jamba = load_model("jamba-1.5-mini").mixer("mamba")
    # TP = 2 halves the inner channels: conv 3 x 4096, SSM 4096 x 16
    assert mamba1.state_elements(jamba, 2) == {"conv": 3 * 4096, "ssm": 4096 * 16}
    assert per_rank(jamba, 2).d_inner == 4096
    nem = load_model("nemotron-h-56b").mixer("mamba2")  # 256 heads x 64, d_state 256, 8 groups, conv 4
    # TP = 4 divides the 8 groups: 2 per rank; conv (16384 + 2 x 8 x 256) / 4 channels x 3, SSM 64 heads x 64 x 256
    assert per_rank(nem, 4).n_groups == 2
    assert mamba2.state_elements(nem, 4) == {"conv": (16384 + 4096) // 4 * 3, "ssm": 64 * 64 * 256}
    # TP = 16 does not: the groups are replicated up to 16, one per rank
    assert mamba2.state_elements(nem, 16) == {"conv": (16384 + 2 * 16 * 256) // 16 * 3, "ssm": 16 * 64 * 256}
    assert mixer_state_bytes(nem) == (256 * 64 * 256 + 3 * (16384 + 4096)) * 2 == 8_511_488  # default tp = 1


def test_model_state_bytes_follow_dtype_and_tp():
    spec = load_model("jamba-1.5-mini")  # 28 Mamba layers, 155,648 state elements each
    assert int(np.sum(state_bytes_by_layer(spec, dtype="fp32"))) == 28 * 155_648 * 4
    assert int(np.sum(state_bytes_by_layer(spec, tp=2))) == 28 * 155_648 // 2 * 2
    assert state_bytes(spec, dtype="fp32") == 28 * 155_648 * 4


def test_core_bytes():
    assert (core_bytes(2), core_bytes(4), core_bytes(8)) == (4.0, 4, 8)


# ----- attention: eager bytes, RoPE, output gate, indexer, Infini memory -------------------------------

def _tiny():
    return llama_spec()  # hidden 64, 4 heads, 4 KV heads of 16


def test_eager_scores_are_written_and_read_back():
    spec = _tiny()
    c = cost(spec, 8, layer=0, family="eager")
    # QK^T reads q (8 x 4 x 16 x 2 B) and K (8 keys x 4 x 16 x 2 B) and writes the 4 x 8 x 8 scores (2 B)
    assert float(c.bytes["attn/qk"][0]) == 1024 + 1024 + 4 * 64 * 2 == 2560


def test_eager_mask_pass_of_a_sliding_layer():
    spec = _tiny()
    lyr = LayerSpec(attn="sliding", window=16)
    # decode, 41 keys > W = 16: eager scores the whole row, P = 4 heads x 41 keys = 164; scale (2 s) + softmax
    # via fp32 (2 s + 16) per pair; the window needs the mask pass, 2 s P + 3 n keys: 164 x 24 + 656 + 123
    c = cost(spec, 1, prefix=40, layer=lyr, family="eager")
    assert float(c.bytes["attn/elementwise"][0]) == 164 * 24 + 2 * 2 * 164 + 3 * 41 == 4715
    # 11 keys <= W: the window masks nothing, no mask pass: 44 pairs x 24
    c = cost(spec, 1, prefix=10, layer=lyr, family="eager")
    assert float(c.bytes["attn/elementwise"][0]) == 4 * 11 * 24 == 1056


def test_rope_bytes_full_and_partial():
    # 4 heads x 16 dims, 8 tokens and positions, bf16: 10 passes over the rotated part; tables read twice
    assert float(_rope_bytes(4, 16, 16, 8, 8, 2)) == 2 * (8 * 10 * 64 + 2 * 8 * 16) == 10_752
    # rotating 8 of 16 dims adds the cat that reattaches the other half (2 x the whole width)
    assert float(_rope_bytes(4, 16, 8, 8, 8, 2)) == 2 * (8 * (10 * 32 + 2 * 64) + 2 * 8 * 8) == 7424


def test_output_gate_elementwise_bytes():
    spec = load_model("qwen3-next-80b-a3b")  # attention: 16 heads, v head dim 256, an output gate
    att = next(i for i, lyr in enumerate(spec.layers) if lyr.has_attention)
    plain = dataclasses.replace(spec, attn_output_gate=False)
    n = 32
    d = (float(cost(spec, n, layer=att).bytes["misc/elementwise"][0])
         - float(cost(plain, n, layer=att).bytes["misc/elementwise"][0]))
    assert d == 5 * 2 * n * 16 * 256  # sigmoid (read, write) + the product (read 2, write 1)
    d = (float(cost(spec, n, layer=att, elementwise="fused").bytes["misc/elementwise"][0])
         - float(cost(plain, n, layer=att, elementwise="fused").bytes["misc/elementwise"][0]))
    assert d == 3 * 2 * n * 16 * 256


def test_qk_norm_elementwise_bytes():
    # Qwen3-Next's attention: an unfused RMSNorm over each of 16 q heads and 2 k heads of 256, bf16.
    # Per element: fp32 copy up (read 2, write 4), square (read 4, write 4), the mean (read 4), the scale
    # (read 4, write 4), times the weight in fp32 (Qwen3NextRMSNorm's one-centred order: read 4, write 4),
    # copy down (read 4, write 2) = 40 B (Llama's order, the weight product in bf16 after the cast: 36); per row
    # of 256: the mean written, + eps and rsqrt (read, write), read by the scale (4 x 6 = 24 B); each
    # norm's weight read once (2 x 256).
    spec = load_model("qwen3-next-80b-a3b")
    att = next(i for i, lyr in enumerate(spec.layers) if lyr.has_attention)
    plain = dataclasses.replace(spec, qk_norm="none")
    n = 32
    d = (float(cost(spec, n, layer=att).bytes["misc/elementwise"][0])
         - float(cost(plain, n, layer=att).bytes["misc/elementwise"][0]))
    assert d == n * (16 + 2) * (256 * 40 + 24) + 2 * (2 * 256) == 5_913_088
    llama_order = dataclasses.replace(spec, norm_one_centred=False)
    d = (float(cost(llama_order, n, layer=att).bytes["misc/elementwise"][0])
         - float(cost(dataclasses.replace(llama_order, qk_norm="none"), n, layer=att).bytes["misc/elementwise"][0]))
    assert d == n * (16 + 2) * (256 * 36 + 24) + 2 * (2 * 256) == 5_323_264


def test_fused_mla_elementwise_bytes():
    spec = spec_from_config(mla_config(), name="tiny-mla")  # 64 wide, 4 heads, kv_lora 32, rope 8, MLP 128
    n = 8
    # per token: 2 blocks x (residual add + RMSNorm 4h); rotary in place on q (4 heads) and the shared k (1) of 8;
    # latent norm (2 kv_lora) and the latent + rope key into the cache (2 x 40); SiLU-and-mul 3 x 128
    per_tok = 2 * 4 * 64 + 2 * (4 + 1) * 8 + 2 * 32 + 2 * 40 + 3 * 128
    assert float(cost(spec, n, layer=0, elementwise="fused").bytes["misc/elementwise"][0]) == 2 * n * per_tok


def test_indexer_only_on_sparse_layers():
    spec = load_model("deepseek-v3.2")
    c = cost(spec, 64, layer=LayerSpec())  # a global layer on a model that has an indexer
    assert not any(k.startswith("attn/indexer") for k in c.flops)


def test_infini_memory_bytes_and_per_layer_dims():
    spec = load_model("llama3-8b")
    c = cost(spec, 64, layer=0, mask="infini:segment=32", batch=2)
    # M (128 x 128) and z (128) per KV head, read and written once per step per sequence: 2 s b kvh (dk dv + dk)
    assert float(c.bytes["attn/memory"][0]) == 2 * 2 * 2 * 8 * (128 * 128 + 128) == 1_056_768
    # a layer with its own dims (2 KV heads of 32) sizes the memory with them, not the model's
    lyr = LayerSpec(dims=(8, 2, 32, 32))
    c = cost(spec, 64, layer=lyr, mask="infini:segment=32")
    # retrieval for 8 query heads (2 dk dv + 2 dk per token), the update for 2 KV heads (2 dk dv)
    assert float(c.flops["attn/memory"][0]) == 2 * 64 * (8 * 32 * 32 + 8 * 32 + 2 * 32 * 32)


def test_roofline_mixer_total():
    spec = load_model("jamba-1.5-mini")
    mix = next(i for i, lyr in enumerate(spec.layers) if "mamba" in lyr.mixers)
    t = roofline(cost(spec, 4096, layer=mix), get_gpu("h100-sxm"))
    parts = sum(float(v[0]) for k, v in t.items() if k.startswith("mixer/") and k != "mixer/total")
    assert parts > 0 and float(t["mixer/total"][0]) == pytest.approx(parts, rel=1e-12)


# ----- masks, ring, RoPE table: validation and the fields a record carries -----------------------------

def test_mask_messages_name_what_is_wrong():
    with pytest.raises(LcprofError, match=r"^mask 'longformer:window=64,global=x': global tokens 'x' is not a whole"):
        masks.parse_mask("longformer:window=64,global=x")
    with pytest.raises(LcprofError, match="^BigBird global blocks must be a whole number >= 0, got -1$"):
        masks.BigBird(block=64, global_blocks=-1)
    with pytest.raises(LcprofError, match="random"):
        masks.BigBird(block=64, random=1.5)


def test_ring_accepts_dims_of_one_and_keeps_the_link_rate():
    model = ring_step_model(8, 2, 2, 1, 1, 2, 1000.0, 100.0, "striped", tile=2, v_head_dim=1)
    assert model.link_bytes_per_s == 100.0 and model.v_head_dim == 1
    with pytest.raises(LcprofError, match="pairs_fraction"):
        overlap_min_tokens_per_device(8, 8, 2, 1e15, 1e11, 0.0)


def test_rope_table_rows_carry_n():
    t = rope_table(load_model("phi3-128k"), 131072)
    assert set(t["n"]) == {131072}


def test_mlp_only_layer_has_one_block():
    spec = load_model("nemotron-h-56b")  # hidden 8192; MLP-only layers: relu^2 MLP of 32768, not gated
    lyr = next(lyr for lyr in spec.layers if not lyr.mixers)
    n = 4
    # one pre-norm block: unfused RMSNorm via fp32 (n (36 h + 24) + 2 h) and the residual add (3 s n h);
    # the squared ReLU reads and writes the 32768-wide hidden twice, relu then the square (4 s n w)
    norm = n * (8192 * 36 + 24) + 2 * 8192
    want = norm + 3 * 2 * n * 8192 + 4 * 2 * n * 32768
    assert float(cost(spec, n, layer=lyr).bytes["misc/elementwise"][0]) == want
    # fused: residual add + RMSNorm 4h and the activation 2w per token
    assert float(cost(spec, n, layer=lyr, elementwise="fused").bytes["misc/elementwise"][0]) == \
        2 * n * (4 * 8192 + 2 * 32768)


def test_absorbed_mla_decode_elementwise_bytes():
    from lcprof.cost.ops import _attention_elementwise_bytes

    spec = spec_from_config(mla_config(), name="tiny-mla")  # 4 heads, kv_lora 32, rope 8: cache_dim 40
    got = float(_attention_elementwise_bytes(spec, spec.layers[0], np.asarray(1.0), np.asarray(15.0), 1.0, 2,
                                             "absorbed"))
    # one new token after 15, bf16: the latent's unfused RMSNorm (32 x 36 + 24 + 2 x 32 = 1240); RoPE on the
    # 4 query heads' and the shared key's 8 rope dims (2 (10 x 32 + 16) + 2 (10 x 8 + 16) = 864); the latent +
    # rope key into the cache (2 s 40 = 160); the absorbed concatenations, queries 2 s H (32 + 8) and keys
    # 2 s 16 x 40 (640 + 2560); no copy of a one-token output
    assert got == 1240 + 864 + 160 + 640 + 2560 == 5464


def test_refusals_name_the_layer_and_the_known_backends():
    from lcprof.cost.ops import backend_family

    with pytest.raises(LcprofError, match="known: eager, flash-attn, "):
        backend_family("nope")
    with pytest.raises(LcprofError, match="a layer is sparse"):
        cost(_tiny(), 8, layer=LayerSpec(attn="sparse", top_k=4))


def test_useful_flops_of_the_chunked_mixers():
    m = load_model("minimax-m1").mixer("lightning")
    ops = lightning.ops(m, np.array([4096.0]))
    # 16 blocks of 256: useful Q K^T over the causal l(l+1)/2 pairs of each block, 2 H d per pair
    assert float(_op(ops, "mixer/qk").useful_flops[0]) == 2 * 64 * 128 * 16 * (256 * 257 // 2)
    from lcprof.cost.kinds import deltanet

    g = load_model("qwen3-next-80b-a3b").mixer("gated_deltanet")  # 32 value heads, dk = dv = 128
    ops = deltanet.ops(g, np.array([128.0]))
    # W S and (Q o e^g) S: two products of a token's dk with the dk x dv state per value head, all useful
    st = _op(ops, "mixer/state_read")
    assert float(st.useful_flops[0]) == float(st.flops[0]) == 2 * 2 * 128 * 32 * 128 * 128


def test_crossover_at_two_tokens():
    from lcprof.cost.model import attention_crossover_n

    # hidden 1, 2 heads and 1 KV head of 8, no MLP: per token the projections cost 2 x 1 x 16 x (2 + 1) = 96
    # FLOPs; attention over n(n+1)/2 pairs costs 2 x 2 heads x 16 per pair: n = 1 -> 64 < 96, n = 2 -> 192 = 192
    spec = spec_from_config({"model_type": "llama", "hidden_size": 1, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
                             "intermediate_size": 1, "vocab_size": 10, "max_position_embeddings": 64},
                            name="tiny-crossover")
    assert attention_crossover_n(spec, layer=LayerSpec(mlp=False)) == 2


def test_final_residual_step_by_hand():
    from lcprof.cost.model import activation_steps

    # llama3-8b layer 0, bf16, 64 tokens: before the final add x and x + attn live on (2 s h each), then the
    # MLP output and the sum (2 s h more): 64 x 4 x 2 x 4096 bytes; and the RoPE cos and sin tables, live for
    # the whole forward: 2 x 64 positions x 128 dims x 2 bytes
    steps = activation_steps(load_model("llama3-8b"), 64, layer=0, family="tiled")
    assert float(steps["residual"][0]) == 64 * (2 * 2 * 4096 + 2 * 2 * 4096) + 2 * 64 * 128 * 2 == 2_129_920


def test_a_layer_with_its_own_attention_dims_costs_as_if_they_were_the_models():
    """A layer's activation steps depend only on that layer's attention shape: MiMo-V2-Flash's sliding
    layer given MHA dims of its own (64 query and 64 K/V heads, model-level 4 K/V heads) has, step for
    step, the activation bytes of the same layer in a model whose every layer is that MHA shape. (An
    MHA layer's eager attention expands no K/V per query head; reading the model's 4 K/V heads for it
    would add that expansion.)"""
    import dataclasses

    from lcprof.cost.model import activation_steps
    from lcprof.spec import load_model
    from lcprof.spec.model import AttnDims

    base = load_model("mimo-v2-flash")
    mha = AttnDims(64, 64, 192, 128)
    idx = next(i for i, lyr in enumerate(base.layers) if lyr.attn == "sliding")
    own = dataclasses.replace(base, layers=tuple(dataclasses.replace(lyr, dims=mha) if i == idx else lyr
                                                 for i, lyr in enumerate(base.layers)))
    model_wide = dataclasses.replace(base, n_kv_heads=64, layers=tuple(
        dataclasses.replace(lyr, dims=None) if lyr.has_attention else lyr for lyr in base.layers))
    assert own.attn_dims(idx) == model_wide.attn_dims(idx) == mha and own.n_kv_heads == 4
    for family in ("eager", "tiled"):
        a = activation_steps(own, [1, 96, 300], dtype="bf16", family=family, layer=idx, batch=2)
        b = activation_steps(model_wide, [1, 96, 300], dtype="bf16", family=family, layer=idx, batch=2)
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{family} {k}")
